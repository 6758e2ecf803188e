#!/bin/bash
# warm-cache tune on bottle (stage-map and export caches from an earlier run), before (the
# worktree at $BEFORE: 5f19b30 for this folder's JSONs) and after (the working tree: 5c5e511
# here), back to back; the JSONs go to $OUT (this folder by default)
. /work/main/.venv/bin/activate
out=${OUT:-$(cd $(dirname $0) && pwd)}; BEFORE=${BEFORE:-/tmp/wt_head}; cd /tmp
run() { # $1 label, $2 source root
  ANOMALY_INSPECT_CACHE=/tmp/tp_export /usr/bin/time -f "$1: %e s wall, %M KB" env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tp_cache --quiet --output-json $out/tune_warm_$1.json 2>&1 | grep -E "wall|chose"
}
run before $BEFORE/inspect
run after /work/main/inspect
