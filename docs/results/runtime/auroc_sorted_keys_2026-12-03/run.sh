#!/bin/bash
# evaluate magnetic tile before (worktree $BEFORE, HEAD before the change) and after, interleaved,
# wall time and pixel AUROC; usage: BEFORE=<checkout>/inspect run.sh OUT
. /work/main/.venv/bin/activate
out=$1; mkdir -p $out
for v in before after; do
  src=/work/main/inspect; [ $v = before ] && src=$BEFORE
  (cd /tmp && PYTHONPATH=$src /usr/bin/time -f "$v wall %e s maxrss %M KB" python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
     evaluate --root /work/shared/data/magnetic_tile --category magnetic_tile --quiet --output-json $out/mag_$v.json > $out/mag_$v.txt 2>> $out/times.txt)
  tail -1 $out/times.txt
  python3 -c "import json; d=json.load(open('$out/mag_$v.json')); print('$v', d['image_auroc'], d['pixel_auroc'], d['images_per_second'], d['stage_seconds'])"
done
