#!/bin/bash
# After the change: the command line's own GOMP_SPINCOUNT (10000, set in cli.py) against
# libgomp's default spin count given explicitly (300000), bottle beside one busy process
. /work/main/.venv/bin/activate; cd /tmp
ev() { local label=$1; shift
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$@" anomaly-inspect evaluate --root /work/shared/data/mvtec_ad --category bottle --quiet --output-json /tmp/omp_$label.json > /dev/null 2>&1
  python -c "
import json; d = json.load(open('/tmp/omp_$label.json')); s = d['stage_seconds']
print('%-34s %5.1f img/s  image AUROC %.6f  ' % ('bottle $label', d['images_per_second'], d['image_auroc']) + ' '.join('%s %.2f' % kv for kv in s.items()))"
}
python -c "while True: pass" & pid=$!; sleep 1
for r in 1 2; do ev libgomp_default GOMP_SPINCOUNT=300000; ev cli_default; done
kill $pid
