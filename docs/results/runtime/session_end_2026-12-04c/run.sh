#!/bin/bash
# The same side-by-side run as ../session_end_2026-12-03/run.sh (evaluate on bottle and screw,
# before and this tree interleaved, two rounds; then bench-backbone), with before = 2d17f78 (the
# end of stop 39) in a worktree at $BEFORE, and the JSONs beside this script.
here=$(cd $(dirname $0) && pwd)
OUT=${OUT:-$here} BEFORE=${BEFORE:-/tmp/wt_s40} bash $here/../session_end_2026-12-03/run.sh
