#!/bin/bash
# evaluate on screw (no masks: image scores only after this change) before / after, interleaved;
# before = 5c5e511 worktree at $BEFORE, after = the working tree
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
BEFORE=${BEFORE:-/tmp/wt_head}
run() { # label source-root category root
  /usr/bin/time -f "$1 $3: %e s wall, %M KB" env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
    evaluate --root $4 --category $3 --quiet --output-json $out/$1_$3.json 2>&1 | grep -E "wall|image AUROC  |end-to-end|stage"
}
for i in 1 2; do
  run before$i $BEFORE/inspect screw /work/shared/data/mvtec_ad
  run after$i /work/main/inspect screw /work/shared/data/mvtec_ad
done
