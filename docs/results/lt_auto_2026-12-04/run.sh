#!/bin/bash
# The six lt_auto runs of docs/tailedcore.md again (2026-12-04), the commands given there, from the
# repository root, re-reading the committed manifests in datasets/, with an empty
# ANOMALY_INSPECT_CACHE so that the code exports its own backbone graph. Two runs at a time
# (one thread each): pareto seed 2 in one slot, the other five in the other. The package came from
# a snapshot of 240bd05 (SRC; `git archive 240bd05 inspect`), as other work had uncommitted edits
# in inspect/ meanwhile; without SRC the repository's own inspect/ is used.
# JSON, printout and /usr/bin/time -v report of each run go to OUT (default: this folder).
here=$(cd "$(dirname "$0")" && pwd); cd "$here/../../.."
. .venv/bin/activate
OUT=${OUT:-$here}; SRC=${SRC:-$PWD/inspect}
export ANOMALY_INSPECT_CACHE=${ANOMALY_INSPECT_CACHE:-$(mktemp -d)} OMP_NUM_THREADS=1 PYTHONPATH=$SRC
run() { # $1 name, then the split's flags
  n=$1; shift
  /usr/bin/time -v -o "$OUT/$n.time" python -m anomaly_inspect.cli evaluate-lt --root ../shared/data/mvtec_ad \
    --root ../shared/data/magnetic_tile --categories bottle,screw,magnetic_tile "$@" \
    --methods patchcore,softpatch,tailedcore --config configs/longtail_first_embedding.yaml \
    --coreset-ratio 0.01 --chunk-size 16384 --index flat --output-json "$OUT/$n.json" --quiet > "$OUT/$n.txt" 2>&1
  echo "$n rc=$?"
}
run pareto_seed2 --tail pareto --noise 0.1 --seed 2 &
( run step_k4_seed0 --tail step --k 4 --noise 0.1 --seed 0
  run step_k4_seed1 --tail step --k 4 --noise 0.1 --seed 1
  run step_k4_seed2 --tail step --k 4 --noise 0.1 --seed 2
  run pareto_seed1 --tail pareto --noise 0.1 --seed 1
  run pareto_seed0 --tail pareto --noise 0.1 --seed 0 ) &
wait
python docs/results/lt/summarise.py "$OUT"
