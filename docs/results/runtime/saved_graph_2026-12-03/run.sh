#!/bin/bash
# Saved models with their HNSW links (after) against models whose graph is built at load
# (before: worktree $BEFORE). Each version fits its own bottle and magnetic tile models, then
# screens one image with each, twice, interleaved; then loads each magnetic tile model twice in
# one process and compares the patch maps of 8 test images. usage: BEFORE=<checkout>/inspect run.sh OUT
. /work/main/.venv/bin/activate
out=$1; mkdir -p $out; M=/work/shared/data
cli() { src=$1; label=$2; shift 2
  (cd /tmp && PYTHONPATH=$src /usr/bin/time -f "$label wall %e s maxrss %M KB" \
     python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" "$@" > $out/$label.txt 2>> $out/times.txt)
  tail -1 $out/times.txt; }
for v in before after; do
  src=/work/main/inspect; [ $v = before ] && src=$BEFORE
  rm -rf /tmp/sg_$v
  cli $src fit_bottle_$v fit --train $M/mvtec_ad/bottle/train/good --out /tmp/sg_$v/bottle --quiet
  cli $src fit_mag_$v fit --train $M/magnetic_tile/magnetic_tile/train/good --out /tmp/sg_$v/mag --quiet
  du -sh /tmp/sg_$v/bottle /tmp/sg_$v/mag | tee -a $out/sizes.txt
done
b1=$(ls $M/mvtec_ad/bottle/test/broken_large/*.png | head -1)
m1=$(ls $M/magnetic_tile/magnetic_tile/test/*/*.* | grep -v _mask | head -1)
for rep in 1 2; do
  for v in before after; do
    src=/work/main/inspect; [ $v = before ] && src=$BEFORE
    cli $src screen1_bottle_${v}_$rep screen /tmp/sg_$v/bottle $b1 --out /tmp/sg_$v/o1_$rep --quiet
    cli $src screen1_mag_${v}_$rep screen /tmp/sg_$v/mag $m1 --out /tmp/sg_$v/o2_$rep --quiet
  done
done
for v in before after; do
  src=/work/main/inspect; [ $v = before ] && src=$BEFORE
  (cd /tmp && PYTHONPATH=$src python - $v <<'PY' 2>/dev/null | tee -a $out/maps.txt
import sys, glob, time, numpy as np
from anomaly_inspect import load_model
paths = sorted(p for p in glob.glob('/work/shared/data/magnetic_tile/magnetic_tile/test/*/*.*') if '_mask' not in p)[::70][:8]
maps, times = [], []
for _ in range(2):
    t = time.perf_counter(); m = load_model(f'/tmp/sg_{sys.argv[1]}/mag'); times.append(time.perf_counter() - t)
    maps.append(np.stack([r.patch_scores for r in m.score(paths)]))
print(sys.argv[1], 'load_model s', [round(x, 2) for x in times], 'maps equal across loads:',
      bool(np.array_equal(maps[0], maps[1])), 'max abs diff', float(np.abs(maps[0] - maps[1]).max()))
PY
  )
done
