#!/bin/bash
# evaluate on bottle and screw, the end of stop 44 (75da05a, worktree at $BEFORE) and this stop's
# code (the working tree) interleaved, two rounds; then bench-backbone. JSONs to this folder.
. /work/main/.venv/bin/activate
out=${OUT:-$(cd $(dirname $0) && pwd)}; BEFORE=${BEFORE:-/tmp/wt45_before}; cd /tmp
run() { # $1 label, $2 source root, $3 category, $4 round
  env PYTHONPATH=$2 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
    evaluate --root /work/shared/data/mvtec_ad --category $3 --quiet --output-json $out/$3_$1_$4.json > /dev/null
  python -c "import json; d=json.load(open('$out/$3_$1_$4.json')); print('$1 $3 round $4:', d['image_auroc'], d.get('pixel_auroc'), d.get('pixel_aupro'), d['images_per_second'], 'img/s', d['peak_rss_mb'], 'MB', d['stage_seconds'])"
}
echo "$(uptime)"
for r in 1 2; do for c in bottle screw; do run before $BEFORE/inspect $c $r; run after /work/main/inspect $c $r; done; done
echo "$(uptime)"
anomaly-inspect bench-backbone --rounds 3 --quiet --output-json $out/bench_backbone.json | tail -8
