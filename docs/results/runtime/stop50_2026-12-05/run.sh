#!/bin/bash
# Issue 14 close-out (2026-12-05): image AUROC of torch f32, ONNX Runtime f32 (the default) and
# OpenVINO bf16 on every real category, at today's code (the README's torch / ONNX Runtime table
# had no recorded file for bottle, screw and magnetic tile, and bf16 had no AUROC figure); then
# screen's peak RSS with a magnetic tile model (the largest bank, 121,760 items). From the
# repository root, venv active (with the [openvino] extra). Speed figures of these runs are not
# comparable (another job ran beside them); the side-by-side speed table is stop 49's.
set -u
OUT=${1:-docs/results/runtime/stop50_2026-12-05}; M=../shared/data/mvtec_ad; T=../shared/data/magnetic_tile
mkdir -p "$OUT"
ev() { local name=$1; shift; echo "== $name: $*" >> "$OUT/run.log"
  anomaly-inspect evaluate "$@" --quiet --output-json "$OUT/$name.json" >> "$OUT/run.log" 2>&1; }
for cat in bottle screw metal_nut pill magnetic_tile; do
  root=$M; [ $cat = magnetic_tile ] && root=$T
  ev ${cat}_torch_f32 --root $root --category $cat --runtime torch
  ev ${cat}_onnxruntime_f32 --root $root --category $cat --runtime onnxruntime --precision f32
  ev ${cat}_openvino_bf16 --root $root --category $cat --runtime openvino --precision bf16
done
W=$(mktemp -d)
anomaly-inspect fit --train $T/magnetic_tile/train/good --out $W/model --quiet >> "$OUT/run.log" 2>&1
/usr/bin/time -v anomaly-inspect screen $W/model $T/magnetic_tile/test --out $W/screen \
  --output-json "$OUT/screen_magnetic_tile.json" --quiet >> "$OUT/run.log" 2> "$OUT/screen_magnetic_tile_time.txt"
rm -rf "$W"
python - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
print("category | torch f32 | onnxruntime f32 (diff) | openvino bf16 (diff)")
for c in ("bottle", "screw", "metal_nut", "pill", "magnetic_tile"):
    a = {r: json.load(open(f"{out}/{c}_{r}.json")) for r in ("torch_f32", "onnxruntime_f32", "openvino_bf16")}
    auc = {r: d["image_auroc"] for r, d in a.items()}
    t = auc["torch_f32"]
    print(f"{c} | {t:.6f} | {auc['onnxruntime_f32']:.6f} ({auc['onnxruntime_f32'] - t:+.6f}) | "
          f"{auc['openvino_bf16']:.6f} ({auc['openvino_bf16'] - t:+.6f})")
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{out}/screen_magnetic_tile_time.txt").read())
s = json.load(open(f"{out}/screen_magnetic_tile.json"))
print(f"screen magnetic tile: {s.get('images_per_second')} img/s, peak RSS {int(rss[1]) / 1024:.0f} MB")
PY
