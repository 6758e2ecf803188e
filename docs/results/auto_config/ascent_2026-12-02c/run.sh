#!/bin/bash
# evaluate --auto --grid ascent on every labelled category, one at a time (decided before any run
# of it; docs/auto_config.md "The ascent grid"). Waits for PID $1 (the magnetic tile judge) first.
set -u
OUT=$(cd "$(dirname "$0")" && pwd); PY=/work/main/.venv/bin/python
while kill -0 "$1" 2>/dev/null; do sleep 10; done
M=/work/shared/data/mvtec_ad
ev() {  # name args...
  local name=$1; shift
  echo "== $name $(date +%T)" >> "$OUT/log.txt"
  PYTHONPATH=/work/asc/inspect /usr/bin/time -f "$name wall %e s maxrss %M KB" $PY -m anomaly_inspect.cli \
    evaluate --auto --grid ascent --tune-cache /tmp/asc "$@" --output-json "$OUT/$name.json" --quiet \
    >> "$OUT/log.txt" 2>> "$OUT/err.txt"
  grep "wall" "$OUT/err.txt" | tail -1
}
ev pill --root $M --category pill
ev magnetic_tile --root /work/shared/data/magnetic_tile --category magnetic_tile --max-tune-images 150
ev metal_nut --root $M --category metal_nut
ev screw --root $M --category screw
ev bottle --root $M --category bottle
