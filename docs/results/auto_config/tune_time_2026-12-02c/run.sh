#!/bin/bash
# tune (fresh tune cache AND fresh ONNX export cache) and plain fit (fresh, then warm export
# cache) on bottle, before (442dd3f) and after (03be74a) the fast exporter, one job at a time.
# Usage: run.sh OUTDIR   (worktrees /work/before and /work/bench hold the two commits)
set -u
OUT=$1; mkdir -p "$OUT"; PY=/work/main/.venv/bin/python
DATA=/work/shared/data/mvtec_ad
run() {  # name worktree cache args...
  local name=$1 tree=$2 cache=$3; shift 3
  echo "== $name $(date +%T)" >> "$OUT/log.txt"
  ANOMALY_INSPECT_CACHE=$cache PYTHONPATH=$tree/inspect /usr/bin/time -f "$name wall %e s maxrss %M KB" \
    $PY -m anomaly_inspect.cli "$@" --quiet >> "$OUT/log.txt" 2>> "$OUT/time.txt"
  tail -1 "$OUT/time.txt"
}
rm -rf /tmp/tt && mkdir -p /tmp/tt
for v in before bench; do
  run fit-fresh-$v /work/$v /tmp/tt/fitcache-$v fit --train $DATA/bottle/train/good --out /tmp/tt/m1-$v
  run fit-warm-$v /work/$v /tmp/tt/fitcache-$v fit --train $DATA/bottle/train/good --out /tmp/tt/m2-$v
done
for v in before bench; do
  run tune-$v /work/$v /tmp/tt/tunecache-$v tune --root $DATA --category bottle --tune-cache /tmp/tt/tune-$v --output-json $OUT/tune-$v.json
done
for v in bench before; do
  run fit-warm2-$v /work/$v /tmp/tt/fitcache-$v fit --train $DATA/bottle/train/good --out /tmp/tt/m3-$v
done
