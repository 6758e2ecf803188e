#!/bin/bash
# Wall time of short CLI runs before (eb4b2ab) and after the lazy backbone (d66450b), interleaved,
# export caches warm for both (one untimed run of each first). usage: BEFORE=<checkout>/inspect run.sh OUT
. /work/main/.venv/bin/activate
out=$1; mkdir -p $out; M=/work/shared/data/mvtec_ad
cli() {  # cli SRC LABEL ARGS...: one timed run, wall seconds and max RSS appended to times.txt
  src=$1; label=$2; shift 2
  (cd /tmp && PYTHONPATH=$src /usr/bin/time -f "$label wall %e s maxrss %M KB" \
     python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" "$@" > $out/$label.txt 2>> $out/times.txt)
  tail -1 $out/times.txt
}
one=$(ls $M/bottle/test/broken_large/*.png | head -1)
for v in before after; do  # warm-up: exports and (after) the card
  src=/work/main/inspect; [ $v = before ] && src=$BEFORE
  rm -rf /tmp/st_$v; cli $src warm_$v fit --train $M/bottle/train/good --out /tmp/st_$v/model --quiet
done
for rep in 1 2; do
  for v in before after; do
    src=/work/main/inspect; [ $v = before ] && src=$BEFORE
    cli $src help_${v}_$rep --help
    rm -rf /tmp/st_$v; cli $src fit_${v}_$rep fit --train $M/bottle/train/good --out /tmp/st_$v/model --quiet
    cli $src screen1_${v}_$rep screen /tmp/st_$v/model $one --out /tmp/st_$v/one --quiet
    cli $src screen_${v}_$rep screen /tmp/st_$v/model $M/bottle/test --out /tmp/st_$v/all --quiet --output-json $out/screen_${v}_$rep.json
    cli $src evaluate_${v}_$rep evaluate --root $M --category bottle --quiet --output-json $out/evaluate_${v}_$rep.json
  done
done
python3 - $out <<'PY'
import json, sys, glob, os
out = sys.argv[1]
for f in sorted(glob.glob(f"{out}/*.json")):
    d = json.load(open(f))
    keep = {k: d[k] for k in ("image_auroc", "pixel_auroc", "images_per_second", "test_images_per_second", "seconds", "stage_seconds") if k in d}
    print(os.path.basename(f), keep)
PY
