#!/bin/bash
# evaluate with efSearch 16 (NearestNeighbours' default patched in this process only)
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd)/out; mkdir -p $out
for c in bottle metal_nut pill magnetic_tile; do
  root=/work/shared/data/mvtec_ad; [ $c = magnetic_tile ] && root=/work/shared/data/magnetic_tile
  (cd /tmp && python -c "
import sys
from anomaly_inspect.scorers import nn_index
d = list(nn_index.NearestNeighbours.__init__.__defaults__); d[2] = 16
nn_index.NearestNeighbours.__init__.__defaults__ = tuple(d)
from anomaly_inspect.cli import main; sys.exit(main())" evaluate --root $root --category $c --quiet --output-json $out/${c}_ef16.json > $out/${c}_ef16.txt 2>&1)
  echo "$c ef16: $(grep -E 'image AUROC  |pixel AUROC|end-to-end|time by stage|memory bank' $out/${c}_ef16.txt | tr -s ' ' | tr '\n' ' ')"
done
