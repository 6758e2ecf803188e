#!/bin/bash
# usage: lt.sh WORKTREE OUT.json -- a reduced evaluate-lt (pareto, seed 0) on a symlinked subset
W=$1; OUT=$2; D=/tmp/eq/lt_data
if [ ! -d $D ]; then
  cd /work/main && PYTHONPATH=/work/main/tests:/work/main/inspect /work/main/.venv/bin/python -c "
from pathlib import Path; from test_longtail import mini_layout
mini_layout(Path('/work/shared/data'), Path('$D'), n_train=40, n_test=10)"
fi
cd /tmp/eq && mkdir -p man_$(basename $W)
PYTHONPATH=$W/inspect OMP_NUM_THREADS=1 nice -n 5 /work/main/.venv/bin/python -m anomaly_inspect.cli evaluate-lt \
  --root $D --categories bottle,screw,magnetic_tile --tail pareto --seed 0 \
  --methods patchcore,softpatch,tailedcore --image-size 256 --manifest-dir /tmp/eq/man_$(basename $W) \
  --output-json $OUT --quiet
