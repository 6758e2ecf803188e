#!/bin/bash
# issue 14 timing, side by side: before (059a5a3, /work/wt-before) vs after (main), interleaved
PY=/work/main/.venv/bin/python
M=/work/shared/data/mvtec_ad
ev() { local n=$1 d=$2 cat=$3; shift 3
  (cd $d && PYTHONPATH=$d/inspect $PY -m anomaly_inspect.cli evaluate --root $M --category $cat --output-json /tmp/t14/$n.json --quiet "$@" > /tmp/t14/$n.txt 2>&1); }
cd /work/main && PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli bench-backbone --rounds 5 --output-json /tmp/t14/bench.json > /tmp/t14/bench.txt 2>&1
for r in 1 2; do
  for cat in bottle screw; do
    ev before_${cat}_$r /work/wt-before $cat
    ev after_${cat}_$r /work/main $cat
  done
done
ev after_int8_bottle /work/main bottle --precision int8
ev after_int8_screw /work/main screw --precision int8
# screen vs evaluate's test img/s (bottle), peak RSS of screen
cd /work/main
PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli fit --train $M/bottle/train/good --out /tmp/t14/model_bottle --overwrite --quiet > /tmp/t14/fit.txt 2>&1
for r in 1 2; do
  rm -rf /tmp/t14/screen_$r
  /usr/bin/time -v env PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli screen /tmp/t14/model_bottle "$M/bottle/test" --out /tmp/t14/screen_$r --output-json /tmp/t14/screen_$r.json --quiet > /tmp/t14/screen_$r.txt 2>&1
done
echo done > /tmp/t14/DONE
