#!/usr/bin/env bash
# bench/suites/librdkafka.sh: builds librdkafka's test suite from its source and runs its tests against a
# fresh broker, each test in its own process, writing per-test results and a summary.
#
# librdkafka's code is not part of this repository: point LIBRDKAFKA_SRC at a checkout, or let the script
# clone LIBRDKAFKA_GIT (needs the network). Without either it says so and exits 0 (skipped).
#
#   LIBRDKAFKA_SRC=~/src/librdkafka bench/suites/librdkafka.sh            # quick mode, tests 0000-0099
#   MODE=full FIRST=0000 LAST=0099 bench/suites/librdkafka.sh              # without -Q
#   BROKER=kfake bench/suites/librdkafka.sh                                # the same against kfake
#
# Environment:
#   LIBRDKAFKA_SRC  a librdkafka source tree (git checkout of LIBRDKAFKA_REF); built in place once
#   LIBRDKAFKA_GIT  where to clone it from when LIBRDKAFKA_SRC is unset
#                   (default https://github.com/confluentinc/librdkafka)
#   LIBRDKAFKA_REF  tag to check out in a clone (default v2.15.0)
#   BROKER          sluice (default) or kfake
#   MODE            quick (default: test-runner -Q, less data and fewer iterations) or full
#   FIRST, LAST     test number range (default 0000 and 0099)
#   TESTS_MATCH     regexp on test names (default: all in the range)
#   TEST_TIMEOUT    seconds per test process (default 600)
#   OUT             output directory (default results/$(date +%F)-suites/librdkafka-$MODE-$BROKER)
#   SLUICE_FLAGS    extra flags for sluice serve
#
# Tests run with -L (no local-only tests: unit and mock-cluster tests need no broker) and -E (no socket
# emulation tests), TEST_KAFKA_VERSION=3.7.0, on a broker whose topics default to 4 partitions (the
# suite's default scenario). Output: results.tsv (test, result pass|fail|skip|not-run|timeout, seconds of
# its number's process), logs/<number>.log, summary.txt, broker.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

BROKER=${BROKER:-sluice}
MODE=${MODE:-quick}
FIRST=${FIRST:-0000}
LAST=${LAST:-0099}
TESTS_MATCH=${TESTS_MATCH:-.}
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
OUT=${OUT:-results/$(date -u +%F)-suites/librdkafka-$MODE-$BROKER}
SLUICE_FLAGS=${SLUICE_FLAGS:-}
LIBRDKAFKA_REF=${LIBRDKAFKA_REF:-v2.15.0}
REPO=$PWD

WORK=$(mktemp -d /tmp/librdkafka-suite.XXXXXX)
BROKER_PID=
cleanup() {
	if [[ -n $BROKER_PID ]]; then
		kill "$BROKER_PID" 2>/dev/null || true
		wait "$BROKER_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

src=${LIBRDKAFKA_SRC:-}
if [[ -z $src ]]; then
	src=${TMPDIR:-/tmp}/librdkafka-$LIBRDKAFKA_REF
	if [[ ! -d $src/.git ]]; then
		log "cloning librdkafka $LIBRDKAFKA_REF into $src"
		if ! git clone -q --branch "$LIBRDKAFKA_REF" --depth 1 "${LIBRDKAFKA_GIT:-https://github.com/confluentinc/librdkafka}" "$src" 2>"$WORK/clone.err"; then
			echo "librdkafka.sh: SKIPPED: no librdkafka source (clone failed: $(tail -1 "$WORK/clone.err"))." >&2
			echo "  Set LIBRDKAFKA_SRC to a checkout of $LIBRDKAFKA_REF (or LIBRDKAFKA_GIT to a reachable copy)." >&2
			exit 0
		fi
	fi
fi
if [[ ! -x $src/tests/test-runner ]]; then
	log "building librdkafka and its tests in $src (a few minutes)"
	for tool in gcc make; do
		command -v "$tool" >/dev/null || {
			echo "librdkafka.sh: SKIPPED: $tool is not installed" >&2
			exit 0
		}
	done
	(cd "$src" && ./configure --disable-gssapi >"$WORK/configure.log" 2>&1 && make -j"$(nproc)" libs >"$WORK/make.log" 2>&1 &&
		make -C tests -j"$(nproc)" build >>"$WORK/make.log" 2>&1) || {
		tail -20 "$WORK/configure.log" "$WORK/make.log" >&2
		echo "librdkafka.sh: building librdkafka failed (see above)" >&2
		exit 1
	}
fi
export LD_LIBRARY_PATH=$src/src:$src/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TEST_KAFKA_VERSION=3.7.0

PORT=$(free_port)
mkdir -p "$OUT/logs"
: >"$OUT/broker.log"
case $BROKER in
sluice) go build -o "$WORK/broker" ./cmd/sluice ;;
kfake) go build -o "$WORK/broker" ./bench/kfake ;;
*)
	echo "BROKER must be sluice or kfake" >&2
	exit 1
	;;
