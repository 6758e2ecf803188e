import glob
import json

for f in sorted(glob.glob("/work/runs/e2e/out/*.json")):
    with open(f) as fh:
        d = json.load(fh)
    st = d.get("stage_seconds", {})
    g = d.get("search_graph") or {}
    print(f"{f.split('/')[-1]:32s} img {d['image_auroc']:.6f} pix {d.get('pixel_auroc') or 0:.6f} "
          f"img/s {d['images_per_second']:.1f} fit {st.get('fit', 0):.2f} search {st.get('search', 0):.2f} "
          f"graph {g.get('m')} {g.get('excess')}")
