#!/bin/bash
# capped fit peak RSS for 200, 900 and 5,000 training images (MVTec bottle, metal nut, pill, screw train/good,
# copied and repeated by make_sets.py: about 430 MB under /tmp/s31/rss; the 2026-12-03 run used hard links)
. /work/main/.venv/bin/activate; cd /tmp/s31/rss
for n in 200 900 5000 200; do
  rm -rf model_$n
  /usr/bin/time -v anomaly-inspect fit --train n$n --out model_$n --config cap.yaml --quiet > fit_$n.txt 2>&1
  echo "$n images: $(grep -E 'Maximum resident|Elapsed' fit_$n.txt | tr -s ' ' | tr '\n' ' ')"
done
