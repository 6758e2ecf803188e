#!/bin/bash
# tune from empty caches against a plain fit (bottle), before (5f19b30, worktree at $BEFORE) and
# after (the working tree), one after the other on a quiet machine
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
BEFORE=${BEFORE:-/tmp/wt_before}
py="import sys; from anomaly_inspect.cli import main; sys.exit(main())"
for side in before after; do
  src=$([ $side = before ] && echo $BEFORE/inspect || echo /work/main/inspect)
  rm -rf /tmp/tb_cache /tmp/tb_export /tmp/tb_fit
  ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "$side fit: %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/tb_fit --quiet 2>&1 | tail -1
  rm -rf /tmp/tb_export
  ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "$side tune: %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tb_cache --quiet --output-json $out/tune_cold_$side.json 2>&1 | grep -E "^tune|wall"
  rm -rf /tmp/tb_fit
  ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "$side fit (export cached): %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/tb_fit --quiet 2>&1 | tail -1
done
rm -rf /tmp/tb_cache /tmp/tb_export /tmp/tb_fit
