#!/bin/bash
# issue 20: the cells round 2 (c7920b5) against one_round (= the old default at 10 % and 25 %) on real data
cd /work/bench
export PYTHONPATH=/work/bench/inspect
AI=/work/main/.venv/bin/anomaly-inspect
M=/work/shared/data/mvtec_ad
O=/tmp/cb
$AI bench-coreset --root $M --category screw --config longtail_first_embedding --ratios 0.1,0.25 --variants two_round,one_round --seed 0 --output-json $O/screw152_s0.json --quiet
$AI bench-coreset --root $M --category screw --config longtail_first_embedding --ratios 0.1 --variants two_round,one_round --seed 1 --output-json $O/screw152_s1.json --quiet
$AI bench-coreset --root $M --category screw --config longtail_first_embedding --ratios 0.1 --variants two_round,one_round --seed 2 --output-json $O/screw152_s2.json --quiet
$AI bench-coreset --root $M --category screw --ratios 0.1,0.25 --variants two_round,one_round --seed 0 --output-json $O/screw232_s0.json --quiet
$AI bench-coreset --root $M --category bottle --ratios 0.1,0.25 --variants two_round,one_round --seed 0 --output-json $O/bottle232_s0.json --quiet
$AI bench-coreset --root $M --category bottle --config longtail_first_embedding --ratios 0.1,0.25 --variants two_round,one_round --seed 0 --output-json $O/bottle152_s0.json --quiet
$AI bench-coreset --root /work/shared/data/magnetic_tile --category magnetic_tile --ratios 0.1 --variants two_round,one_round --seed 0 --output-json $O/mag232_s0.json --quiet
$AI bench-coreset --root $M --category bottle --config longtail_first_embedding --ratios 0.1 --variants exact --seed 0 --output-json $O/bottle152_exact10.json --quiet
echo DONE
