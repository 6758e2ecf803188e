#!/bin/bash
# Round 1 seeded by the picks of earlier chunks, against the default two-round coreset (2026-12-04).
# From the repository root; features are extracted once per set into /tmp/s43 (seeded.py).
here=$(cd "$(dirname "$0")" && pwd); cd "$here/../../../.."
. .venv/bin/activate
for init in flat hnsw; do
  INIT=$init python "$here/seeded.py" screw longtail_first_embedding 0.1 0,1,2
done
INIT=hnsw python "$here/seeded.py" screw default 0.1 0
INIT=hnsw python "$here/seeded.py" bottle default 0.1 0
