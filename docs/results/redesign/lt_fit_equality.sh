#!/bin/bash
# usage: lt_fit_equality.sh TREE OUTDIR -- a small evaluate-lt (the e2e test's setting: step split,
# 128 px, rotflip views) and fit + screen on a 24-image bottle subset, for before / after checks
set -e
T=$1; O=$(realpath -m $2); D=/tmp/redesign/lt_mini; B=/tmp/redesign/bottle_sub
PY="nice -n 15 /work/main/.venv/bin/python"
W=$(cd "$(dirname "$0")/../../.." && pwd)  # this checkout (for the tests' layout helpers)
mkdir -p $O
if [ ! -d $D ]; then
  PYTHONPATH=$W/tests:$W/inspect $PY -c "
from pathlib import Path; from test_longtail import mini_layout; from layout_writer import link_subset
mini_layout(Path('/work/shared/data'), Path('$D'))
s = Path('/work/shared/data/mvtec_ad/bottle')
link_subset(s / 'train/good', Path('$B/train'), 24)
for g in ('good', 'broken_large'): link_subset(s / 'test' / g, Path('$B/test') / g, 8)"
fi
cd $O && export PYTHONPATH=$T/inspect
$PY -m anomaly_inspect.cli evaluate-lt --root $D --categories bottle,screw,magnetic_tile --tail step --k 4 \
  --noise 0.1 --seed 0 --image-size 128 --tail-views rotflip --manifest-dir $O/man --output-json $O/lt.json --quiet
$PY -m anomaly_inspect.cli fit --train $B/train --out $O/model --image-size 128 --target-fpr 0.1 --quiet
$PY -m anomaly_inspect.cli screen $O/model $B/test --out $O/screen --overlays none --no-report --quiet || true
