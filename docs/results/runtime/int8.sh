#!/bin/bash
while [ ! -f /tmp/m14/DONE ]; do sleep 10; done
cd /work/main
PY=/work/main/.venv/bin/python
for c in "mvtec_ad screw" "mvtec_ad metal_nut" "mvtec_ad pill" "magnetic_tile magnetic_tile"; do
  set -- $c
  PYTHONPATH=/work/main/inspect $PY -m anomaly_inspect.cli evaluate --root /work/shared/data/$1 --category $2 --precision int8 --output-json /tmp/m14/int8_$2.json --quiet > /tmp/m14/int8_$2.txt 2>&1
done
echo done > /tmp/m14/INT8DONE
