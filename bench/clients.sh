#!/usr/bin/env bash
# bench/clients.sh: which figure is the client's limit and which the broker's (issue 17). Runs
# loadgen's two clients, kgo (franz-go, what an application sees) and native (loadgen's own lean
# client), against kfake and sluice: 100 B, 1 KiB and 1 MB records (bench/workloads/small.yaml,
# the same at 1 KiB, large.yaml), each at max rate (closed loop) and then at half the rate that
# run reached (open loop). First it measures each client's own ceiling against `loadgen sink`, a
# fake broker that acknowledges produce without storing: produced records per loadgen CPU-second.
#
# Output: OUT/ceiling.txt, OUT/<size>/<broker>-<client>-{max,half}/ result directories and, per
# size, a comparison (compare.txt, charts, report.html), and OUT/table.md.
#
# Settings (environment variables, all optional):
#   OUT       result directory (default results/<UTC date>-<cores>core-vm-loadgen)
#   DURATION  measured time per run (default 15s); WARMUP (default 3s); DRAIN (default 15s)
#   SIZES     which of "100B 1KiB 1MB" (default all; "" = only the ceiling)
#   BROKERS   default "kfake sluice"; CLIENTS default "kgo native"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-vm-loadgen}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
DRAIN=${DRAIN:-15s}
SIZES=${SIZES-"100B 1KiB 1MB"}
BROKERS=${BROKERS:-"kfake sluice"}
CLIENTS=${CLIENTS:-"kgo native"}

BIN=$(mktemp -d /tmp/sluice-clients.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT

log "building loadgen, kfake and sluice into $BIN"
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/kfake" ./bench/kfake
go build -o "$BIN/sluice" ./cmd/sluice
mkdir -p "$OUT"

# The ceiling: each client against the sink, produce only, 100 B, max rate.
port=$(free_port)
"$BIN/loadgen" sink -listen "127.0.0.1:$port" -quiet >"$BIN/sink.log" 2>&1 &
sink=$!
PIDS+=("$sink")
wait_port "$port" 10
{
	echo "loadgen's own ceiling: 100 B records, 8 partitions, acks=all idempotent, one producer at max rate,"
	echo "against loadgen sink (acknowledges without storing; a separate process, not counted)."
	echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	printf '%-8s %14s %12s %16s\n' client "records" "rec/s" "rec/CPU-second"
} >"$OUT/ceiling.txt"
for client in $CLIENTS; do
	dir="$OUT/ceiling/$client"
	mkdir -p "$dir"
	log "ceiling: $client against the sink"
	"$BIN/loadgen" run -workload bench/workloads/small.yaml -client "$client" -brokers "127.0.0.1:$port" \
		-consumers 0 -max-buffered-records 200000 -warmup 2s -duration 10s -label "$client" -quiet -out "$dir" >"$dir/stdout.txt"
	python3 - "$dir/result.json" "$client" >>"$OUT/ceiling.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
recs, cpu = r["produce"]["records"], r["schedule"]["loadgen_cpu_seconds"]
print("%-8s %14d %12.0f %16.0f" % (sys.argv[2], recs, r["produce"]["records_per_sec"], recs / cpu if cpu else 0))
PY
done
kill "$sink"

# start_broker NAME PORT: starts a fresh broker, sets BROKER_PID.
start_broker() {
	case $1 in
	kfake) "$BIN/kfake" -port "$2" -retention-bytes $((1 << 28)) >"$BIN/broker-$2.log" 2>&1 & ;;
	sluice)
		mkdir -p "$BIN/data-$2"
		"$BIN/sluice" serve --listen "127.0.0.1:$2" --data-dir "$BIN/data-$2" --raft-addr "127.0.0.1:$(free_port)" >"$BIN/broker-$2.log" 2>&1 &
		;;
	esac
	BROKER_PID=$!
	PIDS+=("$BROKER_PID")
}

stop_broker() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
}

# run SIZE BROKER CLIENT KIND [RATE]: one run on a fresh broker.
run() {
	local size=$1 broker=$2 client=$3 kind=$4 rate=${5:-0} wl=bench/workloads/small.yaml extra=()
	case $size in
	1KiB) extra=(-record-size 1KiB -name 1KiB -max-buffered-records 5000) ;;
	1MB) wl=bench/workloads/large.yaml ;;
	esac
	local dir="$OUT/$size/$broker-$client-$kind" port
	rm -rf "$dir"
	mkdir -p "$dir"
	port=$(free_port)
	start_broker "$broker" "$port"
	local pid=$BROKER_PID
	wait_port "$port" 60
	sleep 1
	log "$size $broker $client $kind (rate $rate)"
	local cpu0
	cpu0=$(cpu_seconds "$pid")
	"$BIN/loadgen" run -workload "$wl" "${extra[@]}" -client "$client" -brokers "127.0.0.1:$port" -rate "$rate" \
		-label "$broker $client $kind" -warmup "$WARMUP" -duration "$DURATION" -drain-timeout "$DRAIN" -quiet -out "$dir" \
		>"$dir/stdout.txt" 2>&1 || log "run failed: $dir"
	echo "broker CPU seconds: $(awk -v a="$(cpu_seconds "$pid")" -v b="$cpu0" 'BEGIN { printf "%.1f", a - b }')" >"$dir/broker.txt"
	cp "$BIN/broker-$port.log" "$dir/broker.log" 2>/dev/null || true
	stop_broker "$pid"
}

for size in $SIZES; do
	for broker in $BROKERS; do
		for client in $CLIENTS; do
			run "$size" "$broker" "$client" max
			max=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["produce"]["records_per_sec"]))' "$OUT/$size/$broker-$client-max/result.json" 2>/dev/null || echo 0)
			if [ "$max" -gt 0 ]; then
				run "$size" "$broker" "$client" half $((max / 2))
			fi
		done
	done
	"$BIN/loadgen" compare -out "$OUT/$size" -html -title "$size" "$OUT/$size" >/dev/null
done

# One table over everything.
[ -n "$SIZES" ] || exit 0
python3 - "$OUT" $SIZES >"$OUT/table.md" <<'PY'
import json, os, sys
out, sizes = sys.argv[1], sys.argv[2:]
print("| size | broker | client | run | produce rec/s | MB/s | publish p50 ms | publish p99 ms | e2e p99 ms | loadgen CPU s | broker CPU s | warnings |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for size in sizes:
    d = os.path.join(out, size)
    for name in sorted(os.listdir(d)):
        f = os.path.join(d, name, "result.json")
        if not os.path.exists(f):
            continue
        r = json.load(open(f))
        broker, client, kind = name.split("-")
        bcpu = open(os.path.join(d, name, "broker.txt")).read().split(":")[1].strip()
        kind = kind if kind == "max" else "half (%.0f/s)" % r["workload"]["rate"]
        print("| %s | %s | %s | %s | %.0f | %.1f | %.2f | %.2f | %.2f | %.1f | %s | %d |" % (size, broker, client, kind,
            r["produce"]["records_per_sec"], r["produce"]["mb_per_sec"], r["publish_latency"]["p50_us"] / 1e3,
            r["publish_latency"]["p99_us"] / 1e3, r["end_to_end_latency"].get("p99_us", 0) / 1e3,
            r["schedule"]["loadgen_cpu_seconds"], bcpu, len(r.get("warnings") or [])))
PY
log "done: $OUT"
