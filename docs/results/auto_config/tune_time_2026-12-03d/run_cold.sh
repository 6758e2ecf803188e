#!/bin/bash
# tune from empty caches against a plain fit (bottle), the working tree, quiet machine: fit with an
# empty export cache, tune with empty tune and export caches, fit again with the export cached
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
py="import sys; from anomaly_inspect.cli import main; sys.exit(main())"
src=/work/main/inspect
rm -rf /tmp/tb_cache /tmp/tb_export /tmp/tb_fit
ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "fit (empty caches): %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/tb_fit --quiet 2>&1 | tail -1
rm -rf /tmp/tb_export
ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "tune (empty caches): %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/tb_cache --quiet --output-json $out/tune_cold.json 2>&1 | grep -E "^tune|wall|chose"
rm -rf /tmp/tb_fit
ANOMALY_INSPECT_CACHE=/tmp/tb_export /usr/bin/time -f "fit (export cached): %e s wall, %M KB" env PYTHONPATH=$src python -c "$py" fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/tb_fit --quiet 2>&1 | tail -1
rm -rf /tmp/tb_cache /tmp/tb_export /tmp/tb_fit
