#!/usr/bin/env bash
# bench/bakeoff.sh: the network backend bake-off (issue 7). For every record size and connection
# count it runs loadgen against a fresh `sluice serve --netio B` for each backend B, interleaved
# (std, gnet, uring for one cell, then the next cell), first at max rate (closed loop), then at a
# fixed rate of half the lowest max rate the backends reached in that cell (open loop, the same
# offered load for all). Per run it records loadgen's result.json and the broker's user and system
# CPU seconds (/proc/<pid>/stat) and peak RSS, and writes $OUT/cells.tsv and $OUT/table.md.
#
# A "connection" is one producer client (franz-go kgo): its produce connection (plus the metadata
# connection every kgo client keeps). One direct consumer (no group) reads everything back over its
# own connection, so the fetch path (file ranges) runs too. The records in flight are bounded in
# total, not per connection (see inflight below), so 1,000 connections of 1 MiB records stay in memory.
#
# PASSES (default 2) repeats the whole matrix, the backends' order reversed on every other pass, so
# drift in the machine's load and order effects show up as disagreement between passes.
#
# Settings (environment, optional): BACKENDS ("std gnet uring"), SIZES ("100 1024 1048576"),
# CONNS ("1 64 1000"), RATES ("max half"), WARMUP (2s), DURATION (8s), DRAIN (10s; DRAIN_LARGE 30s
# for 1 MiB records),
# OUT (results/<date>-<cores>core-vm-bakeoff), PORT_BASE (32000; brokers use PORT_BASE..+99 and
# raft ports +500).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BACKENDS=${BACKENDS:-"std gnet uring"}
SIZES=${SIZES:-"100 1024 1048576"}
CONNS=${CONNS:-"1 64 1000"}
RATES=${RATES:-"max half"}
WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-8s}
DRAIN=${DRAIN:-10s}
DRAIN_LARGE=${DRAIN_LARGE:-30s}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-vm-bakeoff}
PORT_BASE=${PORT_BASE:-32000}
PASSES=${PASSES:-2}

BIN=$(mktemp -d /tmp/sluice-bakeoff.XXXXXX)
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT

log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/sluice" ./cmd/sluice
if [[ " $BACKENDS " == *" uring-ring "* ]]; then
	# uring-ring: the io_uring backend writing only through the ring (no direct sendmsg first).
	go build -ldflags "-X github.com/sluicebroker/sluice/netio.uringSend=ring" -o "$BIN/sluice-ring" ./cmd/sluice
fi
mkdir -p "$OUT/runs"
TSV=$OUT/cells.tsv
printf 'pass\tsize\tconns\tmode\tbackend\ttarget_rate\trec_s\tMB_s\tpub_p50_ms\tpub_p99_ms\tpub_p999_ms\tpub_max_ms\te2e_p50_ms\te2e_p99_ms\te2e_p999_ms\te2e_max_ms\tbroker_user_s\tbroker_sys_s\tproduced_MB\tcpu_s_per_MB\tpeak_rss_MiB\terrors\tcomplete\tload1\n' >"$TSV"

# user_sys PID prints the process's user and system CPU seconds.
user_sys() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f %.2f", $14 / hz, $15 / hz }' "/proc/$1/stat"
}

wait_port() {
	local i
	for ((i = 0; i < 600; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		kill -0 "$BROKER_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

stop_broker() {
	local i
	kill "$BROKER_PID" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$BROKER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$BROKER_PID" 2>/dev/null || true
	wait "$BROKER_PID" 2>/dev/null || true
	BROKER_PID=
}

# inflight SIZE CONNS: records in flight per producer, from a total bound per size.
inflight() {
	local total
	case $1 in
	100) total=20000 ;;
	1024) total=10000 ;;
	*) total=$((64 * 1048576 / $1)) ;;
	esac
	echo $((total / $2 > 0 ? total / $2 : 1))
}

