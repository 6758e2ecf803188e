#!/bin/bash
# evaluate --auto --ensemble 3 end to end on the five labelled categories (issue 16, "left to do"
# item 2: the normal-calibrated ensemble had been judged only inside tune --judge). Settings as
# the judged runs (docs/auto_config.md): defaults, magnetic tile with --max-tune-images 150.
# One job at a time; the tune cache starts empty.
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
cache=/tmp/ens46_cache; rm -rf $cache
for cat in pill metal_nut screw bottle magnetic_tile; do
  root=/work/shared/data/mvtec_ad; extra=""
  [ $cat = magnetic_tile ] && root=/work/shared/data/magnetic_tile && extra="--max-tune-images 150"
  echo "$(date -u +%T) $(uptime | sed 's/.*load/load/') $cat"
  /usr/bin/time -f "$cat: %e s wall, %M KB" anomaly-inspect evaluate --root $root --category $cat --auto --ensemble 3 $extra \
    --tune-cache $cache --output-json $out/$cat.json --quiet 2>&1 | grep -E "wall|AUROC|auroc|chose|ensemble" | cut -c1-300
done
rm -rf $cache
