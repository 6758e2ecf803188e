#!/bin/bash
# tune on bottle, warm stage-map cache (validation only differs), before (HEAD 5cddf1e) and after (working tree)
OUT=/tmp/tcmp; PY=/work/main/.venv/bin/python; DATA=/work/shared/data/mvtec_ad
for v in before after before after; do
  tree=/work/main; [ $v = before ] && tree=/work/before
  ANOMALY_INSPECT_CACHE=/tmp/t0/cache PYTHONPATH=$tree/inspect /usr/bin/time -f "$v wall %e s maxrss %M KB" \
    $PY -m anomaly_inspect.cli tune --root $DATA --category bottle --tune-cache /tmp/t0/tune --output-json $OUT/tune-$v-$RANDOM.json --quiet >> $OUT/log.txt 2>> $OUT/time.txt
  tail -1 $OUT/time.txt
done
