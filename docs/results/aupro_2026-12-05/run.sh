#!/bin/bash
# evaluate with the defaults on every category with masks, after AUPRO and the image FPR at
# 95 % TPR were added (2026-12-05); each JSON also repeats the image and pixel AUROC of the
# README's table. Run from the repository root with the venv active.
set -e
out=$(cd "$(dirname "$0")" && pwd)
for c in bottle metal_nut pill; do
  anomaly-inspect evaluate --root ../shared/data/mvtec_ad --category $c --output-json $out/$c.json --quiet
done
anomaly-inspect evaluate --root ../shared/data/magnetic_tile --category magnetic_tile --output-json $out/magnetic_tile.json --quiet
