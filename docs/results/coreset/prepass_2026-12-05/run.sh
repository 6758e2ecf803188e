#!/bin/bash
# Round 1 seeded by P centres picked up front (a greedy over S rows sampled from the first window),
# against the default two-round coreset (2026-12-05). Screw 152-d at 10 %; features as
# ../seeded_2026-12-04/seeded.py extracts them (it writes /tmp/s43/feat_screw_longtail_first_embedding_*).
here=$(cd "$(dirname "$0")" && pwd); cd "$here/../../../.."
. .venv/bin/activate
python "$here/prepass.py" screw longtail_first_embedding 0.1 0 1024:8192,4096:32768,8192:65536  # the last was killed before it printed
python "$here/prepass.py" screw longtail_first_embedding 0.1 1,2 1024:8192,2048:16384
