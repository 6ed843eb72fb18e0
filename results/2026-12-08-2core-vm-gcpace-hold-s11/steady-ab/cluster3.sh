#!/bin/bash
# cluster3.sh BIN DIR: 3 brokers on 19091-19093, raft 19191-19193, pprof 6061-6063
BIN=$1; D=$2; shift 2
rm -rf $D; mkdir -p $D
voters="1@127.0.0.1:19191,2@127.0.0.1:19192,3@127.0.0.1:19193"
for i in 1 2 3; do
  env "$@" $BIN serve --node-id $i --listen 127.0.0.1:1909$i --raft-addr 127.0.0.1:1919$i --controller-voters $voters --data-dir $D/data-$i --replication-factor 3 --log-level warn $FLAGS --debug-addr 127.0.0.1:606$i > $D/broker-$i.log 2>&1 &
  echo $! > $D/pid-$i
done
for i in 1 2 3; do for t in $(seq 100); do (echo > /dev/tcp/127.0.0.1/1909$i) 2>/dev/null && break; sleep 0.2; done; done
