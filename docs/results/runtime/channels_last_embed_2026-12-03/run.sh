#!/bin/bash
# evaluate before (worktree at $BEFORE: the commit before the channels-last embedding) and after
# (the working tree), interleaved, quiet machine; JSONs here
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /tmp
BEFORE=${BEFORE:-/tmp/wt_head}
py="import sys; from anomaly_inspect.cli import main; sys.exit(main())"
run() { # label source-root category root
  /usr/bin/time -f "$1 $3: %e s wall, %M KB" env PYTHONPATH=$2 python -c "$py" \
    evaluate --root $4 --category $3 --quiet --output-json $out/$1_$3.json 2>&1 | grep -E "wall|end-to-end|stage"
}
M=/work/shared/data/mvtec_ad
for c in bottle screw bottle screw metal_nut pill; do
  n=$(ls $out/before*_$c.json 2>/dev/null | wc -l); n=$((n+1))
  run before$n $BEFORE/inspect $c $M
  run after$n /work/main/inspect $c $M
done
run before1 $BEFORE/inspect magnetic_tile /work/shared/data/magnetic_tile
run after1 /work/main/inspect magnetic_tile /work/shared/data/magnetic_tile
# the backbone alone at the default runtime, for the end-to-end share
anomaly-inspect bench-backbone --runtime onnxruntime --precision f32 --rounds 5 --quiet --output-json $out/bench_backbone_ort.json
