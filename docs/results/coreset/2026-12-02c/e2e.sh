#!/bin/bash
# issue 20 default change (cells round 2 at 10 %), end to end side by side: before (fb640fe, /work/before) vs after (28980b6, /work/bench), interleaved
PY=/work/main/.venv/bin/python
M=/work/shared/data/mvtec_ad
ev() { local n=$1 d=$2 root=$3 cat=$4; shift 4
  (cd $d && PYTHONPATH=$d/inspect /usr/bin/time -v $PY -m anomaly_inspect.cli evaluate --root $root --category $cat --output-json /tmp/t20/$n.json --quiet "$@" > /tmp/t20/$n.txt 2>&1); }
for r in 1 2; do
  for cat in bottle screw; do
    ev before_${cat}_$r /work/before $M $cat
    ev after_${cat}_$r /work/bench $M $cat
  done
done
for cat in metal_nut pill; do
  ev before_${cat}_1 /work/before $M $cat
  ev after_${cat}_1 /work/bench $M $cat
done
ev before_magnetic_tile_1 /work/before /work/shared/data/magnetic_tile magnetic_tile
ev after_magnetic_tile_1 /work/bench /work/shared/data/magnetic_tile magnetic_tile
echo done > /tmp/t20/DONE
