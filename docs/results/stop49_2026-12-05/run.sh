#!/bin/bash
# End of stop 49, quiet machine, one job at a time: (1) what an explanation costs now that an
# approximate index's patches after the first are found by exact search (docs/bench_explain.py);
# (2) the distributed-fit rows of docs/scaling.md with Ray's start-up reported apart
# (bench-coreset's engine_start); (3) evaluate bottle and screw: image AUROC unchanged.
# From anywhere: bash docs/results/stop49_2026-12-05/run.sh
set -e
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /work/main
D=/work/shared/data
uptime
rm -rf /tmp/s49_explain_model
python docs/bench_explain.py --root $D/mvtec_ad --category bottle --model /tmp/s49_explain_model --rounds 3 --output-json $out/bench_explain.json | tail -20
uptime
anomaly-inspect bench-coreset --root $D/mvtec_ad --category bottle --ratios 0.1 --variants two_round --engine ray --workers 2 --output-json $out/scaling_bottle.json --quiet
anomaly-inspect bench-coreset --root $D/mvtec_ad --category screw --engine ray --workers 2 --engine-only --radius-sample 100000 --output-json $out/scaling_screw.json --quiet
anomaly-inspect bench-coreset --root $D/magnetic_tile --category magnetic_tile --engine ray --workers 2 --engine-only --radius-sample 200000 --output-json $out/scaling_magnetic_tile.json --quiet
uptime
for cat in bottle screw; do
  anomaly-inspect evaluate --root $D/mvtec_ad --category $cat --quiet --output-json $out/${cat}.json > /dev/null
  python -c "import json; d=json.load(open('$out/${cat}.json')); print('$cat:', d['image_auroc'], d['pixel_auroc'], d.get('pixel_aupro'), round(d['images_per_second'],1), 'img/s', round(d['peak_rss_mb']), 'MB', d['stage_seconds'])"
done
uptime
rm -rf /tmp/s49_explain_model
