#!/bin/bash
# tune on bottle with warm stage-map and export caches, before (the worktree at $BEFORE: the
# commit before round 1's chunks ran one after another on all BLAS threads) and after (the
# working tree), back to back; JSONs to $OUT
. /work/main/.venv/bin/activate
out=${OUT:-$(cd $(dirname $0) && pwd)}; BEFORE=${BEFORE:-/tmp/wt_head}; cd /tmp
run() { # $1 label, $2 source root
  ANOMALY_INSPECT_CACHE=/tmp/tp_export /usr/bin/time -f "$1: %e s wall, %M KB" env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tp_cache --quiet --output-json $out/tune_warm_$1.json 2>&1 | grep -E "wall|chose"
}
run before $BEFORE/inspect
run after /work/main/inspect
