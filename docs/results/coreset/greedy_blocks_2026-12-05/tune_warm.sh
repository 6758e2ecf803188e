#!/bin/bash
# tune on bottle with warm stage-map and export caches (run it once first to warm /tmp/tp_cache and
# /tmp/tp_export), before ($BEFORE: the tree with HEAD's coreset.py) and after ($AFTER: the same tree
# with the new coreset.py), in the order before, after, after, before (file names prefixed with $TAG); JSONs and times to $OUT
. /work/main/.venv/bin/activate
out=${OUT:-$(cd $(dirname $0) && pwd)}; BEFORE=${BEFORE:-/tmp/gb_before}; AFTER=${AFTER:-/tmp/gb_after}; cd /tmp
run() { # $1 label, $2 source root
  uptime
  ANOMALY_INSPECT_CACHE=/tmp/tp_export /usr/bin/time -f "$1: %e s wall, %U s user, %S s sys, %M KB" env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tp_cache --quiet --output-json $out/tune_warm_$1.json 2>&1 | grep -E "wall|chose"
}
run ${TAG}before1 $BEFORE/inspect
run ${TAG}after1 $AFTER/inspect
run ${TAG}after2 $AFTER/inspect
run ${TAG}before2 $BEFORE/inspect
