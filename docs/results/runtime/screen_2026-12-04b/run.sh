#!/bin/bash
# The same check as ../screen_2026-12-04/run.sh (screen against evaluate's test img/s on bottle,
# interleaved, two rounds; screen's peak RSS), with the JSONs and time -v output beside this
# script. From the repository root, venv active.
OUT=$(cd $(dirname $0) && pwd) bash $(dirname $0)/../screen_2026-12-04/run.sh
