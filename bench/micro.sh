#!/usr/bin/env bash
# bench/micro.sh: the io_uring micro-benchmarks, ROUNDS times each, rounds interleaved (go test's
# -count repeats one sub-benchmark back to back, which lets a burst of load from elsewhere hit one
# variant only). Writes $OUT/file-to-socket.txt and $OUT/append-datasync.txt in go test's format and
# $OUT/medians.txt (median ns/op, MB/s and process CPU ns/op per variant).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-6}
OUT=${OUT:-results/netio}
BIN=$(mktemp -d /tmp/sluice-micro.XXXXXX)
trap 'rm -rf "$BIN"' EXIT
mkdir -p "$OUT"
go test -c -o "$BIN/netio.test" ./netio
go test -c -o "$BIN/uring.test" ./internal/uring
: >"$OUT/file-to-socket.txt"
: >"$OUT/append-datasync.txt"
for ((r = 1; r <= ROUNDS; r++)); do
	echo "round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
	"$BIN/netio.test" -test.run '^$' -test.bench FileToSocket -test.benchtime 0.5s -test.benchmem >>"$OUT/file-to-socket.txt"
	(cd "$BIN" && ./uring.test -test.run '^$' -test.bench AppendDatasync -test.benchtime 300x) >>"$OUT/append-datasync.txt"
done
for f in file-to-socket append-datasync; do
	echo "== $f: median over $ROUNDS rounds"
	awk '/^Benchmark/ { n[$1]++; ns[$1, n[$1]] = $3; mb[$1, n[$1]] = $5; cpu[$1, n[$1]] = 0
			for (i = 3; i < NF; i++) if ($(i + 1) == "cpu-ns/op") cpu[$1, n[$1]] = $i
			if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
		function median(a, name, c,   i, v, j, t) {
			for (i = 1; i <= c; i++) v[i] = a[name, i] + 0
			for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
			return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2 }
		END { for (i = 1; i <= k; i++) { c = n[order[i]]
			printf "%-50s %11.0f ns/op %8.1f MB/s %11.0f cpu-ns/op  (n=%d)\n", order[i], median(ns, order[i], c), median(mb, order[i], c), median(cpu, order[i], c), c } }' "$OUT/$f.txt"
done >"$OUT/medians.txt"
cat "$OUT/medians.txt"
