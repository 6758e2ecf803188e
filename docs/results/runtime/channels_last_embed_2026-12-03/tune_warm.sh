#!/bin/bash
# warm-cache tune on bottle before (93035a4, worktree at /tmp/wt_head) and after the
# channels-last embedding, back to back: the same run as auto_config/tune_bounds_2026-12-03
here=$(cd $(dirname $0) && pwd)
OUT=$here BEFORE=${BEFORE:-/tmp/wt_head} exec $here/../../auto_config/tune_bounds_2026-12-03/tune_warm.sh
