import json, glob
for f in sorted(glob.glob("/tmp/t20/*.json")):
    d = json.load(open(f))
    st = d["stage_seconds"]
    print(f"{f.split('/')[-1]:28s} img {d['image_auroc']:.6f} pix {d['pixel_auroc'] or 0:.4f} img/s {d['images_per_second']:.1f} fit {d['fit_seconds']:.2f} test {d['test_seconds']:.2f} rss {d['peak_rss_mb']:.0f} bank {d['memory_bank_items']} " + " ".join(f"{k}={v:.2f}" for k, v in st.items()))
