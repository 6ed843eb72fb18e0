#!/usr/bin/env bash
# Produce latency with and without the log cleaner compacting the same topic while it runs.
# One broker (rf=1), a compacted topic (1 partition, 1 MiB segments, min.cleanable.dirty.ratio 0.1),
# loadgen open loop: 1 KiB records, 20,000 random keys, 5,000 records/s for 20 s, produce only
# (acks=all). Rounds interleave cleaner on / off (the machine is shared: compare within a round);
# MODES="1:10000000 0" runs the cleaner throttled to 10 MB/s (threads:io-bytes-per-second) instead.
# Usage: results/2026-12-07-2core-vm-compaction/run.sh [rounds [first round]]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
out=results/2026-12-07-2core-vm-compaction
go build -o /tmp/cmp-sluice ./cmd/sluice
go build -o /tmp/cmp-loadgen ./cmd/loadgen
first=${2:-1}
for round in $(seq "$first" "$rounds"); do
  for mode in ${MODES:-1 0}; do
    threads=${mode%%:*}; io=0
    [[ $mode == *:* ]] && io=${mode#*:}
    data=$(mktemp -d)
    port=$((20000 + RANDOM % 10000)); raft=$((port + 1)); mport=$((port + 2))
    /tmp/cmp-sluice serve --listen 127.0.0.1:$port --raft-addr 127.0.0.1:$raft --data-dir "$data" \
      --metrics-addr 127.0.0.1:$mport --log-cleaner-threads $threads --log-cleaner-io-max-bytes-per-second $io --log-cleaner-backoff 1s --log-level warn \
      >"$data/broker.log" 2>&1 &
    pid=$!
    sleep 3
    /tmp/cmp-sluice topics create --bootstrap 127.0.0.1:$port --partitions 1 --config cleanup.policy=compact \
      --config segment.bytes=1048576 --config min.cleanable.dirty.ratio=0.1 cmp >/dev/null
    name="round$round-cleaner$threads"
    [[ $io != 0 ]] && name="$name-io$io"
    /tmp/cmp-loadgen run -brokers 127.0.0.1:$port -topic cmp -record-size 1024 -keys random:20000 -rate 5000 \
      -duration 20s -consumers 0 -out "$out/$name" >"$out/$name.txt" 2>&1 || true
    curl -s http://127.0.0.1:$mport/metrics | grep -E '^sluice_log_cleaner|^process_cpu_seconds_total' >>"$out/$name.txt" || true
    du -sb "$data/logs/cmp-0" >>"$out/$name.txt" 2>/dev/null || true
    kill "$pid"; wait "$pid" || true
    rm -rf "$data"
  done
done
grep -H -E 'publish|cleaner_bytes|process_cpu|cmp-0' "$out"/round*.txt
