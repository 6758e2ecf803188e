#!/bin/bash
# evaluate on bottle and screw with OpenMP's default wait policy (threads spin after each
# parallel region: faiss, torch), GOMP_SPINCOUNT=10000 (spin briefly) and OMP_WAIT_POLICY=PASSIVE
# (sleep at once); interleaved, two rounds; then bottle beside one busy process. JSONs to /tmp.
. /work/main/.venv/bin/activate; cd /tmp
ev() { # $1 label, $2 category, then env assignments
  local label=$1 cat=$2; shift 2
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$@" python -m anomaly_inspect.cli evaluate --root /work/shared/data/mvtec_ad --category $cat --quiet --output-json /tmp/omp_$label.json > /dev/null 2>&1
  python -c "
import json; d = json.load(open('/tmp/omp_$label.json')); s = d['stage_seconds']
print('%-28s %5.1f img/s  image AUROC %.6f  ' % ('$cat $label', d['images_per_second'], d['image_auroc']) + ' '.join('%s %.2f' % kv for kv in s.items()))"
}
for round in 1 2; do
  for cat in bottle screw; do
    ev default $cat
    ev spin10k $cat GOMP_SPINCOUNT=10000
    ev passive $cat OMP_WAIT_POLICY=PASSIVE
  done
done
python -c "while True: pass" & pid=$!; sleep 1
echo "beside one busy process:"
ev default bottle; ev spin10k bottle GOMP_SPINCOUNT=10000; ev passive bottle OMP_WAIT_POLICY=PASSIVE
kill $pid
