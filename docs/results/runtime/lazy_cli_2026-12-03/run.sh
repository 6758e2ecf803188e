#!/bin/bash
# Command-line start-up before / after the lazy command modules, side by side, three rounds:
# `--help`, `fit --help` and an argument error (which parse only), and `screen` of one image
# with a saved bottle model (which runs). BEFORE: a worktree of the commit before the change.
. /work/main/.venv/bin/activate
BEFORE=${BEFORE:-/tmp/wt_head}; cd /tmp
py="import sys; from anomaly_inspect.cli import main; sys.exit(main())"
img=/work/shared/data/mvtec_ad/bottle/test/broken_large/000.png
model=/tmp/lazy_cli_model
[ -d $model ] || env PYTHONPATH=/work/main/inspect python -c "$py" fit --train /work/shared/data/mvtec_ad/bottle/train/good --out $model --quiet
t() { /usr/bin/time -f "%e" env PYTHONPATH=$1/inspect python -c "$py" "${@:2}" >/dev/null 2>/tmp/lazy_cli_err; tail -1 /tmp/lazy_cli_err; }
for round in 1 2 3; do
  for side in before after; do
    src=$([ $side = before ] && echo $BEFORE || echo /work/main)
    rm -rf /tmp/lazy_cli_screen
    echo "round $round $side: --help $(t $src --help) s, fit --help $(t $src fit --help) s," \
         "argument error $(t $src evaluate --image-size x) s," \
         "screen 1 image $(t $src screen $model $img --out /tmp/lazy_cli_screen --quiet) s"
  done
done
rm -rf /tmp/lazy_cli_screen
