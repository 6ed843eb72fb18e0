#!/usr/bin/env bash
# bench/partitions.sh: one broker with many partitions (issue 14), before and after in one run.
# Builds `sluice` from BEFORE (a git revision, default main) and from the working tree, then runs
# bench/partitions for each "label|binary|partitions|serve flags" line of CASES in turn: creation time,
# idle CPU over IDLE, RSS, real disk (allocated blocks), p99 of acks=all produce at RATE rec/s over all
# partitions, restart-to-all-writable. JSON lines go to $OUT (default stdout), summaries to stderr.
#
# Disk: tan reserves 64 MiB per partition and (before the growing preallocation) the segment another
# 64 MiB: keep N x 128 MiB of the "before" cases under the free disk you may use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BEFORE=${BEFORE:-main}
IDLE=${IDLE:-60s}
RATE=${RATE:-1000}
PRODUCE=${PRODUCE:-30s}
PORT=${PORT:-39092}
OUT=${OUT:-/dev/stdout}
WORK=$(mktemp -d /tmp/sluice-partitions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/before-src"
git archive "$BEFORE" | tar -x -C "$WORK/before-src"
(cd "$WORK/before-src" && go build -o "$WORK/sluice-before" ./cmd/sluice)
go build -o "$WORK/sluice-after" ./cmd/sluice
go build -o "$WORK/partitions" ./bench/partitions
rm -rf "$WORK/before-src"
CASES=${CASES:-"
before-tan|before|64|
after-tan|after|64|
after-pebble|after|64|--raft-log pebble
after-pebble-quiesce|after|64|--raft-log pebble --raft-quiesce
after-pebble|after|1000|--raft-log pebble
after-pebble-quiesce|after|1000|--raft-log pebble --raft-quiesce
"}
echo "# before: $(git rev-parse --short "$BEFORE") after: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty) $(date -u +%FT%TZ)" >&2
while IFS='|' read -r label which n flags; do
	[ -z "$label" ] && continue
	"$WORK/partitions" -sluice "$WORK/sluice-$which" -partitions "$n" -idle "$IDLE" -rate "$RATE" \
		-produce "$PRODUCE" -port "$PORT" -dir "$WORK" -label "$label" -flags "$flags" >>"$OUT" ||
		{ echo "case $label failed; broker log tail:" >&2; tail -20 "$WORK/broker.log" >&2; }
	rm -f "$WORK/broker.log"
done <<<"$CASES"
