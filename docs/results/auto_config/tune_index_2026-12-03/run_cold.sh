#!/bin/bash
# tune from empty caches against a plain fit, one after the other (bottle)
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
rm -rf /tmp/tune_cold_cache /tmp/fit_cold
ANOMALY_INSPECT_CACHE=/tmp/tune_cold_export /usr/bin/time -f "fit: %e s wall, %M KB" anomaly-inspect fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/fit_cold --quiet 2>&1 | tail -1
rm -rf /tmp/tune_cold_export
ANOMALY_INSPECT_CACHE=/tmp/tune_cold_export /usr/bin/time -f "tune: %e s wall, %M KB" anomaly-inspect tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tune_cold_cache --quiet --output-json $out/tune_cold.json 2>&1 | grep -E "^tune"
rm -rf /tmp/fit_cold
/usr/bin/time -f "fit (export cached): %e s wall, %M KB" anomaly-inspect fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/fit_cold --quiet 2>&1 | tail -1
