"""The 200 / 900 / 5,000-image training sets of run.sh: MVTec bottle, metal nut, pill and screw
train/good (1,016 images), hard-linked in that order and repeated (never copied into the repo)."""
import os
from pathlib import Path

src = []
for c in ("bottle", "metal_nut", "pill", "screw"):
    src += sorted(Path(f"/work/shared/data/mvtec_ad/{c}/train/good").glob("*.png"))
for n in (200, 900, 5000):
    d = Path(f"/tmp/s31/rss/n{n}")
    d.mkdir(parents=True)
    for i in range(n):
        s = src[i % len(src)]
        os.link(s, d / f"{i:05d}_{s.parent.parent.parent.name}_{s.name}")
