#!/usr/bin/env bash
# bench/run.sh: build loadgen and the brokers, run every workload against every broker on
# loopback, one broker after the other with the same settings, and write
# results/<date>-<machine>/ with one result directory per run, a comparison (table, SVG and
# PNG charts) per workload, loadgen's own ceiling, and a README.md linking it all.
#
# Each run gets a fresh broker process (and a fresh data directory), so runs do not share state.
#
# Settings (environment variables, all optional):
#   BROKERS          brokers to compare, in this order (default "kfake sluice"; sluice is skipped
#                    with a note if `sluice serve` cannot be built or does not start)
#   WORKLOADS        workload files (default: bench/workloads/small.yaml omb-classic.yaml large.yaml)
#   DURATION         measured time per run (default 60s)
#   WARMUP           warm-up per run (default 10s)
#   DRAIN            time allowed after producing for acknowledgements and consumers (default 20s)
#   CONSUMER_GROUPS  override every workload's consumer_groups (0 = consumers split the partitions
#                    without a group coordinator, for brokers that lack consumer groups)
#   EXTRA            more loadgen flags for every run (e.g. "-compression lz4")
#   OUT              result directory (default results/<UTC date>-<MACHINE>)
#   MACHINE          machine name for the directory (default: <cores>core-<short host name>)
#   CEILING          1 = also measure loadgen's generator ceiling with its Go benchmark (default 1)
#   SLUICE_FLAGS     more `sluice serve` flags (default none: Kafka's 1 GiB segments, preallocated
#                    64 MiB at a time)
#   KFAKE_MEMORY     bytes kfake may keep per workload, split evenly over its partitions as
#                    retention (kfake holds everything in memory; default 2147483648)
#
# With the defaults the whole script takes about 12-15 minutes on a 2-core machine;
# DURATION=10s WARMUP=2s gives a 3-minute smoke run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

BROKERS=${BROKERS:-"kfake sluice"}
WORKLOADS=${WORKLOADS:-"bench/workloads/small.yaml bench/workloads/omb-classic.yaml bench/workloads/large.yaml"}
DURATION=${DURATION:-60s}
WARMUP=${WARMUP:-10s}
DRAIN=${DRAIN:-20s}
CONSUMER_GROUPS=${CONSUMER_GROUPS:-}
EXTRA=${EXTRA:-}
MACHINE=${MACHINE:-$(nproc)core-$(hostname -s 2>/dev/null || echo machine)}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$MACHINE}
CEILING=${CEILING:-1}
SLUICE_FLAGS=${SLUICE_FLAGS:-}
KFAKE_MEMORY=${KFAKE_MEMORY:-2147483648}

BIN=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT





log "building loadgen and the brokers into $BIN"
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/kfake" ./bench/kfake
SLUICE_OK=0
if go build -o "$BIN/sluice" ./cmd/sluice 2>"$BIN/sluice-build.log"; then
	SLUICE_OK=1
fi

mkdir -p "$OUT"
NOTES=()

# start_broker NAME PORT DIR PARTITIONS: starts the broker and sets BROKER_PID.
start_broker() {
	local name=$1 port=$2 dir=$3 partitions=$4
	case $name in
	kfake)
		"$BIN/kfake" -port "$port" -retention-bytes $((KFAKE_MEMORY / partitions)) >"$dir/broker.log" 2>&1 &
		;;
	sluice)
		mkdir -p "$BIN/data-$port"
		# shellcheck disable=SC2086 # SLUICE_FLAGS is a list of flags
		"$BIN/sluice" serve --listen "127.0.0.1:$port" --data-dir "$BIN/data-$port" \
			--raft-addr "127.0.0.1:$(free_port)" $SLUICE_FLAGS >"$dir/broker.log" 2>&1 &
		;;
	*)
		echo "unknown broker $name" >&2
		return 1
		;;
	esac
	BROKER_PID=$!
}

# stop_broker PID: asks the broker to stop and waits for it (at most 30 s, then kills it).
stop_broker() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
}

