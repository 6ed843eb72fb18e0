#!/usr/bin/env bash
# bench/storage.sh: the storage bake-off. Sluice built from git revisions (the working tree, and e.g.
# 108831f: the last main with dragonboat's tan log beside the segments as its default) and kfake,
# side by side in interleaved rounds, each run on a fresh broker and data directory: max-rate produce with a
# consumer, franz-go, acks=all idempotent, fsync-durable for Sluice. Per run it records the
# broker's CPU seconds (user+system, /proc/PID/stat), the bytes it wrote to disk
# (/proc/PID/io write_bytes, after a final sync of its data directory), and loadgen's produce and
# consume rates; then prints the medians per broker and the ratios against the first.
#
# Settings (environment variables, all optional):
#   BROKERS      runs per round, in this order (default "sluice:108831f sluice:tree kfake");
#                sluice:REV:N runs N brokers built from git revision REV ("tree": the working
#                tree) on loopback with replication factor N; sluice:REV:N:VAR=V,VAR=V also sets
#                environment variables for those brokers (e.g. sluice:tree:1:GOGC=400)
#   SIZES        record sizes (default "1024 100")
#   PARTITIONS   partitions (default 8)
#   DURATION     measured time per run (default 20s); WARMUP (default 3s)
#   ROUNDS       interleaved rounds (default 3)
#   CONSUMERS    consumers (default 1; 0 = produce only)
#   RATE         records/s to produce (default 0: as fast as possible); a fixed rate below every
#                build's maximum compares CPU per GB for the same work on a shared machine
#   CLIENT       loadgen client: kgo (default, franz-go) or native (loadgen's lean client: at 100 B
#                franz-go is the limit, not the broker)
#   OUT          result directory (default results/<UTC date>-<cores>core-storage)
#   PERF_STAT    1: count the brokers' context switches and page faults during each loadgen run
#                (perf stat; the columns ctx_switches_per_gb and page_faults_per_gb)
#   PERF_RECORD  N: perf record -g each broker for N seconds after the warm-up (perf-*.data in OUT;
#                perf, not pprof: on a VM SIGPROF lands late after syscalls); PERF_EVENT picks
#                the event (e.g. page-faults; default cycles)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

BROKERS=${BROKERS:-"sluice:108831f sluice:tree kfake"}
SIZES=${SIZES:-"1024 100"}
PARTITIONS=${PARTITIONS:-8}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
CONSUMERS=${CONSUMERS:-1}
RATE=${RATE:-0}
CLIENT=${CLIENT:-kgo}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-storage}

