#!/bin/bash
# evaluate before (4083ff6) and after, interleaved; bench-backbone of each in the same script.
# usage: BEFORE=<before checkout>/inspect run.sh OUTDIR
. /work/main/.venv/bin/activate
out=$1; mkdir -p $out
ev() {  # ev SRC NAME CATEGORY
  root=/work/shared/data/mvtec_ad; [ $3 = magnetic_tile ] && root=/work/shared/data/magnetic_tile
  (cd /tmp && PYTHONPATH=$1 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
     evaluate --root $root --category $3 --quiet --output-json $out/$3_$2.json > $out/$3_$2.txt 2>&1)
  echo "$3 $2: $(grep -E 'image AUROC  |pixel AUROC|end-to-end|time by stage|peak RSS' $out/$3_$2.txt | tr -s ' ' | tr '\n' ' ')"
}
bb() {
  (cd /tmp && PYTHONPATH=$1 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
     bench-backbone --runtime onnxruntime --precision f32 --rounds 5 --image-size 320 --quiet --output-json $out/bench_$2.json > $out/bench_$2.txt 2>&1)
  echo "bench-backbone $2: $(grep -E 'onnxruntime|torch' $out/bench_$2.txt | tr -s ' ' | tr '\n' ' ')"
}
sc() {  # sc SRC NAME: fit on bottle's training images, screen its test images
  (cd /tmp && rm -rf /tmp/screen_$2 && PYTHONPATH=$1 python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
     fit --train /work/shared/data/mvtec_ad/bottle/train/good --out /tmp/screen_$2/model --quiet > /dev/null 2>&1 && \
   PYTHONPATH=$1 /usr/bin/time -v python -c "import sys; from anomaly_inspect.cli import main; sys.exit(main())" \
     screen /tmp/screen_$2/model /work/shared/data/mvtec_ad/bottle/test --out /tmp/screen_$2/out --quiet --output-json $out/screen_$2.json > $out/screen_$2.txt 2>&1)
  echo "screen $2: $(python3 -c "import json; d=json.load(open('$out/screen_$2.json')); print({k: v for k, v in d.items() if 'img' in k or 'second' in k or 'rss' in k.lower()})") $(grep 'Maximum resident' $out/screen_$2.txt)"
}
for rep in 1 2; do
  sc $BEFORE before_$rep; sc /work/main/inspect after_$rep
done
for rep in 1 2; do
  bb $BEFORE before_$rep; bb /work/main/inspect after_$rep
  for c in bottle screw; do ev $BEFORE before_$rep $c; ev /work/main/inspect after_$rep $c; done
done
for c in metal_nut pill magnetic_tile; do ev $BEFORE before_1 $c; ev /work/main/inspect after_1 $c; done
