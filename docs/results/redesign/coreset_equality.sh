# bench-coreset before / after on one generated dataset: usage coreset_eq.sh PYTHONPATH OUTDIR
set -e
PY=/work/main/.venv/bin/python
export PYTHONPATH=$1
mkdir -p $2
[ -d /tmp/redesign/tinydata ] || $PY -c "
from anomaly_inspect.data.synthetic import generate_dataset
generate_dataset('/tmp/redesign/tinydata', 'tiny', n_train=12, n_test_good=4, n_test_per_defect=2, image_size=96)"
$PY -m anomaly_inspect.cli bench-coreset --root /tmp/redesign/tinydata --category tiny --image-size 96 \
  --ratios 0.05,0.25 --variants two_round,one_round,exact --output-json $2/bench.json --quiet
$PY -m anomaly_inspect.cli bench-coreset --root /tmp/redesign/tinydata --category tiny --image-size 96 \
  --ratios 0.1 --engine local --engine-only --output-json $2/engine.json --quiet
