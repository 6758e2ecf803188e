#!/bin/bash
PY=/work/main/.venv/bin/python; M=/work/shared/data/mvtec_ad
cd /work/main
for s in 0 1 2 3 4; do
  $PY -m anomaly_inspect.cli bench-coreset --root $M --category screw --config longtail_first_embedding --ratios 0.1 \
    --variants two_round,cells,exact --seed $s --output-json /tmp/seeds/screw152_s$s.json --quiet >> /tmp/seeds/log.txt 2>&1
done
