#!/usr/bin/env bash
# bench/partitions-idle.sh: idle CPU of one broker per configuration, all running at once with N
# partitions each and sampled over the same windows, so that a shared, noisy machine weighs on every
# configuration alike (sequential runs of bench/partitions differed 4x for the same configuration).
# CONFIGS: "label|serve flags|revision" lines (revision: a git revision to build sluice from, default
# "tree", the working tree). Prints CPU % of a core per window and the median per config.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${N:-500}
WINDOWS=${WINDOWS:-5}
WINDOW=${WINDOW:-20}
PORT=${PORT:-23200} # below the ephemeral range (32768-60999 on Linux): a client socket can hold a port above it
CONFIGS=${CONFIGS:-"
tick20ms|--raft-tick 20ms
tick20ms-quiesce|--raft-tick 20ms --raft-quiesce
tick50ms|--raft-tick 50ms
tick100ms|--raft-tick 100ms
"}
WORK=$(mktemp -d /tmp/sluice-pidle.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
go build -o "$WORK/sluice" ./cmd/sluice
labels=()
i=0
while IFS='|' read -r label flags rev; do
	[ -z "$label" ] && continue
	p=$((PORT + 10 * i))
	bin=$(sluice_binary "$WORK" "${rev:-tree}")
	# shellcheck disable=SC2086
	"$bin" serve --listen "127.0.0.1:$p" --raft-addr "127.0.0.1:$((p + 1))" --data-dir "$WORK/$label" \
		--log-level warn --auto-create-topics=false $flags >"$WORK/$label.log" 2>&1 &
	PIDS+=($!)
	labels+=("$label:$p")
	i=$((i + 1))
done <<<"$CONFIGS"
for lp in "${labels[@]}"; do
	for ((t = 0; t < 300; t++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/${lp##*:}") 2>/dev/null && break
		sleep 0.1
	done
done
for lp in "${labels[@]}"; do
	p=${lp##*:}
	created=$SECONDS
	for ((t = 0; t * 50 < N; t++)); do
		n=$((N - t * 50 < 50 ? N - t * 50 : 50))
		"$WORK/sluice" topics --bootstrap "127.0.0.1:$p" --partitions "$n" create "t$t" >/dev/null ||
			{ tail -20 "$WORK/${lp%%:*}.log" >&2; exit 1; }
	done
	echo "# ${lp%%:*}: $N partitions created in $((SECONDS - created)) s" >&2
done
sleep 15
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A samples
for ((w = 1; w <= WINDOWS; w++)); do
	declare -A c0
	for j in "${!PIDS[@]}"; do c0[$j]=$(ticks "${PIDS[$j]}"); done
	sleep "$WINDOW"
	line="window $w:"
	for j in "${!PIDS[@]}"; do
		pct=$(awk -v a="${c0[$j]}" -v b="$(ticks "${PIDS[$j]}")" -v w="$WINDOW" 'BEGIN{printf "%.1f", (b-a)/w}')
		samples[$j]+="$pct "
		line+=" ${labels[$j]%%:*}=$pct%"
	done
	echo "$line"
done
for j in "${!PIDS[@]}"; do
	med=$(echo "${samples[$j]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
	rss=$(awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/${PIDS[$j]}/status")
	fds=$(find "/proc/${PIDS[$j]}/fd" -mindepth 1 -maxdepth 1 | wc -l)
	echo "${labels[$j]%%:*}: median idle CPU $med% of a core over $WINDOWS x ${WINDOW}s, RSS $rss MiB, $fds open files, $N partitions"
done
