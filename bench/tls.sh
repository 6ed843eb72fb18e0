#!/usr/bin/env bash
# bench/tls.sh: the cost of TLS. One fresh Sluice broker per run with a TLS listener beside the
# plaintext one (certificates made here with openssl, thrown away after); loadgen max-rate produce
# with a consumer (franz-go, acks=all, idempotent) against: the plaintext listener on the default
# backend (plain), the plaintext listener on the std backend (plain-std: the backend the TLS listener
# runs, so tls / plain-std is the cost of the encryption alone), and the TLS listener (tls). Interleaved
# rounds; per run the broker's CPU seconds and loadgen's rates; then the medians and ratios.
#
# Settings (environment variables, all optional):
#   MODES        runs per round, in this order (default "plain plain-std tls")
#   SIZES        record sizes (default "1024 1048576")
#   PARTITIONS   partitions (default 8); DURATION (default 15s); WARMUP (default 3s); ROUNDS (default 3)
#   OUT          result directory (default results/<UTC date>-<cores>core-vm-tls)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

MODES=${MODES:-"plain plain-std tls"}
SIZES=${SIZES:-"1024 1048576"}
PARTITIONS=${PARTITIONS:-8}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-$(nproc)core-vm-tls}

BIN=$(mktemp -d /tmp/sluice-tls.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT

log "building into $BIN"
go build -o "$BIN/loadgen" ./cmd/loadgen
go build -o "$BIN/sluice" ./cmd/sluice
# A throwaway CA and a broker certificate for 127.0.0.1.
(
	cd "$BIN"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=bench-ca 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout broker.key -out broker.csr -subj /CN=broker 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
	openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 1 -extfile san.ext 2>/dev/null
)
mkdir -p "$OUT"
TSV="$OUT/runs.tsv"
printf 'round\tmode\tsize\tproduce_rec_s\tproduce_mb_s\tconsume_mb_s\tbroker_cpu_s\tcpu_s_per_gb\n' >"$TSV"

run() {
	local round=$1 mode=$2 size=$3
	local dir="$BIN/run-$round-$mode-$size"
	mkdir -p "$dir"
	local port tport raft netio=auto
	port=$(free_port)
	tport=$(free_port)
	raft=$(free_port)
	[ "$mode" = plain-std ] && netio=std
	"$BIN/sluice" serve --listen "127.0.0.1:$port" --raft-addr "127.0.0.1:$raft" --data-dir "$dir/data" \
		--tls-listen "127.0.0.1:$tport" --tls-cert "$BIN/broker.pem" --tls-key "$BIN/broker.key" \
		--netio "$netio" --max-message-bytes 4194304 --log-level warn >"$dir/broker.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	if ! wait_port "$port" 60 || ! wait_port "$tport" 10; then
		log "broker did not start; its log: $dir/broker.log"
		kill -9 "$pid" 2>/dev/null || true
		return 1
	fi
	sleep 1
	local target="127.0.0.1:$port" sec=()
	if [ "$mode" = tls ]; then
		target="127.0.0.1:$tport"
		sec=(-tls-ca "$BIN/ca.pem")
	fi
	local big=()
	if [ "$size" -gt 500000 ]; then
		big=(-batch-max-bytes 3145728 -fetch-max-partition-bytes 3145728 -max-buffered-records 64)
	else
		big=(-max-buffered-records 20000)
	fi
	local cpu0 cpu1
	cpu0=$(cpu_seconds "$pid")
	"$BIN/loadgen" run -brokers "$target" "${sec[@]}" -name "tls-$size" -label "$mode" -record-size "$size" \
		-partitions "$PARTITIONS" -acks all -idempotent -producers 1 "${big[@]}" -consumers 1 \
		-duration "$DURATION" -warmup "$WARMUP" -drain-timeout 20s -quiet -out "$dir/loadgen" >"$dir/loadgen.log" 2>&1 ||
		log "loadgen failed: $(tail -3 "$dir/loadgen.log")"
	cpu1=$(cpu_seconds "$pid")
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local res
	res=$(find "$dir/loadgen" -name result.json | head -1)
	python3 - "$res" "$round" "$mode" "$size" "$cpu0" "$cpu1" >>"$TSV" <<'PY'
import json, sys
res, rnd, mode, size = sys.argv[1:5]
cpu = float(sys.argv[6]) - float(sys.argv[5])
r = json.load(open(res))
p, c = r["produce"], r["consume"]
total = p["bytes"] + c["bytes"]
print("\t".join(str(x) for x in [rnd, mode, size, round(p["records_per_sec"]), round(p["mb_per_sec"], 1),
      round(c["mb_per_sec"], 1), round(cpu, 2), round(cpu / (total / 1e9), 3) if total else 0]))
PY
	rm -rf "$dir/data"
	tail -1 "$TSV" >&2
}

for size in $SIZES; do
	for ((round = 1; round <= ROUNDS; round++)); do
		for mode in $MODES; do
			log "round $round: $mode, $size B"
			run "$round" "$mode" "$size" || log "round $round: $mode, $size B: no result"
		done
	done
done

python3 - "$TSV" "$MODES" >"$OUT/summary.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
modes = sys.argv[2].split()
cols = ["produce_rec_s", "produce_mb_s", "consume_mb_s", "cpu_s_per_gb"]
print("| size | mode | runs | " + " | ".join(cols) + " |")
print("|---|---|---|" + "---|" * len(cols))
for size in sorted({r["size"] for r in rows}, key=int):
    med = {}
    for m in modes:
        rs = [r for r in rows if r["size"] == size and r["mode"] == m]
        if rs:
            med[m] = {c: statistics.median(float(r[c]) for r in rs) for c in cols}
            print(f"| {size} | {m} | {len(rs)} | " + " | ".join(f"{med[m][c]:g}" for c in cols) + " |")
    for a, b in [("tls", "plain"), ("tls", "plain-std"), ("plain-std", "plain")]:
        if a in med and b in med:
            print(f"| {size} | {a} / {b} | | " + " | ".join(
                f"{med[a][c] / med[b][c]:.2f}x" if med[b][c] else "-" for c in cols) + " |")
PY
cat "$OUT/summary.md"
log "results in $OUT"
