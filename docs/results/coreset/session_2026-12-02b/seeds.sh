#!/bin/bash
cd /work/bench
export PYTHONPATH=/work/bench/inspect
for s in 1 2; do
  /work/main/.venv/bin/python -m anomaly_inspect.cli bench-coreset --root ../shared/data/mvtec_ad --category screw --config configs/longtail_first_embedding.yaml --ratios 0.1 --variants two_round,exact --seed $s --quiet --output-json /tmp/s20/screw152_10_s$s.json > /tmp/s20/screw152_10_s$s.log 2>&1
done
