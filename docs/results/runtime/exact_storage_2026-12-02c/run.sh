#!/bin/bash
# evaluate on magnetic tile (default config), before (/work/bench = 442dd3f) and after (/work/asc = fb88cc6) exact
# search reads the HNSW storage; peak RSS and AUROC, one job at a time, export cache warm.
OUT=$(cd "$(dirname "$0")" && pwd); PY=/work/main/.venv/bin/python
for v in bench asc bench asc; do
  PYTHONPATH=/work/$v/inspect /usr/bin/time -f "$v wall %e s maxrss %M KB" $PY -m anomaly_inspect.cli evaluate \
    --root /work/shared/data/magnetic_tile --category magnetic_tile --output-json "$OUT/$v.json" --quiet > /dev/null 2>> "$OUT/time.txt"
  tail -1 "$OUT/time.txt"
done