for wl in $WORKLOADS; do
	wname=$(awk '/^name:/ { print $2; exit }' "$wl")
	[ -n "$wname" ] || wname=$(basename "$wl" .yaml)
	partitions=$(awk '/^topics:/ { t = $2 } /^partitions:/ { p = $2 } END { print (t ? t : 1) * (p ? p : 8) }' "$wl")
	runs=()
	for broker in $BROKERS; do
		if [ "$broker" = sluice ] && [ "$SLUICE_OK" != 1 ]; then
			NOTES+=("sluice was skipped: cmd/sluice did not build ($(head -c 300 "$BIN/sluice-build.log"))")
			continue
		fi
		dir="$OUT/$wname/$broker"
		rm -rf "$dir"
		mkdir -p "$dir"
		port=$(free_port)
		start_broker "$broker" "$port" "$dir" "$partitions"
		pid=$BROKER_PID
		PIDS+=("$pid")
		if ! wait_port "$port" 60; then
			NOTES+=("$broker did not start for $wname (see $wname/$broker/broker.log)")
			stop_broker "$pid"
			continue
		fi
		log "$wname on $broker (127.0.0.1:$port): warm-up $WARMUP, duration $DURATION"
		args=(run -workload "$wl" -brokers "127.0.0.1:$port" -label "$broker" -out "$dir"
			-duration "$DURATION" -warmup "$WARMUP" -drain-timeout "$DRAIN")
		if [ -n "$CONSUMER_GROUPS" ]; then
			args+=(-consumer-groups "$CONSUMER_GROUPS")
		fi
		cpu0=$(cpu_seconds "$pid")
		load0=$(cut -d' ' -f1-3 /proc/loadavg)
		# shellcheck disable=SC2086 # EXTRA is a list of flags
		if "$BIN/loadgen" "${args[@]}" $EXTRA >"$dir/stdout.txt" 2>"$dir/progress.log"; then
			runs+=("$dir")
		else
			NOTES+=("$wname on $broker failed: $(tail -n 1 "$dir/progress.log")")
		fi
		cpu1=$(cpu_seconds "$pid")
		# The broker's CPU over the run (warm-up and drain included) and its peak memory.
		# The machine's load average before and after tells whether something else competed for the cores.
		echo "$broker: CPU $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }') s, peak RSS $(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null) MiB; machine load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after" >"$dir/broker.txt"
		stop_broker "$pid"
		rm -rf "$BIN/data-$port"
		cat "$dir/stdout.txt" >&2
	done
	if [ ${#runs[@]} -gt 0 ]; then
		"$BIN/loadgen" compare -out "$OUT/$wname" -title "$wname" "${runs[@]}" >/dev/null
	fi
done

if [ "$CEILING" = 1 ]; then
	log "measuring loadgen's generator ceiling (Go benchmark, no client, no broker)"
	go test ./loadgen -run '^$' -bench Generator -benchtime 2000000x -count 1 >"$OUT/loadgen-ceiling.txt" 2>&1 || true
fi

# The README: machine, settings, then per workload its table and charts.
{
	echo "# Benchmark run $(basename "$OUT")"
	echo
	echo "Written by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo
	echo "## Machine"
	echo
	echo "- CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores"
	echo "- memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "- kernel: $(uname -sr)"
	echo "- Go: $(go env GOVERSION)"
	echo "- brokers and loadgen on the same machine, over loopback (127.0.0.1)"
	echo
	echo "## Settings"
	echo
	echo "- brokers: $BROKERS; each run starts a fresh broker process"
	echo "- kfake keeps at most $KFAKE_MEMORY bytes per workload in memory (retention split over the partitions); sluice flags: $SLUICE_FLAGS"
	echo "- warm-up $WARMUP, measured $DURATION, drain $DRAIN per run"
	echo "- consumer groups: ${CONSUMER_GROUPS:-as in each workload file}${CONSUMER_GROUPS:+ (0 = consumers split the partitions without a group coordinator)}"
	[ -n "$EXTRA" ] && echo "- extra loadgen flags: $EXTRA"
	echo
	for wl in $WORKLOADS; do
		wname=$(awk '/^name:/ { print $2; exit }' "$wl")
		[ -d "$OUT/$wname" ] || continue
		echo "## $wname ([workload]($(realpath --relative-to="$OUT" "$wl")))"
		echo
		if [ -f "$OUT/$wname/compare.txt" ]; then
			echo '```'
			cat "$OUT/$wname/compare.txt"
			echo '```'
			echo
		fi
		for b in $BROKERS; do
			[ -f "$OUT/$wname/$b/summary.txt" ] || continue
			echo "- $b: [summary]($wname/$b/summary.txt), [result.json]($wname/$b/result.json), [progress]($wname/$b/progress.log); broker $(cat "$OUT/$wname/$b/broker.txt")"
		done
		echo
		for c in e2e-latency publish-latency; do
			[ -f "$OUT/$wname/$c.png" ] && echo "![$wname $c]($wname/$c.png) ([SVG]($wname/$c.svg))"
		done
		echo
	done
	if [ -f "$OUT/loadgen-ceiling.txt" ]; then
		echo "## loadgen's own ceiling"
		echo
		echo '```'
		grep -E '^(Benchmark|cpu:)' "$OUT/loadgen-ceiling.txt" || true
		echo '```'
		echo
	fi
	if [ ${#NOTES[@]} -gt 0 ]; then
		echo "## Notes"
		echo
		for n in "${NOTES[@]}"; do
			echo "- $n"
		done
	fi
} >"$OUT/README.md"
log "done: $OUT/README.md"
