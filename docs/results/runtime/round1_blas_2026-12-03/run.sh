#!/bin/bash
# Round 1 of the coreset: one chunk per thread (before, the worktree at $BEFORE) against
# chunks one after another, each greedy step on all BLAS threads (after, the working tree).
# evaluate on bottle and screw, interleaved, two rounds; magnetic tile once each; JSONs here.
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); BEFORE=${BEFORE:-/tmp/wt_head}; cd /tmp
py="import sys; from anomaly_inspect.cli import main; sys.exit(main())"
ev() { # $1 label, $2 source root, $3 category, $4 data root (default MVTec AD)
  env PYTHONPATH=$2 python -c "$py" evaluate --root ${4:-/work/shared/data/mvtec_ad} --category $3 --quiet --output-json $out/$3_$1.json > /dev/null
  python -c "
import json; d = json.load(open('$out/$3_$1.json')); s = d['stage_seconds']
print('$3 $1: %.1f img/s, fit %.2f s (stage fit %.2f s), image AUROC %.6f, pixel %.6f, bank %d' % (d['images_per_second'], d['fit_seconds'], s['fit'], d['image_auroc'], d['pixel_auroc'] or 0, d['memory_bank_items']))"
}
for round in 1 2; do
  for cat in bottle screw; do
    ev before_$round $BEFORE/inspect $cat
    ev after_$round /work/main/inspect $cat
  done
done
ev before $BEFORE/inspect magnetic_tile /work/shared/data/magnetic_tile
ev after /work/main/inspect magnetic_tile /work/shared/data/magnetic_tile
