#!/bin/bash
# export MODEL_DIR on real data: a bottle model fitted with onnxruntime (f32) and one fitted with
# openvino (f32), each exported in its format; wall time, sizes, the IR check, and the bundle
# screening bottle's test images with the same scores as the model. usage: run.sh OUT
. /work/main/.venv/bin/activate
out=$1; mkdir -p $out; M=/work/shared/data/mvtec_ad; cd /tmp
for rt in onnxruntime openvino; do
  fmt=onnx; [ $rt = openvino ] && fmt=openvino
  rm -rf /tmp/dep_$rt
  anomaly-inspect fit --train $M/bottle/train/good --out /tmp/dep_$rt/model --runtime $rt --quiet > /dev/null 2>&1
  /usr/bin/time -f "export $fmt wall %e s" anomaly-inspect export /tmp/dep_$rt/model --format $fmt --out /tmp/dep_$rt/bundle --quiet 2>&1 | tee $out/export_$fmt.txt
  du -sh /tmp/dep_$rt/model /tmp/dep_$rt/bundle | tee -a $out/export_$fmt.txt
  cp /tmp/dep_$rt/bundle/manifest.json $out/manifest_$fmt.json
  for d in model bundle; do
    anomaly-inspect screen /tmp/dep_$rt/$d $M/bottle/test --out /tmp/dep_$rt/screen_$d --quiet --no-report --overlays none > /dev/null 2>&1
  done
  cmp <(cut -d, -f1-4 /tmp/dep_$rt/screen_model/results.csv) <(cut -d, -f1-4 /tmp/dep_$rt/screen_bundle/results.csv) \
    && echo "$rt: bundle's results.csv (path, score, p-value, decision) equal to the model's: $(($(wc -l < /tmp/dep_$rt/screen_model/results.csv) - 1)) images" | tee -a $out/export_$fmt.txt
done
