#!/usr/bin/env bash
# A/B closed-loop produce throughput of two sluice binaries, interleaved; 8 partitions, one broker.
set -u
cd /work/wt/scale14; . bench/lib.sh
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-15s}; OUTD=${OUTD:-/tmp/s14/ab}
mkdir -p $OUTD
for r in $(seq 1 $ROUNDS); do
 for v in before after; do
  port=$(free_port); rport=$(free_port); d=$(mktemp -d /tmp/s14/data.XXXX)
  /tmp/s14/sluice-$v serve -listen 127.0.0.1:$port -raft-addr 127.0.0.1:$rport -data-dir $d $FLAGS >$OUTD/$v-$r.log 2>&1 &
  pid=$!; wait_port $port 20
  /tmp/s14/loadgen run -brokers 127.0.0.1:$port -client ${CLIENT:-native} -producers ${PRODUCERS:-4} -partitions 8 -record-size 100 -consumers 0 -duration $DUR -warmup 3s -out $OUTD/$v-$r > $OUTD/$v-$r.summary 2>&1
  echo "== $v round $r: $(grep -E "^  produce|^check|rror" $OUTD/$v-$r.summary | tr "\n" " ") busy-warn=$(grep -ciE "busy|dropped|rate limited" $OUTD/$v-$r.log)"
  kill $pid; wait $pid; rm -rf $d
 done
done
