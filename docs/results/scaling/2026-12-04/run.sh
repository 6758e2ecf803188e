#!/bin/bash
# Distributed-fit rows of docs/scaling.md re-run with round 1 seeded by (seed, batch number).
# From the repository root: bash docs/results/scaling/2026-12-04/run.sh
set -e
OUT=docs/results/scaling/2026-12-04
D=../shared/data
anomaly-inspect bench-coreset --root $D/mvtec_ad --category bottle --ratios 0.1 --variants two_round --engine ray --workers 2 --output-json $OUT/bottle.json --quiet
anomaly-inspect bench-coreset --root $D/mvtec_ad --category screw --engine ray --workers 2 --engine-only --radius-sample 100000 --output-json $OUT/screw.json --quiet
anomaly-inspect bench-coreset --root $D/magnetic_tile --category magnetic_tile --engine ray --workers 2 --engine-only --radius-sample 200000 --output-json $OUT/magnetic_tile.json --quiet
