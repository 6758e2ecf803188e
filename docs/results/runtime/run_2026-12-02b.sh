#!/bin/bash
# issue 14/20 timing, side by side: before (54cbfb9, /work/before) vs after (/work/bench at main), interleaved
PY=/work/main/.venv/bin/python
M=/work/shared/data/mvtec_ad
ev() { local n=$1 d=$2 cat=$3; shift 3
  (cd $d && PYTHONPATH=$d/inspect $PY -m anomaly_inspect.cli evaluate --root $M --category $cat --output-json /tmp/t14/$n.json --quiet "$@" > /tmp/t14/$n.txt 2>&1); }
cd /work/bench && PYTHONPATH=/work/bench/inspect $PY -m anomaly_inspect.cli bench-backbone --rounds 5 --output-json /tmp/t14/bench.json > /tmp/t14/bench.txt 2>&1
for r in 1 2; do
  for cat in bottle screw; do
    ev before_${cat}_$r /work/before $cat
    ev after_${cat}_$r /work/bench $cat
  done
done
echo done > /tmp/t14/DONE
