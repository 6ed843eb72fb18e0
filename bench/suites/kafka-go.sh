#!/usr/bin/env bash
# bench/suites/kafka-go.sh: runs segmentio/kafka-go's own test suite (the version in go.mod) against a
# fresh broker, each test in its own process, and writes per-test results and a summary.
#
# kafka-go's tests expect a broker advertised as localhost:9092 and a SASL_PLAINTEXT listener on
# localhost:9093 (its docker-compose: Kafka 3.7.0, auto-creation on, message.max.bytes 200000000,
# PLAIN and SCRAM users adminplain and adminscram), so ports 9092 and 9093 must be free. Sluice runs
# the same layout: --sasl-listen 127.0.0.1:9093 and kafka-go's users made with `sluice users set`.
# kfake has no second listener: its SASL tests fail.
#
#   bench/suites/kafka-go.sh                       # against sluice, results in results/<today>-suites/kafka-go-sluice
#   BROKER=kfake bench/suites/kafka-go.sh          # the same against franz-go's kfake
#   OUT=dir RUN='^TestConn$' bench/suites/kafka-go.sh
#
# Environment:
#   BROKER        sluice (default) or kfake
#   OUT           output directory (default results/$(date +%F)-suites/kafka-go-$BROKER)
#   RUN           regexp of top-level tests to run (default: all Test* functions)
#   TEST_TIMEOUT  seconds per test process (default 300)
#   SLUICE_FLAGS  extra flags for sluice serve (default: kafka-go's, the ACL authorizer with
#                 allow.everyone.if.no.acl.found=true, as its tests call the ACL and SCRAM APIs)
#
# Output: results.tsv (test, result pass|fail|skip|timeout, seconds), logs/<test>.log, summary.txt,
# broker.log. A test counts as skip when it skipped itself and failed nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

BROKER=${BROKER:-sluice}
OUT=${OUT:-results/$(date -u +%F)-suites/kafka-go-$BROKER}
RUN=${RUN:-'^Test'}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
SLUICE_FLAGS=${SLUICE_FLAGS-"--authorizer acl --allow-everyone-if-no-acl-found"}
export KAFKA_VERSION=${KAFKA_VERSION:-3.7.0}

for port in 9092 9093; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "kafka-go.sh: something listens on 127.0.0.1:$port already; kafka-go's tests need that port" >&2
		exit 1
	fi
done

WORK=$(mktemp -d /tmp/kafka-go-suite.XXXXXX)
BROKER_PID=
cleanup() {
	if [[ -n $BROKER_PID ]]; then
		kill "$BROKER_PID" 2>/dev/null || true
		wait "$BROKER_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

version=$(go list -m -f '{{.Version}}' github.com/segmentio/kafka-go)
log "building kafka-go $version's tests and the $BROKER broker"
go test -c -o "$WORK/kafka-go.test" github.com/segmentio/kafka-go
case $BROKER in
sluice) go build -o "$WORK/broker" ./cmd/sluice ;;
kfake) go build -o "$WORK/broker" ./bench/kfake ;;
*)
	echo "BROKER must be sluice or kfake" >&2
	exit 1
	;;
esac

mkdir -p "$OUT/logs"
: >"$OUT/broker.log"
start_broker() {
	case $BROKER in
	sluice)
		rm -rf "$WORK/data"
		# shellcheck disable=SC2086
		"$WORK/broker" serve --listen 127.0.0.1:9092 --advertised-addr localhost:9092 --raft-addr "127.0.0.1:$(free_port)" \
			--sasl-listen 127.0.0.1:9093 --sasl-mechanisms PLAIN,SCRAM-SHA-256,SCRAM-SHA-512 \
			--data-dir "$WORK/data" --max-message-bytes 200000000 --log-level warn $SLUICE_FLAGS >>"$OUT/broker.log" 2>&1 &
		;;
	kfake) "$WORK/broker" --port 9092 --retention-bytes -1 >>"$OUT/broker.log" 2>&1 & ;;
	esac
	BROKER_PID=$!
	wait_port 9092 60 || {
		echo "broker did not start; see $OUT/broker.log" >&2
		exit 1
	}
	if [[ $BROKER == sluice ]]; then
		kafka_go_users
	fi
}

# kafka_go_users makes the users of kafka-go's docker-compose: adminplain (PLAIN, whose password Sluice
# checks against its SCRAM credentials) and adminscram, with another password per SCRAM mechanism.
kafka_go_users() {
	local user mechs pass
	while read -r user mechs pass; do
		printf '%s\n' "$pass" >"$WORK/pw" && chmod 600 "$WORK/pw"
		"$WORK/broker" users set "$user" --bootstrap localhost:9092 --mechanisms "$mechs" --password-file "$WORK/pw" >/dev/null
	done <<-EOF
		adminplain SCRAM-SHA-256,SCRAM-SHA-512 admin-secret
		adminscram SCRAM-SHA-256 admin-secret-256
		adminscram SCRAM-SHA-512 admin-secret-512
	EOF
}
start_broker

{
	echo "kafka-go $version test suite against $BROKER, $(date -u +%FT%TZ)"
	echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
	echo "nproc $(nproc), kernel $(uname -r), $(go env GOVERSION), KAFKA_VERSION=$KAFKA_VERSION"
	if [[ $BROKER == sluice ]]; then
		echo "broker flags: --advertised-addr localhost:9092 --max-message-bytes 200000000 --sasl-listen 127.0.0.1:9093 (SASL_PLAINTEXT) ${SLUICE_FLAGS}"
	else
		echo "broker flags: --port 9092 --retention-bytes -1"
	fi
} >"$OUT/settings.txt"

mapfile -t tests < <("$WORK/kafka-go.test" -test.list "$RUN" | grep '^Test' || true)
log "${#tests[@]} tests"
printf 'test\tresult\tseconds\n' >"$OUT/results.tsv"
for t in "${tests[@]}"; do
	if ! kill -0 "$BROKER_PID" 2>/dev/null; then
		echo "=== broker exited before $t; restarted" >>"$OUT/broker.log"
		start_broker
	fi
	start=$(date +%s.%N)
	rc=0
	(cd "$(go list -m -f '{{.Dir}}' github.com/segmentio/kafka-go)" &&
		timeout --kill-after=10 "$TEST_TIMEOUT" "$WORK/kafka-go.test" -test.run "^$t\$" -test.count=1 -test.v \
			-test.timeout "$((TEST_TIMEOUT - 5))s") >"$OUT/logs/$t.log" 2>&1 || rc=$?
	secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	if ((rc == 124 || rc == 137)); then
		result=timeout
	elif ((rc != 0)); then
		result=fail
	elif grep -q "^--- SKIP: $t " "$OUT/logs/$t.log"; then
		result=skip
	else
		result=pass
	fi
	printf '%s\t%s\t%s\n' "$t" "$result" "$secs" >>"$OUT/results.tsv"
	log "$t: $result (${secs}s)"
done

awk -F'\t' 'NR > 1 { n[$2]++; total++ } END {
	printf "%d tests: %d passed, %d failed, %d skipped, %d timed out\n", total, n["pass"], n["fail"], n["skip"], n["timeout"] }' \
	"$OUT/results.tsv" | tee "$OUT/summary.txt"
awk -F'\t' 'NR > 1 && $2 != "pass" && $2 != "skip" { print "  " $1 " " $2 }' "$OUT/results.tsv" | tee -a "$OUT/summary.txt"
