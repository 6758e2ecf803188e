#!/bin/bash
# CPU time of a bottle evaluate, sampled every 0.25 s from /proc (ticks of 1/100 s per
# sample: 50 = both cores busy); prints "seconds ticks" per line
. /work/main/.venv/bin/activate
cd /tmp
anomaly-inspect evaluate --root /work/shared/data/mvtec_ad --category bottle --output-json /tmp/cpu_trace.json > /tmp/cpu_trace.log 2>&1 &
pid=$!
hz=$(getconf CLK_TCK)
prev=0; t0=$(date +%s.%N)
while kill -0 $pid 2>/dev/null; do
  read -r a < /proc/$pid/stat 2>/dev/null || break
  set -- $a; cpu=$(( ${14} + ${15} ))
  now=$(date +%s.%N)
  echo "$(echo "$now - $t0" | bc) $(( (cpu - prev) ))"
  prev=$cpu; sleep 0.25
done
