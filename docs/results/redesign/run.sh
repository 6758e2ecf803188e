#!/bin/bash
# usage: run.sh WORKTREE OUTDIR  -- behaviour-unchanged checks (same commands, same seeds)
W=$1; O=$2; mkdir -p $O; cd $W
export PYTHONPATH=$W/inspect
AI="nice -n 5 /work/main/.venv/bin/python -m anomaly_inspect.cli"
D=/work/shared/data
for c in bottle screw; do
  $AI evaluate --root $D/mvtec_ad --category $c --output-json $O/$c.json --quiet > $O/$c.txt 2>&1
done
$AI evaluate --root $D/magnetic_tile --category magnetic_tile --output-json $O/magnetic_tile.json --quiet > $O/magnetic_tile.txt 2>&1
$AI fit --train $D/mvtec_ad/bottle/train/good --out $O/model_bottle --target-fpr 0.05 --quiet > $O/fit.txt 2>&1
$AI screen $O/model_bottle $D/mvtec_ad/bottle/test --out $O/screen_bottle --quiet > $O/screen.txt 2>&1

$AI ood-benchmark --config configs/ood/isic_all.yaml --cache-dir $O/oodcache --output-json $O/isic_all.json --quiet > $O/isic.txt 2>&1
echo done > $O/DONE
