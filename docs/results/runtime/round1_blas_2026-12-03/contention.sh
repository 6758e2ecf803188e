#!/bin/bash
# Round 1 alone (334k random clustered rows, 232-d, 10 %; best of 2), before ($BEFORE: one chunk
# per thread, each greedy on one BLAS thread) and after (the working tree at e334eb9: one chunk
# at a time on all BLAS threads), on a quiet machine, then beside one and two busy processes.
. /work/main/.venv/bin/activate
here=$(cd $(dirname $0) && pwd); BEFORE=${BEFORE:-/tmp/wt_head}; AFTER=${AFTER:-/work/main}
both() { echo "$1"; python $here/r1bench.py $BEFORE/inspect; python $here/r1bench.py $AFTER/inspect; }
both "quiet"
for n in 1 2; do
  pids=(); for i in $(seq $n); do python -c "while True: pass" & pids+=($!); done; sleep 1
  both "beside $n busy process(es)"
  kill ${pids[@]}
done
