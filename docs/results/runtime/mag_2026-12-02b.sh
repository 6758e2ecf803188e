#!/bin/bash
PY=/work/main/.venv/bin/python
for v in before bench; do
  (cd /work/$v && PYTHONPATH=/work/$v/inspect /usr/bin/time -v $PY -m anomaly_inspect.cli evaluate --root /work/shared/data/magnetic_tile --category magnetic_tile --quiet --output-json /tmp/t14/mag_$v.json > /tmp/t14/mag_$v.txt 2>&1)
done
echo done > /tmp/t14/MAGDONE
