#!/bin/bash
# tune on bottle against a plain fit, today's code, one job at a time on a quiet machine:
# a fit from an empty user cache, tune from empty caches (cold), a fit with its export cached
# (twice), tune again with warm stage-map and export caches (warm). uptime before each.
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
rm -rf /tmp/t45_cache /tmp/t45_export /tmp/t45_fit
train=/work/shared/data/mvtec_ad/bottle/train/good
run() { # $1 label, then the command's arguments
  label=$1; shift; echo "$(uptime)"
  ANOMALY_INSPECT_CACHE=/tmp/t45_export /usr/bin/time -f "$label: %e s wall, %M KB" anomaly-inspect "$@" --quiet 2>&1 | grep -E "wall|chose|^tune"
}
run "fit (empty caches)" fit --train $train --out /tmp/t45_fit; rm -rf /tmp/t45_fit /tmp/t45_export
run "tune (empty caches)" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/t45_cache --output-json $out/tune_cold.json
for i in 1 2; do run "fit (export cached) $i" fit --train $train --out /tmp/t45_fit; rm -rf /tmp/t45_fit; done
run "tune (warm caches)" tune --root /work/shared/data/mvtec_ad --category bottle --tune-cache /tmp/t45_cache --output-json $out/tune_warm.json
rm -rf /tmp/t45_cache /tmp/t45_export /tmp/t45_fit
