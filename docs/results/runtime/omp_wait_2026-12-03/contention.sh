#!/bin/bash
# bottle evaluate beside one busy process (two rounds) and beside two (one round): OpenMP's
# default wait policy, GOMP_SPINCOUNT=10000 and OMP_WAIT_POLICY=PASSIVE, interleaved
. /work/main/.venv/bin/activate; cd /tmp
ev() { local label=$1 cat=$2; shift 2
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$@" python -m anomaly_inspect.cli evaluate --root /work/shared/data/mvtec_ad --category $cat --quiet --output-json /tmp/omp_$label.json > /dev/null 2>&1
  python -c "
import json; d = json.load(open('/tmp/omp_$label.json')); s = d['stage_seconds']
print('%-28s %5.1f img/s  image AUROC %.6f  ' % ('$cat $label', d['images_per_second'], d['image_auroc']) + ' '.join('%s %.2f' % kv for kv in s.items()))"
}
for n in 1 1 2; do
  pids=(); for i in $(seq $n); do python -c "while True: pass" & pids+=($!); done; sleep 1
  echo "beside $n busy process(es):"
  ev default bottle; ev spin10k bottle GOMP_SPINCOUNT=10000; ev passive bottle OMP_WAIT_POLICY=PASSIVE
  kill ${pids[@]}; sleep 1
done
