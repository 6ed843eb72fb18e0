#!/usr/bin/env bash
# bench/latency.sh: tail latency at fixed rates (issue 21). loadgen's open loop (latency counted
# from each record's intended send time, so a stall cannot hide) at 10%, 25% and 50% of the
# measured maximum rate, 100 B and 1 KiB records, 8 partitions, acks=all idempotent, one consumer
# group (bench/workloads/small.yaml), on one sluice broker with kfake beside it at the same rates;
# then three sluice brokers, rf=3, at 25% of their own rf=3 maximum. Every run gets a fresh broker.
#
# It prints, for each run, the per-second p50/p99/p99.9/max of the publish latency (loadgen
# intervals; seconds with p99 > 10 ms marked "<") and at the end one table with the totals and
# the per-second medians. A stall is a marked second, not a slightly higher p99.
#
# Settings (environment variables, all optional):
#   SIZES        record sizes (default "100 1KiB")
#   PCTS         rates as percent of the measured maximum (default "10 25 50"; "" = none, e.g.
#                for only the cluster runs)
#   DURATION     measured time per fixed-rate run (default 60s; the issue's figure)
#   WARMUP       warm-up per run (default 5s)
#   MAX_DURATION measured time of each closed-loop max-rate run (default 15s)
#   SETTLE       seconds to wait after a max-rate run before the fixed-rate runs (default 30)
#   MAX_RATE_100, MAX_RATE_1KiB, ...  skip measuring the maximum for that size and use this
#                rate (records/s); MAX_RATE_RF3_<size> likewise for the cluster
#   BROKERS      single-broker peers, in this order (default "sluice kfake"; "" = none); "base" is
#                sluice built from git revision BASELINE, for before/after runs side by side
#                (e.g. BROKERS="base sluice" BASELINE=main REPEAT=4)
#   BASELINE     the git revision "base" is built from (default main)
#   REPEAT       runs per cell, alternating brokers (default 1)
#   CLUSTER      1 = also the three-broker rf=3 runs at CLUSTER_PCTS (default 1)
#   CLUSTER_PCTS default "25"
#   CLIENT       loadgen client: native (default: loadgen's lean client, ~10x less CPU per
#                record than kgo, so on a 2-core machine the client's own CPU and GC do not show
#                up as the broker's tail) or kgo (franz-go, what applications see)
#   SLUICE_FLAGS extra `sluice serve` flags for the single broker
#   SLUICE_ENV   environment for the sluice processes, e.g. "GOGC=400 GODEBUG=gctrace=1"
#   DEBUG_PORT   serve pprof on 127.0.0.1:DEBUG_PORT from the single sluice broker (for
#                /debug/pprof/trace during a run); default off
#   STALLS       1 = the single sluice broker (and "base", the same way, when it has the flags;
#                else neither) keeps an execution trace of its last seconds and writes it
#                to <run>/stalls/ when a Produce takes STALL_THRESHOLD (default 15ms) or more (serve
#                --debug-stall-trace; at most one per 5 s), each read by bench/stalltrace.py into a .txt
#                beside it; and /metrics is scraped every second into <run>/metrics.log (fsync, the save's fsync wait,
#                snapshot Sync, Produce latency, GC, CPU) to line up with intervals.txt
#   OUT          result directory (default results/<UTC date>-<cores>core-<host>-latency/runs)
#
# Before the runs, bench/fsyncfloor measures the disk itself (<OUT>/fsync-floor.txt): no broker
# acknowledges faster than 8 side-by-side write+fdatasync rounds.
#
# With the defaults: 2 sizes x (max + 3 rates x 2 brokers) x ~70 s + cluster ≈ 20 minutes.
# DURATION=20s gives about 8 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

SIZES=${SIZES:-"100 1KiB"}
PCTS=${PCTS-"10 25 50"}
DURATION=${DURATION:-60s}
WARMUP=${WARMUP:-5s}
MAX_DURATION=${MAX_DURATION:-15s}
SETTLE=${SETTLE:-30}
BROKERS=${BROKERS-"sluice kfake"}
BASELINE=${BASELINE:-main}
REPEAT=${REPEAT:-1}
CLUSTER=${CLUSTER:-1}
CLUSTER_PCTS=${CLUSTER_PCTS:-25}
CLIENT=${CLIENT:-native}
SLUICE_FLAGS=${SLUICE_FLAGS:-}
SLUICE_ENV=${SLUICE_ENV:-}
DEBUG_PORT=${DEBUG_PORT:-}
STALLS=${STALLS:-0}
STALL_THRESHOLD=${STALL_THRESHOLD:-15ms}
BASE_PORT=${BASE_PORT:-34500}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-$(hostname -s 2>/dev/null || echo machine)-latency/runs}

