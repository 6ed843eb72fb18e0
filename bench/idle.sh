#!/usr/bin/env bash
# bench/idle.sh: memory per idle connection for each netio backend. For REPEATS rounds, and in each
# round for every backend in turn (interleaved), it starts a fresh `sluice serve --netio B`, holds
# CONNS connections that each sent one ApiVersions (bench/idleconns), and prints the broker's RSS
# growth per connection. Output: $OUT (default stdout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BACKENDS=${BACKENDS:-"std gnet uring"}
CONNS=${CONNS:-10000}
REPEATS=${REPEATS:-3}
PORT=${PORT:-32300}
BIN=$(mktemp -d /tmp/sluice-idle.XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT
go build -o "$BIN/sluice" ./cmd/sluice
go build -o "$BIN/idleconns" ./bench/idleconns
for ((r = 1; r <= REPEATS; r++)); do
	for b in $BACKENDS; do
		rm -rf "$BIN/data"
		"$BIN/sluice" serve --listen "127.0.0.1:$PORT" --raft-addr "127.0.0.1:$((PORT + 1))" --data-dir "$BIN/data" \
			--netio "$b" --log-level warn >"$BIN/broker.log" 2>&1 &
		PID=$!
		for ((i = 0; i < 300; i++)); do
			(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
			sleep 0.1
		done
		"$BIN/idleconns" -addr "127.0.0.1:$PORT" -pid "$PID" -conns "$CONNS" -label "round $r $b: " || cat "$BIN/broker.log" >&2
		kill "$PID"
		wait "$PID" 2>/dev/null || true
		PID=
	done
done
