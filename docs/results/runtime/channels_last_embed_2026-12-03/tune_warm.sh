#!/bin/bash
# warm-cache tune on bottle (stage-map and export caches from an earlier run), before (93035a4,
# worktree at /tmp/wt_head) and after (the working tree), back to back
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
run() { # $1 label, $2 source root
  ANOMALY_INSPECT_CACHE=/tmp/tp_export /usr/bin/time -f "$1: %e s wall, %M KB" env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tp_cache --quiet --output-json $out/tune_warm_$1.json 2>&1 | grep -E "wall|chose"
}
run before /tmp/wt_head/inspect
run after /work/main/inspect