BIN=$(mktemp -d /tmp/sluice-latency.XXXXXX)
cleanup() {
	# Only this script's own running children (brokers, the cluster): no stale process ids.
	local pids
	pids=$(jobs -pr)
	# shellcheck disable=SC2086 # a list of process ids
	[ -n "$pids" ] && kill $pids 2>/dev/null
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT




stop_pid() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
}


log "building sluice, loadgen, kfake and bench/chaos into $BIN"
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/kfake" ./bench/kfake
go build -o "$BIN/chaos" ./bench/chaos
go build -o "$BIN/fsyncfloor" ./bench/fsyncfloor
case " $BROKERS " in
*" base "*)
	log "building sluice at $BASELINE ($(git rev-parse --short "$BASELINE")) as broker \"base\""
	ln -s "$(sluice_binary "$BIN" "$BASELINE")" "$BIN/base"
	;;
esac
STALLS_BOTH=1
case " $BROKERS " in
*" base "*)
	base_help=$("$BIN/base" serve -h 2>&1 || true)
	case $base_help in
	*-debug-stall-trace*) ;;
	*)
		[ "$STALLS" = 1 ] && log "STALLS=1: base ($BASELINE) lacks --debug-stall-trace, so neither sluice build is traced"
		STALLS_BOTH=0
		;;
	esac
	;;
esac
mkdir -p "$OUT"
{
	echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
	case " $BROKERS " in *" base "*) echo "base: $BASELINE = $(git rev-parse --short "$BASELINE")" ;; esac
	echo "nproc $(nproc), memory $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), $(go env GOVERSION)"
	echo "SIZES=$SIZES PCTS=$PCTS DURATION=$DURATION WARMUP=$WARMUP BROKERS=$BROKERS REPEAT=$REPEAT CLUSTER=$CLUSTER"
	echo "SLUICE_FLAGS=$SLUICE_FLAGS SLUICE_ENV=$SLUICE_ENV"
} >"$OUT/settings.txt"
# The builds just wrote ~500 MB (binaries, build cache) that the kernel's flusher writes back 30 s
# later (vm.dirty_expire_centisecs): in the middle of the first run, where it held every fdatasync
# for ~100 ms (a block trace showed the flusher's 8 MiB writes in the very seconds with p99 near
# 100 ms). Written back now, and again before each run.
sync
# The disk's own floor, in the directory the brokers' data goes to: 8 partitions' writes and
# fdatasyncs side by side, as one save of the workload's 8 partitions (bench/fsyncfloor).
log "$("$BIN/fsyncfloor" -dir "$BIN" -files 8 -size 2048 -duration 10s | tee "$OUT/fsync-floor.txt")"

# start_broker NAME DIR: starts one broker, sets BROKER_PID and BROKER_ADDR (and, with STALLS=1,
# METRICS_PORT for a sluice broker).
start_broker() {
	local name=$1 dir=$2 port
	port=$(free_port)
	METRICS_PORT=
	case $name in
	kfake)
		"$BIN/kfake" -port "$port" -retention-bytes $((256 << 20)) >"$dir/broker.log" 2>&1 &
		;;
	sluice | base)
		local dbg=()
		[ -n "$DEBUG_PORT" ] && dbg=(--debug-addr "127.0.0.1:$DEBUG_PORT")
		# Both sluice builds of a before/after run get the same tracing and scraping (they cost
		# latency themselves: giving them to one side only biased every such comparison), or,
		# when "base" predates the flags, neither does.
		if [ "$STALLS" = 1 ] && [ "$STALLS_BOTH" = 1 ]; then
			METRICS_PORT=$(free_port)
			dbg+=(--debug-stall-trace "$dir/stalls" --debug-stall-threshold "$STALL_THRESHOLD" --metrics-addr "127.0.0.1:$METRICS_PORT")
		fi
		mkdir -p "$BIN/data-$port"
		# shellcheck disable=SC2086 # SLUICE_ENV and SLUICE_FLAGS are lists
		env $SLUICE_ENV "$BIN/$name" serve --listen "127.0.0.1:$port" --data-dir "$BIN/data-$port" \
			--raft-addr "127.0.0.1:$(free_port)" "${dbg[@]}" $SLUICE_FLAGS >"$dir/broker.log" 2>&1 &
		;;
	esac
	BROKER_PID=$!
	BROKER_ADDR=127.0.0.1:$port
	wait_port "$port" 60
}