esac
start_broker() {
	case $BROKER in
	sluice)
		rm -rf "$WORK/data"
		# shellcheck disable=SC2086
		"$WORK/broker" serve --listen "127.0.0.1:$PORT" --raft-addr "127.0.0.1:$(free_port)" --data-dir "$WORK/data" \
			--partitions 4 --log-level warn $SLUICE_FLAGS >>"$OUT/broker.log" 2>&1 &
		;;
	kfake) "$WORK/broker" --port "$PORT" --retention-bytes -1 >>"$OUT/broker.log" 2>&1 & ;;
	esac
	BROKER_PID=$!
	wait_port "$PORT" 60 || {
		echo "broker did not start; see $OUT/broker.log" >&2
		exit 1
	}
}
start_broker
printf 'metadata.broker.list=127.0.0.1:%s\n' "$PORT" >"$WORK/test.conf"
export RDKAFKA_TEST_CONF=$WORK/test.conf

args=(-L -E)
[[ $MODE == quick ]] && args+=(-Q)
{
	echo "librdkafka $(git -C "$src" describe --tags 2>/dev/null || echo "$LIBRDKAFKA_REF") tests $FIRST-$LAST ($MODE mode: test-runner ${args[*]}) against $BROKER, $(date -u +%FT%TZ)"
	echo "commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo '+dirty')"
	echo "nproc $(nproc), kernel $(uname -r), TEST_KAFKA_VERSION=$TEST_KAFKA_VERSION"
	echo "broker flags: --partitions 4 ${SLUICE_FLAGS}"
} >"$OUT/settings.txt"

mapfile -t tests < <(grep -o '_TEST_DECL([0-9]\{4\}[A-Za-z0-9_]*)' "$src/tests/test.c" | sed 's/_TEST_DECL(//; s/)//' |
	awk -v f="$FIRST" -v l="$LAST" 'substr($0, 1, 4) >= f && substr($0, 1, 4) <= l' | grep -E "$TESTS_MATCH" | sort -u)
# test-runner selects tests by number (TESTS is matched against the 4 digits), so one process runs every
# test of a number; each test's result is read from the summary table it prints.
mapfile -t numbers < <(printf '%s\n' "${tests[@]}" | cut -c1-4 | sort -u)
log "${#tests[@]} tests in ${#numbers[@]} test numbers"
printf 'test\tresult\tseconds\n' >"$OUT/results.tsv"
for num in "${numbers[@]}"; do
	if ! kill -0 "$BROKER_PID" 2>/dev/null; then
		echo "=== broker exited before $num; restarted" >>"$OUT/broker.log"
		start_broker
	fi
	start=$(date +%s.%N)
	rc=0
	(cd "$src/tests" && TESTS=$num timeout --kill-after=10 "$TEST_TIMEOUT" ./test-runner "${args[@]}") >"$OUT/logs/$num.log" 2>&1 || rc=$?
	secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	table=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/logs/$num.log" | grep '^| [0-9]' || true)
	for t in "${tests[@]}"; do
		[[ $t == "$num"* ]] || continue
		row=$(awk -F'|' -v t="$t" '{ n = $2; gsub(/ /, "", n) } n == t { print; exit }' <<<"$table")
		state=$(awk -F'|' '{ s = $3; gsub(/ /, "", s); print s }' <<<"$row")
		reason=$(awk -F'|' '{ print $5 }' <<<"$row")
		if ((rc == 124 || rc == 137)); then
			result=timeout
		elif [[ $state == PASSED ]]; then
			result=pass
		elif [[ $state == FAILED || $state == RUNNING ]] || [[ -z $state && $rc != 0 ]]; then
			result=fail
		elif [[ $state == SKIPPED && $reason != *"negative test flags"* && -n ${reason// /} ]]; then
			result=skip # the test skipped itself (its reason in the table)
		else
			result=not-run # filtered by -L/-E (local-only, mock or sockem tests), or manual-only
		fi
		printf '%s\t%s\t%s\n' "$t" "$result" "$secs" >>"$OUT/results.tsv"
		log "$t: $result"
	done
done

awk -F'\t' 'NR > 1 { n[$2]++; total++ } END {
	printf "%d tests: %d passed, %d failed, %d skipped, %d not run (local-only or sockem), %d timed out\n",
		total, n["pass"], n["fail"], n["skip"], n["not-run"], n["timeout"] }' "$OUT/results.tsv" | tee "$OUT/summary.txt"
awk -F'\t' 'NR > 1 && ($2 == "fail" || $2 == "timeout") { print "  " $1 " " $2 }' "$OUT/results.tsv" | tee -a "$OUT/summary.txt"
