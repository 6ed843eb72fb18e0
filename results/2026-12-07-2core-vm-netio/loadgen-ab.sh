#!/usr/bin/env bash
# A/B: main vs netio branch, per backend, loadgen at open loop 5000 rec/s, 1 KiB records, 16 producers, 8 partitions.
set -u
OUT=${OUT:-/tmp/ab/out}
mkdir -p "$OUT"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
user_sys() { awk '{ printf "%.2f %.2f", $14 / 100, $15 / 100 }' "/proc/$1/stat"; }
printf 'pass\tversion\tbackend\trec_s\tpub_p50_ms\tpub_p99_ms\te2e_p99_ms\tbroker_cpu_s\tload1\n' > "$OUT/ab.tsv"
for pass in 1 2 3; do
  order="main branch"; [ $((pass % 2)) = 0 ] && order="branch main"
  for v in $order; do
    for backend in gnet uring; do
      port=$(freeport); rport=$(freeport); dir="$OUT/runs/$pass-$v-$backend"; rm -rf "$dir" /tmp/ab/data; mkdir -p "$dir"
      /tmp/ab/sluice-$v serve --listen 127.0.0.1:$port --raft-addr 127.0.0.1:$rport --data-dir /tmp/ab/data --netio $backend --segment-bytes 268435456 >"$dir/broker.log" 2>&1 &
      pid=$!
      for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
      sleep 1
      c0=$(user_sys $pid); load=$(cut -d' ' -f1 /proc/loadavg)
      /tmp/ab/loadgen run -quiet -brokers 127.0.0.1:$port -label $v-$backend -out "$dir" -name ab -record-size 1024 -partitions 8 -producers 16 \
        -rate 5000 -max-buffered-records 5000 -linger 1ms -consumer-groups 0 -consumers 1 -warmup 2s -duration 10s -drain-timeout 10s >"$dir/stdout.txt" 2>"$dir/progress.log"
      c1=$(user_sys $pid)
      kill $pid; wait $pid 2>/dev/null
      jq -r --arg p $pass --arg v $v --arg b $backend --arg c0 "$c0" --arg c1 "$c1" --arg load "$load" '
        def ms: . / 1000 | . * 100 | round / 100;
        ($c0|split(" ")|map(tonumber)) as $a | ($c1|split(" ")|map(tonumber)) as $z |
        [$p,$v,$b,(.produce.records_per_sec|round),(.publish_latency.p50_us|ms),(.publish_latency.p99_us|ms),(.end_to_end_latency.p99_us|ms),(($z[0]-$a[0])+($z[1]-$a[1])),$load]|@tsv' "$dir/result.json" >> "$OUT/ab.tsv" 2>>"$OUT/jq.err" || echo "$pass $v $backend failed" >> "$OUT/ab.tsv"
    done
  done
done
