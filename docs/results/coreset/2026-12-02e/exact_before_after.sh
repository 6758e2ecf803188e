#!/bin/bash
# exact greedy and two-round at 1 % / 10 %, screw 152-d, after (working tree) then before (5cddf1e)
PY=/work/main/.venv/bin/python; M=/work/shared/data/mvtec_ad
for v in after before; do
  tree=/work/main; [ $v = before ] && tree=/work/before
  PYTHONPATH=$tree/inspect /usr/bin/time -f "$v wall %e s" $PY -m anomaly_inspect.cli bench-coreset --root $M --category screw \
    --config longtail_first_embedding --ratios 0.01,0.1 --variants two_round,exact --seed 0 --output-json /tmp/bc/screw152-$v.json --quiet >> /tmp/bc/log.txt 2>&1
done
