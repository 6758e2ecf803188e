#!/bin/bash
# Stop 48: the classifier head standardises a channel constant in training with std 1
# (StandardScaler's rule; before, std + 1e-4 blew such a channel's test values up 1e4-fold into
# first-layer weights it never trained). Every head row (msp, energy, max_logit, head_nan,
# head_feature_norm, l2norm, line, react, dice, vim, odin, ... and their _oriented / +colour rows)
# is measured again with the packaged configs, each from an empty cache, one job at a time.
# Rows without the head read the same features and code and must equal the earlier runs.
. /work/main/.venv/bin/activate
out=$(cd $(dirname $0) && pwd); cd /work/main
# Since 2026-12-05 (stop 49) a packaged config's data paths are relative to the data folder
# (--data-root, else $ANOMALY_INSPECT_DATA, else ../shared/data): to read the same files now, run
# this without the two "--data-root ." below (as recorded, it ran with them).
for cfg in mvtec_pill_colour mvtec_metal_nut_colour mvtec_bottle_heldout isic_all; do
  rm -rf /tmp/headstd_cache
  uptime
  /usr/bin/time -f "$cfg wall %e s, peak RSS %M KB" anomaly-inspect ood-benchmark --config ood/$cfg \
    --data-root . --cache-dir /tmp/headstd_cache --output-json $out/$cfg.json --quiet > $out/$cfg.txt 2> $out/$cfg.err
  tail -1 $out/$cfg.err
done
uptime
# The baseline at the commit before the fix (5b37a26), for the claim that only head rows moved:
#   git worktree add /tmp/wt_base 5b37a26; for c in mvtec_pill_colour mvtec_metal_nut_colour; do
#   PYTHONPATH=/tmp/wt_base/inspect python -m anomaly_inspect.cli ood-benchmark --config ood/$c \
#     --data-root . --cache-dir /tmp/base48/cache --output-json base_5b37a26_$c.json --quiet; done
# python compare.py NEW.json OLD.json lists the rows that moved; python table.py RUN.json SPLITS
# prints the docs' tables.