BIN=$(mktemp -d /tmp/sluice-storage.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT




write_bytes() { awk '/^write_bytes/ { print $2 }' "/proc/$1/io"; }

log "building into $BIN"
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/kfake" ./bench/kfake
for broker in $BROKERS; do
	IFS=: read -r name rev _ <<<"$broker"
	[ "$name" = kfake ] || sluice_binary "$BIN" "$rev" >/dev/null
done
mkdir -p "$OUT"
TSV="$OUT/runs.tsv"
printf 'round\tbroker\tsize\tproduce_rec_s\tproduce_mb_s\tconsume_mb_s\tbroker_cpu_s\tbroker_write_bytes\tproduced_bytes\tcpu_s_per_gb\twrite_ratio\tctx_switches_per_gb\tpage_faults_per_gb\n' >"$TSV"

# run ROUND BROKER SIZE: one fresh broker (or three), one loadgen run.
run() {
	local round=$1 broker=$2 size=$3
	local name rev rf envs
	IFS=: read -r name rev rf envs <<<"$broker"
	rf=${rf:-1}
	local brokerenv=()
	[ -n "$envs" ] && IFS=, read -r -a brokerenv <<<"$envs"
	local dir="$BIN/run-$round-${broker//:/-}-$size"
	mkdir -p "$dir"
	local ports=() pids=()
	if [ "$name" = kfake ]; then
		ports+=("$(free_port)")
		"$BIN/kfake" -port "${ports[0]}" -retention-bytes $(((2 << 30) / PARTITIONS)) >"$dir/broker.log" 2>&1 &
		pids+=($!)
	else
		local n=$rf voters="" i
		local rafts=()
		for ((i = 1; i <= n; i++)); do
			ports+=("$(free_port)")
			rafts+=("$(free_port)")
			voters+="${voters:+,}$i@127.0.0.1:${rafts[$((i - 1))]}"
		done
		for ((i = 1; i <= n; i++)); do
			env "${brokerenv[@]}" "$(sluice_binary "$BIN" "$rev")" serve --node-id "$i" --listen "127.0.0.1:${ports[$((i - 1))]}" \
				--raft-addr "127.0.0.1:${rafts[$((i - 1))]}" --controller-voters "$voters" \
				--data-dir "$dir/data-$i" --replication-factor "$rf" \
				--log-level warn >"$dir/broker-$i.log" 2>&1 &
			pids+=($!)
		done
	fi
	PIDS+=("${pids[@]}")
	for p in "${ports[@]}"; do
		if ! wait_port "$p" 60; then
			log "$broker did not start; its logs: $dir"
			for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
			return 1
		fi
	done
	sleep 1
	local cpu0=0 wb0=0 p
	for p in "${pids[@]}"; do
		cpu0=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$p")" 'BEGIN { print a + b }')
		wb0=$((wb0 + $(write_bytes "$p")))
	done
	local seeds perfpids=() pidlist
	seeds=$(printf '127.0.0.1:%s,' "${ports[@]}")
	pidlist=$(IFS=,; echo "${pids[*]}")
	if [ "${PERF_STAT:-}" = 1 ]; then
		perf stat -x, -e context-switches,page-faults -p "$pidlist" -o "$dir/perfstat.txt" 2>/dev/null &
		perfpids+=($!)
	fi
	if [ -n "${PERF_RECORD:-}" ]; then
		(sleep "${WARMUP%s}" && perf record -g ${PERF_EVENT:+-e "$PERF_EVENT"} -p "$pidlist" -o "$OUT/perf-$round-${broker//:/-}-$size.data" -- sleep "$PERF_RECORD" >/dev/null 2>&1) &
		perfpids+=($!)
	fi
	"$BIN/loadgen" run -brokers "${seeds%,}" -name "storage-$size" -label "$broker" -record-size "$size" \
		-partitions "$PARTITIONS" -replication-factor "$rf" -acks all -idempotent -producers 1 \
		-max-buffered-records 20000 -consumers "$CONSUMERS" -duration "$DURATION" -warmup "$WARMUP" \
		-drain-timeout 20s -client "$CLIENT" -rate "$RATE" -quiet -out "$dir/loadgen" >"$dir/loadgen.log" 2>&1 || log "loadgen failed: $dir/loadgen.log"
	if [ "${PERF_STAT:-}" = 1 ]; then
		kill -INT "${perfpids[0]}" 2>/dev/null || true
	fi
	for p in "${perfpids[@]}"; do wait "$p" 2>/dev/null || true; done
	local ctxsw=0 faults=0
	if [ -f "$dir/perfstat.txt" ]; then
		ctxsw=$(awk -F, '$3 == "context-switches" { print $1 }' "$dir/perfstat.txt")
		faults=$(awk -F, '$3 == "page-faults" { print $1 }' "$dir/perfstat.txt")
	fi
	sync
	local cpu1=0 wb1=0
	for p in "${pids[@]}"; do
		cpu1=$(awk -v a="$cpu1" -v b="$(cpu_seconds "$p")" 'BEGIN { print a + b }')
		wb1=$((wb1 + $(write_bytes "$p")))
	done
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	local res="$dir/loadgen/result.json"
	[ -f "$res" ] || res=$(find "$dir/loadgen" -name result.json | head -1)
	python3 - "$res" "$round" "$broker" "$size" "$cpu0" "$cpu1" "$wb0" "$wb1" "${ctxsw:-0}" "${faults:-0}" >>"$TSV" <<'EOF'
import json, sys
res, rnd, broker, size = sys.argv[1:5]
cpu = float(sys.argv[6]) - float(sys.argv[5])
wb = int(sys.argv[8]) - int(sys.argv[7])
ctxsw, faults = int(sys.argv[9] or 0), int(sys.argv[10] or 0)
r = json.load(open(res))
p, c = r["produce"], r["consume"]
produced = p["bytes"]
print("\t".join(str(x) for x in [rnd, broker, size, round(p["records_per_sec"]), round(p["mb_per_sec"], 1),
      round(c["mb_per_sec"], 1), round(cpu, 2), wb, produced,
      round(cpu / ((produced + c["bytes"]) / 1e9), 3) if produced else 0,
      round(wb / produced, 3) if produced else 0,
      round(ctxsw / ((produced + c["bytes"]) / 1e9)) if produced else 0,
      round(faults / ((produced + c["bytes"]) / 1e9)) if produced else 0]))
EOF
	rm -rf "$dir"/data-*
	tail -1 "$TSV" >&2
}

for size in $SIZES; do
	for ((round = 1; round <= ROUNDS; round++)); do
		for broker in $BROKERS; do
			log "round $round: $broker, $size B"
			run "$round" "$broker" "$size" || log "round $round: $broker, $size B: no result (see above)"
		done
	done
done

python3 - "$TSV" "$BROKERS" >"$OUT/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
brokers = sys.argv[2].split()
cols = ["produce_rec_s", "produce_mb_s", "consume_mb_s", "cpu_s_per_gb", "write_ratio"]
if any(float(r.get("ctx_switches_per_gb") or 0) for r in rows):
    cols += ["ctx_switches_per_gb", "page_faults_per_gb"]
print("| size | broker | " + " | ".join(cols) + " |")
print("|---|---|" + "---|" * len(cols))
def size_bytes(s):  # 100, 1024, 1KiB, 1MiB: loadgen's -record-size forms
    for suffix, mult in (("KiB", 1024), ("MiB", 1 << 20), ("B", 1)):
        if s.endswith(suffix):
            return int(s[: -len(suffix)]) * mult
    return int(s)
for size in sorted({r["size"] for r in rows}, key=size_bytes, reverse=True):
    med = {}
    for b in brokers:
        rs = [r for r in rows if r["size"] == size and r["broker"] == b]
        if rs:
            med[b] = {c: statistics.median(float(r[c]) for r in rs) for c in cols}
            print(f"| {size} | {b} | " + " | ".join(f"{med[b][c]:g}" for c in cols) + " |")
    base = brokers[0]
    for b in brokers[1:]:
        if b in med and base in med:
            print(f"| {size} | {b} / {base} | " + " | ".join(
                f"{med[b][c] / med[base][c]:.2f}x" if med[base][c] else "-" for c in cols) + " |")
EOF
cat "$OUT/summary.md"
log "results in $OUT"