# scrape_metrics FILE PID: /metrics of METRICS_PORT every second into FILE while PID runs.
scrape_metrics() {
	local file=$1 pid=$2 tmp
	tmp=$(mktemp)
	while kill -0 "$pid" 2>/dev/null; do
		if curl -s -m 1 "http://127.0.0.1:$METRICS_PORT/metrics" -o "$tmp" 2>/dev/null; then
			{
				echo "# T $(date +%s.%N)"
				grep -E '^(sluice_fsync|sluice_snapshot|sluice_raft_commit|sluice_raft_save_sync|sluice_request_duration_seconds_(bucket|count|sum)[{]api="Produce"|go_gc_duration|go_memstats_alloc_bytes_total|process_cpu)' "$tmp"
			} >>"$file"
		fi
		sleep 1
	done
	rm -f "$tmp"
}

# loadgen_run DIR ADDRS SIZE RATE [more loadgen flags]: one run into DIR; load average beside it.
loadgen_run() {
	local dir=$1 addrs=$2 size=$3 rate=$4
	shift 4
	local load0
	sync # nothing of the previous run (its output, a deleted broker's files) left for the flusher
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	if ! "$BIN/loadgen" run -workload bench/workloads/small.yaml -brokers "$addrs" -out "$dir" \
		-record-size "$size" -rate "$rate" -duration "$DURATION" -warmup "$WARMUP" -drain-timeout 10s -client "$CLIENT" "$@" \
		>"$dir/stdout.txt" 2>"$dir/progress.log"; then
		log "run failed: $(tail -n 1 "$dir/progress.log")"
	fi
	echo "load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after" >"$dir/load.txt"
}

# max_rate DIR ADDRS SIZE [flags]: closed-loop records/s.
max_rate() {
	local dir=$1 addrs=$2 size=$3
	shift 3
	mkdir -p "$dir"
	"$BIN/loadgen" run -workload bench/workloads/small.yaml -brokers "$addrs" -out "$dir" -record-size "$size" \
		-rate 0 -duration "$MAX_DURATION" -warmup 3s -drain-timeout 10s -consumers 0 -client "$CLIENT" -quiet "$@" \
		>"$dir/stdout.txt" 2>"$dir/progress.log" || true
	python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["produce"]["records_per_sec"]))' "$dir/result.json"
	# A maximum-rate run writes and then deletes gigabytes; on this VM's disk (ext4 -o discard on
	# virtio) the next ~20 s of fdatasyncs then took tens of milliseconds every other second: the
	# first fixed-rate run after it had 6-7 seconds over 10 ms, the ones after none. Let the
	# disk settle before the fixed-rate runs.
	sync
	sleep "$SETTLE"
}

show() { # prints a run's per-second table
	echo "== $1" >&2
	"$BIN/loadgen" intervals "$2" >&2 || true
}

