#!/bin/bash
# issue 14 measurements: before (059a5a3) vs after (main), interleaved
PY=/work/main/.venv/bin/python
ev() { # name dir root category extra...
  local n=$1 d=$2 root=$3 cat=$4; shift 4
  (cd $d && PYTHONPATH=$d/inspect $PY -m anomaly_inspect.cli evaluate --root $root --category $cat --output-json /tmp/m14/$n.json --quiet "$@" > /tmp/m14/$n.txt 2>&1)
}
M=/work/shared/data/mvtec_ad
cd /work/main && PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli bench-backbone --rounds 5 --output-json /tmp/m14/bench1.json > /tmp/m14/bench1.txt 2>&1
for r in 1 2; do
  for cat in bottle screw; do
    ev before_${cat}_$r /work/wt-before $M $cat
    ev after_${cat}_$r /work/main $M $cat
  done
done
ev after_magnetic_tile /work/main /work/shared/data/magnetic_tile magnetic_tile
ev before_magnetic_tile /work/wt-before /work/shared/data/magnetic_tile magnetic_tile
cd /work/main && PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli bench-backbone --rounds 5 --output-json /tmp/m14/bench2.json > /tmp/m14/bench2.txt 2>&1
for cat in metal_nut pill; do
  for rt in onnxruntime torch; do ev ${rt}_${cat} /work/main $M $cat --runtime $rt; done
done
echo done > /tmp/m14/DONE
