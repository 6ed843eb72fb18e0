#!/usr/bin/env bash
# A/B closed-loop produce throughput, 3 brokers rf=3 8 partitions, interleaved.
set -u
cd /work/wt/scale14
ROUNDS=${ROUNDS:-2}; DUR=${DUR:-15s}; OUTD=${OUTD:-/tmp/s14/ab3}; BASE=${BASE:-23500}
mkdir -p $OUTD
for r in $(seq 1 $ROUNDS); do
 for v in before after; do
  d=/tmp/s14/c3-$v-$r; rm -rf $d
  /tmp/s14/chaos -mode serve -keep -sluice /tmp/s14/sluice-$v -data-dir $d -base-port $BASE > $OUTD/$v-$r.cluster.log 2>&1 &
  cp=$!
  for i in $(seq 600); do grep -q '^cluster up' $OUTD/$v-$r.cluster.log && break; sleep 0.1; done
  B="127.0.0.1:$((BASE+192)),127.0.0.1:$((BASE+292)),127.0.0.1:$((BASE+392))"
  /tmp/s14/loadgen run -brokers $B -client ${CLIENT:-native} -producers ${PRODUCERS:-4} -partitions 8 -replication-factor 3 -record-size 100 -consumers 0 -duration $DUR -warmup 3s -out $OUTD/$v-$r > $OUTD/$v-$r.summary 2>&1
  kill -INT $cp; wait $cp
  echo "== $v round $r: $(grep -E "^  produce|^check|rror" $OUTD/$v-$r.summary | tr "\n" " ") warn=$(cat $d/broker-*.log 2>/dev/null | grep -ciE "busy|dropped|rate limited") $(cut -d' ' -f1-3 /proc/loadavg)"
  rm -rf $d
 done
done
