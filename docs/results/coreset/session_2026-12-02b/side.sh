#!/bin/bash
# side by side: before (/work/bench = 54cbfb9) and after (/work/dev), interleaved
cd /work/bench
for i in 1 2 3; do
  for src in bench dev; do
    PYTHONPATH=/work/$src/inspect /work/main/.venv/bin/python -m anomaly_inspect.cli evaluate --root ../shared/data/mvtec_ad --category bottle --quiet --output-json /tmp/mb/bottle_${src}_$i.json > /dev/null 2>&1
    /work/main/.venv/bin/python -c "
import json; r=json.load(open('/tmp/mb/bottle_${src}_$i.json')); print('$src', $i, {k: r[k] for k in r if 'img' in k or 'auroc' in k}, r.get('stage_seconds', r.get('stages')))"
  done
done
for src in bench dev; do SRC=/work/$src/inspect /work/main/.venv/bin/python /tmp/s20/exp.py screw screw152 screw152 0.01 4096:auto 4096:0.1 2>&1 | grep '^{' | sed "s/^/$src /"; done
