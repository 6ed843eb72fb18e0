#!/usr/bin/env bash
# bench/cluster.sh: produce throughput of rf=1 against rf=3 topics on one three-broker sluice
# cluster on loopback. The cluster is started once (`go run ./bench/chaos -mode serve`); loadgen
# then alternates rf=1 and rf=3 runs (rf1, rf3, rf1, rf3, ...) so slow drift in the shared
# machine's load hits both alike, and the medians per record size are compared.
#
# Every run creates a fresh topic with the same partition count (loadgen -replication-factor),
# produces closed-loop (idempotent, acks=all, bench/workloads/small.yaml's settings) with no
# consumers, and deletes the topic afterwards.
#
# Settings (environment variables, all optional):
#   ROUNDS      rf1/rf3 pairs per record size (default 3)
#   SIZES       record sizes (default "100 1KiB")
#   PARTITIONS  partitions per topic (default 6: two led by each broker)
#   DURATION    measured time per run (default 20s)
#   WARMUP      warm-up per run (default 5s)
#   BASE_PORT   the cluster's ports: base+100i+92 (Kafka) and +93 (Raft) for broker i (default 33500)
#   OUT         result directory (default results/<UTC date>-<cores>core-<host>-cluster/throughput)
#
# Needs python3 for the median table. About 7 minutes with the defaults.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"100 1KiB"}
PARTITIONS=${PARTITIONS:-6}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
BASE_PORT=${BASE_PORT:-33500}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-$(hostname -s 2>/dev/null || echo machine)-cluster/throughput}

BIN=$(mktemp -d /tmp/chaos-bench.XXXXXX)
DATA=/tmp/chaos-throughput-$$
CLUSTER_PID=
cleanup() {
	if [ -n "$CLUSTER_PID" ]; then
		kill "$CLUSTER_PID" 2>/dev/null || true
		wait "$CLUSTER_PID" 2>/dev/null || true
	fi
	cp "$DATA"/broker-*.log "$OUT/" 2>/dev/null || true
	rm -rf "$BIN" "$DATA"
}
trap cleanup EXIT

log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "building sluice, loadgen and bench/chaos into $BIN"
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/chaos" ./bench/chaos

mkdir -p "$OUT"
"$BIN/chaos" -mode serve -sluice "$BIN/sluice" -data-dir "$DATA" -base-port "$BASE_PORT" \
	>"$OUT/cluster.log" 2>&1 &
CLUSTER_PID=$!
BROKERS="127.0.0.1:$((BASE_PORT + 192)),127.0.0.1:$((BASE_PORT + 292)),127.0.0.1:$((BASE_PORT + 392))"
for ((i = 0; i < 600; i++)); do
	grep -q '^cluster up' "$OUT/cluster.log" && break
	kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$OUT/cluster.log" >&2; exit 1; }
	sleep 0.1
done
grep -q '^cluster up' "$OUT/cluster.log" || { log "cluster did not start"; exit 1; }
log "cluster up: $BROKERS"

for size in $SIZES; do
	for ((round = 1; round <= ROUNDS; round++)); do
		for rf in 1 3; do
			dir="$OUT/$size/rf$rf-$round"
			rm -rf "$dir"
			mkdir -p "$dir"
			log "record size $size, rf=$rf, round $round"
			load0=$(cut -d' ' -f1-3 /proc/loadavg)
			if ! "$BIN/loadgen" run -workload bench/workloads/small.yaml -brokers "$BROKERS" \
				-name "cluster-$size-rf$rf" -label "rf$rf-$round" -out "$dir" \
				-record-size "$size" -partitions "$PARTITIONS" -replication-factor "$rf" \
				-consumers 0 -duration "$DURATION" -warmup "$WARMUP" -quiet \
				>"$dir/stdout.txt" 2>"$dir/progress.log"; then
				log "run failed: $(tail -n 1 "$dir/progress.log")"
			fi
			echo "machine load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after" >"$dir/load.txt"
		done
	done
done

# Medians per record size and replication factor, and the rf=3/rf=1 ratio.
python3 - "$OUT" "$SIZES" <<'EOF' | tee "$OUT/summary.md"
import json, os, statistics, sys
out, sizes = sys.argv[1], sys.argv[2].split()
print("| record size | rf | runs (records/s) | median records/s | median MB/s | publish p50 / p99 (ms) | rf=3 / rf=1 |")
print("|---|---|---|---|---|---|---|")
for size in sizes:
    med = {}
    for rf in (1, 3):
        rs = []
        for d in sorted(os.listdir(os.path.join(out, size))):
            if not d.startswith(f"rf{rf}-"):
                continue
            p = os.path.join(out, size, d, "result.json")
            if os.path.exists(p):
                rs.append(json.load(open(p)))
        if not rs:
            continue
        rps = [r["produce"]["records_per_sec"] for r in rs]
        mbs = [r["produce"]["mb_per_sec"] for r in rs]
        p50 = statistics.median(r["publish_latency"]["p50_us"] for r in rs) / 1000
        p99 = statistics.median(r["publish_latency"]["p99_us"] for r in rs) / 1000
        med[rf] = statistics.median(rps)
        ratio = f"{med[3] / med[1]:.2f}" if rf == 3 and 1 in med else ""
        print(f"| {size} | {rf} | {', '.join(f'{x:.0f}' for x in rps)} | {med[rf]:.0f} | {statistics.median(mbs):.1f} | {p50:.1f} / {p99:.1f} | {ratio} |")
EOF
log "results in $OUT"
