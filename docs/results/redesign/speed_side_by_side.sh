#!/bin/bash
# side by side, interleaved: bottle evaluate before (6aa4cf1) and after (main HEAD), 2 rounds each
for r in 1 2; do
  for w in b2:/work/wt-b2 main:/work/main; do
    n=${w%%:*}; d=${w#*:}
    (cd $d && PYTHONPATH=$d/inspect /work/main/.venv/bin/python -m anomaly_inspect.cli evaluate --root /work/shared/data/mvtec_ad --category bottle --output-json /tmp/sbs/${n}_$r.json --quiet > /tmp/sbs/${n}_$r.txt 2>&1)
  done
done
echo done > /tmp/sbs/DONE
