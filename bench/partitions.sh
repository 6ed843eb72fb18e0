#!/usr/bin/env bash
# bench/partitions.sh: one broker with many partitions (issue 14), before and after in one run.
# Builds `sluice` from each git revision CASES names ("tree": the working tree), then runs
# bench/partitions for each "label|revision|partitions|serve flags" line of CASES in turn: creation time,
# idle CPU over IDLE, RSS, real disk (allocated blocks), p99 of acks=all produce at RATE rec/s over all
# partitions, restart-to-all-writable. JSON lines go to $OUT (default stdout), summaries to stderr;
# with PROFILES=dir, a CPU profile of each idle window goes there.
#
# Disk: tan reserves 64 MiB per partition and (before the growing preallocation) the segment another
# 64 MiB: keep N x 128 MiB of the "before" cases under the free disk you may use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
# A partition holds 1 file open for good (its active segment; Raft metadata files share a cache of a
# quarter of the limit): 10,000 partitions need more descriptors than a default limit allows (Kafka asks for
# 100,000 too). Raise it where we may (root), else keep what there is.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
IDLE=${IDLE:-60s}
RATE=${RATE:-1000}
PRODUCE=${PRODUCE:-30s}
CREATE_CONCURRENCY=${CREATE_CONCURRENCY:-1} # CreateTopics requests in flight (one topic each)
PORT=${PORT:-23092} # below the ephemeral range (32768-60999 on Linux): a client socket can hold a port above it
OUT=${OUT:-/dev/stdout}
WORK=$(mktemp -d /tmp/sluice-partitions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
binary() { sluice_binary "$WORK" "$1"; }
go build -o "$WORK/partitions" ./bench/partitions
# label|revision|partitions|serve flags
CASES=${CASES:-"
before-tan|aa53930|64|
main-segment|main|64|--raft-log segment
after-segment|tree|64|--raft-log segment
after-segment-quiesce|tree|64|--raft-log segment --raft-quiesce
after-segment|tree|1000|--raft-log segment
after-segment-quiesce|tree|1000|--raft-log segment --raft-quiesce
"}
echo "# tree: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty) (built once, first use), main: $(git rev-parse --short main), $(date -u +%FT%TZ)" >&2
while IFS='|' read -r label rev n flags; do
	[ -z "$label" ] && continue
	bin=$(binary "$rev")
	echo "# $label: $rev $n partitions $flags" >&2
	prof=()
	[ -n "${PROFILES:-}" ] && prof=(-profile "$PROFILES/$label-$n.pprof" -restart-profile "${RESTART_PROFILE:-20s}")
	"$WORK/partitions" -sluice "$bin" -partitions "$n" -idle "$IDLE" -rate "$RATE" "${prof[@]}" \
		-produce "$PRODUCE" -create-concurrency "$CREATE_CONCURRENCY" -port "$PORT" -dir "$WORK" -label "$label" -flags "$flags" >>"$OUT" ||
		{ echo "case $label failed; broker log tail:" >&2; tail -20 "$WORK/broker.log" >&2; }
	rm -f "$WORK/broker.log"
done <<<"$CASES"