for size in $SIZES; do
	var=MAX_RATE_${size}
	max=${!var:-}
	if [ -z "$PCTS" ] || [ -z "$BROKERS" ]; then
		continue # no single-broker cells for this size
	fi
	if [ -z "$max" ]; then
		dir="$OUT/$size/max"
		mkdir -p "$dir"
		start_broker sluice "$dir"
		max=$(max_rate "$dir" "$BROKER_ADDR" "$size")
		stop_pid "$BROKER_PID"
		log "size $size: sluice max rate $max rec/s (closed loop, no consumer)"
	fi
	echo "$max" >"$OUT/$size-max-rate.txt"
	for pct in $PCTS; do
		rate=$((max * pct / 100))
		for ((rep = 1; rep <= REPEAT; rep++)); do
			order=$BROKERS
			# Alternate the order on even repetitions so drift hits both brokers alike.
			if ((rep % 2 == 0)); then order=$(echo "$BROKERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
			for b in $order; do
				dir="$OUT/$size/$pct/$b-$rep"
				rm -rf "$dir"
				mkdir -p "$dir"
				start_broker "$b" "$dir"
				cpu0=$(cpu_seconds "$BROKER_PID")
				log "size $size, $pct% = $rate rec/s, $b, run $rep"
				spid=
				if [ -n "$METRICS_PORT" ]; then
					scrape_metrics "$dir/metrics.log" "$BROKER_PID" &
					spid=$!
				fi
				loadgen_run "$dir" "$BROKER_ADDR" "$size" "$rate" -label "$b-$size-$pct%"
				echo "broker CPU $(awk -v a="$cpu0" -v b="$(cpu_seconds "$BROKER_PID")" 'BEGIN { printf "%.1f", b - a }') s, peak RSS $(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$BROKER_PID/status" 2>/dev/null) MiB" >"$dir/broker.txt"
				stop_pid "$BROKER_PID"
				if [ -n "$spid" ]; then wait "$spid" || true; fi
				for t in "$dir"/stalls/*.trace; do
					if [ -f "$t" ]; then python3 bench/stalltrace.py "$t" 5 >"${t%.trace}.txt" 2>&1 || true; fi
				done
				show "$size $pct% $rate rec/s $b run $rep" "$dir"
			done
		done
	done
done

if [ "$CLUSTER" = 1 ]; then
	DATA=$BIN/cluster
	# shellcheck disable=SC2086 # SLUICE_ENV is a list
	env $SLUICE_ENV "$BIN/chaos" -mode serve -sluice "$BIN/sluice" -data-dir "$DATA" -base-port "$BASE_PORT" \
		-broker-flags "$SLUICE_FLAGS" >"$OUT/cluster.log" 2>&1 &
	CPID=$!
	for ((i = 0; i < 600; i++)); do
		grep -q '^cluster up' "$OUT/cluster.log" && break
		sleep 0.1
	done
	ADDRS="127.0.0.1:$((BASE_PORT + 192)),127.0.0.1:$((BASE_PORT + 292)),127.0.0.1:$((BASE_PORT + 392))"
	for size in $SIZES; do
		var=MAX_RATE_RF3_${size}
		max=${!var:-}
		if [ -z "$max" ]; then
			max=$(max_rate "$OUT/$size/rf3-max" "$ADDRS" "$size" -replication-factor 3 -partitions 8)
			log "size $size: three brokers rf=3 max rate $max rec/s"
		fi
		echo "$max" >"$OUT/$size-rf3-max-rate.txt"
		for pct in $CLUSTER_PCTS; do
			rate=$((max * pct / 100))
			for ((rep = 1; rep <= REPEAT; rep++)); do
				dir="$OUT/$size/rf3-$pct/sluice-$rep"
				rm -rf "$dir"
				mkdir -p "$dir"
				log "size $size, rf=3, $pct% = $rate rec/s, run $rep"
				loadgen_run "$dir" "$ADDRS" "$size" "$rate" -replication-factor 3 -label "rf3-$size-$pct%"
				show "$size rf=3 $pct% $rate rec/s run $rep" "$dir"
			done
		done
	done
	stop_pid "$CPID"
	cp "$DATA"/broker-*.log "$OUT/" 2>/dev/null || true
fi

# One table: totals and per-second figures for every run. "stall seconds" are seconds whose p99 is
# above 10 ms; "of them broker's" counts those in which loadgen's own probe woke on time (<= 5 ms
# late), i.e. neither the client nor the machine stalled.
python3 - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import json, os, re, sys
out = sys.argv[1]
print("| size | cell | run | rate rec/s | publish p50 / p99 / p99.9 / max ms | per-second p99 median / worst | stall seconds (p99 > 10 ms) | of them broker's | loadgen late max ms | e2e p99 ms | load avg before / after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
pat = re.compile(r"(\d+) seconds: median p99 (\S+), worst p99 (\S+), max (\S+), (\d+) with[^;]*(?:; loadgen woke late by at most (\S+) ms; (\d+) marked)?")
for root, dirs, files in sorted(os.walk(out)):
    if "result.json" not in files or root.endswith("max"):
        continue
    r = json.load(open(os.path.join(root, "result.json")))
    p, e = r["publish_latency"], r["end_to_end_latency"]
    m = None
    if os.path.exists(os.path.join(root, "intervals.txt")):
        m = pat.search(open(os.path.join(root, "intervals.txt")).read())
    load = "-"
    if os.path.exists(os.path.join(root, "load.txt")):
        w = open(os.path.join(root, "load.txt")).read().split()
        load = f"{w[2]} / {w[6]}"  # 1-minute load average before / after
    rel = os.path.relpath(root, out).split(os.sep)
    f = lambda us: f"{us/1000:.2f}"
    sec = f"{m.group(2)} / {m.group(3)}" if m else "-"
    over = f"{m.group(5)} of {m.group(1)}" if m else "-"
    mine = m.group(7) if m and m.group(7) else "-"
    late = m.group(6) if m and m.group(6) else "-"
    print(f"| {rel[0]} | {rel[1]} | {rel[2]} | {r['workload']['rate']:.0f} | {f(p['p50_us'])} / {f(p['p99_us'])} / {f(p['p99_9_us'])} / {f(p['max_us'])} | {sec} | {over} | {mine} | {late} | {f(e['p99_us'])} | {load} |")
PYEOF
log "results in $OUT"
