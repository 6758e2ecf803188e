#!/bin/bash
# issue 14: screen throughput against evaluate's test img/s (bottle), side by side in one script
# (interleaved, two rounds), and screen's peak RSS. From the repository root, venv active.
# JSONs and time -v output beside this script.
out=${OUT:-$(cd $(dirname $0) && pwd)}; M=../shared/data/mvtec_ad; W=$(mktemp -d)
anomaly-inspect fit --train $M/bottle/train/good --out $W/model_bottle --quiet > /dev/null
for r in 1 2; do
  anomaly-inspect evaluate --root $M --category bottle --quiet --output-json $out/evaluate_$r.json > /dev/null
  /usr/bin/time -v anomaly-inspect screen $W/model_bottle "$M/bottle/test" --out $W/screen_$r \
    --output-json $out/screen_$r.json --quiet > /dev/null 2> $out/screen_time_$r.txt
  python - $out $r <<'PY'
import json, re, sys
out, r = sys.argv[1], sys.argv[2]
e = json.load(open(f"{out}/evaluate_{r}.json")); s = json.load(open(f"{out}/screen_{r}.json"))
test_ips = e["test_images_per_second"]
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{out}/screen_time_{r}.txt").read())
print(f"round {r}: evaluate test {test_ips} img/s; screen {s.get('images_per_second')} img/s; "
      f"screen peak RSS {int(rss[1]) / 1024:.0f} MB")
PY
done
rm -rf $W
