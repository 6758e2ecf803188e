#!/bin/bash
# End of stop 48: the default detector's figures and speed with this stop's code (the HNSW
# graph check's scale, num_neighbors capped by the bank, the reduced-decode rule for crops), quiet
# machine, one job at a time: bench-backbone, then evaluate bottle and screw twice each.
# Usage: bash run.sh [OUT_DIR] (default: this folder; a later stop passes its own).
. /work/main/.venv/bin/activate
out=$(mkdir -p ${1:-$(dirname $0)} && cd ${1:-$(dirname $0)} && pwd); cd /tmp
uptime
anomaly-inspect bench-backbone --rounds 3 --quiet --output-json $out/bench_backbone.json | tail -8
for i in 1 2; do for cat in bottle screw; do
  anomaly-inspect evaluate --root /work/shared/data/mvtec_ad --category $cat --quiet --output-json $out/${cat}_$i.json > /dev/null
  python -c "import json,sys; d=json.load(open('$out/${cat}_$i.json')); print('$cat run $i:', d['image_auroc'], d['pixel_auroc'], d.get('pixel_aupro'), round(d['images_per_second'],1), 'img/s', round(d['peak_rss_mb']), 'MB', d['stage_seconds'], d.get('search_graph'))"
done; done
uptime
