#!/bin/bash
# Round 2 on 2 vs 1 BLAS threads, quiet and beside one busy process (log: round2.log)
. /work/main/.venv/bin/activate; here=$(cd $(dirname $0) && pwd)
echo quiet; python $here/r2bench.py
python -c "while True: pass" & pid=$!; sleep 1
echo "beside one busy process"; python $here/r2bench.py; kill $pid
