#!/bin/bash
# Near-duplicates across the magnetic-tile split (2026-12-05): each tile was photographed at
# several exposures (exp1..exp6), and the split (every 5th MT_Free file by name -> test/good,
# ../shared/data/SOURCES.md) scatters one tile's shots over train and test.
# mt_dup.py: thumbnail correlation of every test/good image to its nearest train/good image;
# mt_eval.py: the default PatchCore's test scores (writes mt_scores.npz here);
# mt_bias.py: the image AUROC against the test normals with and without a training twin.
here=$(cd "$(dirname "$0")" && pwd); cd "$here/../../.." && . .venv/bin/activate
work=$(mktemp -d); cd "$work"
python "$here/mt_dup.py"; python "$here/mt_eval.py"; python "$here/mt_bias.py"
