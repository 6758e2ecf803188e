"""Run `anomaly-inspect tune` (argv as for the CLI) and save every greedy input of at least
MIN_ROWS rows (the fold banks' round-2 unions) to $CAPTURE as union_<n>.npz (x, k, start)."""
import os
import sys

import numpy as np

from anomaly_inspect.cli import main
from anomaly_inspect.scorers import coreset

MIN_ROWS = int(os.environ.get("MIN_ROWS", 20000))
out = os.environ["CAPTURE"]
os.makedirs(out, exist_ok=True)
orig = coreset._greedy
count = [0]


def capture(x, k, start, progress=None, threads=1):
    if len(x) >= MIN_ROWS:
        count[0] += 1
        np.savez(os.path.join(out, f"union_{count[0]:02d}_{len(x)}.npz"), x=x, k=k, start=start)
    return orig(x, k, start, progress, threads)


coreset._greedy = capture
sys.exit(main())
