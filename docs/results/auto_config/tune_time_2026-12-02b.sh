#!/bin/bash
# tune (fresh cache) vs plain fit on bottle, one after the other, quiet machine
cd /work/bench
export PYTHONPATH=/work/bench/inspect
PY=/work/main/.venv/bin/python
M=/work/shared/data/mvtec_ad
fit() { rm -rf /tmp/tuneb/model_$1; /usr/bin/time -f "fit_$1 %e s, %M KB" $PY -m anomaly_inspect.cli fit --train $M/bottle/train/good --out /tmp/tuneb/model_$1 --quiet > /dev/null 2>> /tmp/tuneb/times.txt; }
fit 1
rm -rf /tmp/tuneb/cache
/usr/bin/time -f "tune %e s, %M KB" $PY -m anomaly_inspect.cli tune --root $M --category bottle --tune-cache /tmp/tuneb/cache --output-json /tmp/tuneb/bottle_tune.json --quiet > /tmp/tuneb/tune.txt 2>> /tmp/tuneb/times.txt
fit 2
echo done >> /tmp/tuneb/times.txt
