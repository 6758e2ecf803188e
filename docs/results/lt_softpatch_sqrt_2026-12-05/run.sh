#!/bin/bash
# SoftPatch with soft_weight: true (the sqrt(LOF) form of 2026-12-04) on the default long-tailed
# protocol's six runs, 10 % coreset: the README's soft_weight figures were measured with the
# earlier d x LOF form. One job at a time, from /work/main (the committed manifests in datasets/).
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /work/main
for s in 0 1 2; do
  for tail in "step --k 4" "pareto"; do
    name=$(echo $tail | tr -d ' -' | sed 's/stepk4/step_k4/')_seed$s
    /usr/bin/time -v anomaly-inspect evaluate-lt --root ../shared/data/mvtec_ad --root ../shared/data/magnetic_tile \
      --categories bottle,screw,magnetic_tile --tail $tail --noise 0.1 --seed $s --methods softpatch \
      --config longtail_softpatch_soft --coreset-ratio 0.1 --output-json $out/$name.json --quiet \
      > $out/$name.txt 2> $out/$name.time
    echo "$name $(grep -E 'Elapsed' $out/$name.time)"
  done
done
# The same six runs without the soft weighting (LOF discard only: the recorded feature settings,
# longtail_first_embedding), today's code, for the side-by-side comparison.
mkdir -p $out/discard_only
for s in 0 1 2; do
  for tail in "step --k 4" "pareto"; do
    name=$(echo $tail | tr -d ' -' | sed 's/stepk4/step_k4/')_seed$s
    /usr/bin/time -v anomaly-inspect evaluate-lt --root ../shared/data/mvtec_ad --root ../shared/data/magnetic_tile \
      --categories bottle,screw,magnetic_tile --tail $tail --noise 0.1 --seed $s --methods softpatch \
      --config longtail_first_embedding --coreset-ratio 0.1 --output-json $out/discard_only/$name.json --quiet \
      > $out/discard_only/$name.txt 2> $out/discard_only/$name.time
    echo "discard_only $name $(grep -E 'Elapsed' $out/discard_only/$name.time)"
  done
done
python docs/results/lt/summarise.py $out
python docs/results/lt/summarise.py $out/discard_only