run=0
# cell SIZE CONNS MODE BACKEND RATE: one loadgen run on a fresh broker; appends a line to the TSV.
cell() {
	local size=$1 conns=$2 mode=$3 backend=$4 rate=$5
	local port=$((PORT_BASE + run % 100)) dir="$OUT/runs/$pass-$size-$conns-$mode-$backend"
	run=$((run + 1))
	rm -rf "$dir" "$BIN/data"
	mkdir -p "$dir"
	local bin=$BIN/sluice netio=$backend
	if [ "$backend" = uring-ring ]; then
		bin=$BIN/sluice-ring netio=uring
	fi
	"$bin" serve --listen "127.0.0.1:$port" --raft-addr "127.0.0.1:$((port + 500))" \
		--data-dir "$BIN/data" --netio "$netio" --segment-bytes 268435456 \
		--max-message-bytes 4194304 >"$dir/broker.log" 2>&1 &
	BROKER_PID=$!
	if ! wait_port "$port"; then
		log "broker $backend did not start; see $dir/broker.log"
		stop_broker
		return 0
	fi
	local batch=1048576 fetch=1048576 drain=$DRAIN
	if [ "$size" -ge 1048576 ]; then
		batch=$((2 * size))
		fetch=$((4 * size))
		drain=$DRAIN_LARGE # up to a record per connection in flight: slow to drain at 1,000
	fi
	local cpu0 cpu1 load
	cpu0=$(user_sys "$BROKER_PID")
	load=$(cut -d' ' -f1 /proc/loadavg)
	"$BIN/loadgen" run -quiet -brokers "127.0.0.1:$port" -label "$backend" -out "$dir" \
		-name "$size-$conns-$mode" -record-size "$size" -partitions 8 -producers "$conns" \
		-rate "$rate" -max-buffered-records "$(inflight "$size" "$conns")" -linger 1ms \
		-batch-max-bytes "$batch" -consumer-groups 0 -consumers 1 -fetch-max-partition-bytes "$fetch" \
		-warmup "$WARMUP" -duration "$DURATION" -drain-timeout "$drain" >"$dir/stdout.txt" 2>"$dir/progress.log" ||
		log "loadgen failed: $(tail -n 1 "$dir/progress.log")"
	cpu1=$(user_sys "$BROKER_PID")
	local rss
	rss=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$BROKER_PID/status")
	stop_broker
	if [ ! -f "$dir/result.json" ]; then
		printf '%s\t%s\t%s\t%s\t%s\t%s\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t\t%s\tfailed\tfalse\t%s\n' "$pass" "$size" "$conns" "$mode" "$backend" "$rate" "$rss" "$load" >>"$TSV"
		return 0
	fi
	jq -r --arg pass "$pass" --arg size "$size" --arg conns "$conns" --arg mode "$mode" --arg backend "$backend" \
		--arg cpu0 "$cpu0" --arg cpu1 "$cpu1" --arg rss "$rss" --arg load "$load" '
		def ms: . / 1000 | . * 100 | round / 100;
		($cpu0 | split(" ") | map(tonumber)) as $a | ($cpu1 | split(" ") | map(tonumber)) as $b |
		($b[0] - $a[0]) as $u | ($b[1] - $a[1]) as $s | (.produce.bytes / 1e6) as $mb |
		[$pass, $size, $conns, $mode, $backend, .schedule.target_rate, (.produce.records_per_sec | round),
		 (.produce.mb_per_sec * 100 | round / 100),
		 (.publish_latency.p50_us | ms), (.publish_latency.p99_us | ms), (.publish_latency.p99_9_us | ms), (.publish_latency.max_us | ms),
		 (.end_to_end_latency.p50_us | ms), (.end_to_end_latency.p99_us | ms), (.end_to_end_latency.p99_9_us | ms), (.end_to_end_latency.max_us | ms),
		 ($u * 100 | round / 100), ($s * 100 | round / 100), ($mb | round),
		 (if $mb > 0 then (($u + $s) / $mb * 10000 | round / 10000) else 0 end), $rss,
		 ((.produce_errors // {}) | add // 0), .check.complete, $load] | @tsv' "$dir/result.json" >>"$TSV"
	tail -n 1 "$TSV" >&2
}

log "bake-off: backends $BACKENDS, sizes $SIZES, connections $CONNS, warm-up $WARMUP, measured $DURATION; out $OUT"
for ((pass = 1; pass <= PASSES; pass++)); do
order=$BACKENDS
if ((pass % 2 == 0)); then
	order=$(echo "$BACKENDS" | tr ' ' '\n' | tac | tr '\n' ' ')
fi
for size in $SIZES; do
	for conns in $CONNS; do
		if [[ " $RATES " == *" max "* ]]; then
			for b in $order; do
				cell "$size" "$conns" max "$b" 0
			done
		fi
		if [[ " $RATES " == *" half "* ]]; then
			# Half the lowest max rate of this cell: an offered load every backend can carry.
			half=$(awk -F'\t' -v p="$pass" -v s="$size" -v c="$conns" '$1 == p && $2 == s && $3 == c && $4 == "max" && $7 > 0 {
				if (min == "" || $7 < min) min = $7 } END { printf "%d", (min == "" ? 0 : min / 2) }' "$TSV")
			if [ "$half" -lt 1 ]; then
				log "no max rate for $size B x $conns: half-rate cells skipped"
				continue
			fi
			for b in $order; do
				cell "$size" "$conns" half "$b" "$half"
			done
		fi
	done
done
done

{
	echo "Machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores, $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), $(go env GOVERSION)."
	echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- netio cmd || echo ' (with uncommitted changes)')."
	echo "Warm-up $WARMUP, measured $DURATION, drain $DRAIN per run; written by bench/bakeoff.sh on $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo
	echo "| pass | size | conns | rate | backend | rec/s | MB/s | publish p50 / p99 / p99.9 / max ms | e2e p50 / p99 / p99.9 / max ms | broker user+sys s | CPU s/MB | peak RSS MiB | load1 |"
	echo "|---|---|---:|---|---|---:|---:|---|---|---|---:|---:|---:|"
	awk -F'\t' 'NR > 1 {
		rate = ($4 == "max" ? "max" : sprintf("%d/s", $6))
		printf "| %s | %s | %s | %s | %s | %s | %s | %s / %s / %s / %s | %s / %s / %s / %s | %s + %s | %s | %s | %s |\n",
			$1, $2, $3, rate, $5, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $20, $21, $24 }' "$TSV"
} >"$OUT/table.md"
log "done: $OUT/table.md"
