#!/bin/bash
# The HNSW graph check: evaluate before (1e6577e~1) and after (1e6577e), interleaved, twice;
# default config and the cells coreset, bottle; default on screw once.
AI=/work/main/.venv/bin/anomaly-inspect
M=/work/shared/data/mvtec_ad
O=/work/runs/e2e/out
mkdir -p $O
for rep in 1 2; do
  for side in before after; do
    if [ $side = before ]; then export PYTHONPATH=/work/before/inspect; else unset PYTHONPATH; fi
    $AI evaluate --root $M --category bottle --output-json $O/bottle_default_${side}_$rep.json --quiet
    $AI evaluate --root $M --category bottle --config /work/runs/e2e/cells.yaml --output-json $O/bottle_cells_${side}_$rep.json --quiet
  done
done
for side in before after; do
  if [ $side = before ]; then export PYTHONPATH=/work/before/inspect; else unset PYTHONPATH; fi
  $AI evaluate --root $M --category screw --output-json $O/screw_default_${side}_1.json --quiet
done
echo DONE
