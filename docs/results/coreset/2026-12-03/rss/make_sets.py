"""The 200 / 900 / 5,000-image training sets of run.sh: MVTec bottle, metal nut, pill and screw
train/good (1,016 images, 70 MB), copied in that order and repeated (never into the repo).
Copies, not hard links: fit counts hard-linked twins once, so 5,000 links to 1,016 files would
fit 1,016 images; the calibration hold-out holds copies of fitted images (fine for a memory
measurement, not for a threshold). The three sets take about 430 MB of disk under
/tmp/s31/rss (6,100 files). The RSS figures of docs/coreset.md (2026-12-03) were measured with
hard-linked repeats, before fit counted twins once."""
import shutil
from pathlib import Path

src = []
for c in ("bottle", "metal_nut", "pill", "screw"):
    src += sorted(Path(f"/work/shared/data/mvtec_ad/{c}/train/good").glob("*.png"))
for n in (200, 900, 5000):
    d = Path(f"/tmp/s31/rss/n{n}")
    d.mkdir(parents=True)
    for i in range(n):
        s = src[i % len(src)]
        shutil.copyfile(s, d / f"{i:05d}_{s.parent.parent.parent.name}_{s.name}")
