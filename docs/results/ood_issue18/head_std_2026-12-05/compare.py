"""Compare this stop's runs with the recorded ones: every row's AUROC per split, old -> new.
Use: python compare.py NEW.json OLD.json"""
import json
import sys

new, old = (json.load(open(p)) for p in sys.argv[1:3])


def table(d):
    rows = {(r["scorer"], r["split"]): (r["auroc"], r["fpr_at_tpr80"]) for r in d["results"]}
    for f in d.get("fusion_results", []) or []:
        rows[(f["scorer"], f["split"])] = (f["auroc"], f["fpr_at_tpr80"])
    return rows


a, b = table(new), table(old)
same, changed = [], {}
for key in sorted(set(a) | set(b)):
    if key not in a or key not in b:
        print("only in", "new" if key in a else "old", key)
        continue
    if abs(a[key][0] - b[key][0]) < 1e-4 and abs(a[key][1] - b[key][1]) < 1e-4:
        same.append(key[0])
    else:
        changed.setdefault(key[0], []).append((key[1], b[key][0], a[key][0]))
print("unchanged rows:", sorted(set(same) - set(changed)))
for s, cells in changed.items():
    print(f"{s}: " + ", ".join(f"{sp} {o:.4f}->{n:.4f}" for sp, o, n in cells))
