#!/usr/bin/env bash
set -u
BIN=$1; SIZE=$2
D=/tmp/prof/sc-$(basename $BIN); rm -rf $D; mkdir -p $D
$BIN serve --listen 127.0.0.1:19092 --raft-addr 127.0.0.1:19093 --data-dir $D/data --log-level warn > $D/broker.log 2>&1 &
BP=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && break; sleep 0.2; done
sleep 1
/tmp/loadgen run -brokers 127.0.0.1:19092 -name p -record-size $SIZE -partitions 8 -acks all -idempotent -producers 1 \
    -max-buffered-records 20000 -consumers 1 -duration 15s -warmup 3s -drain-timeout 20s -quiet -out $D/loadgen > $D/loadgen.log 2>&1 &
LP=$!
sleep 6
w0=$(awk '/^write_bytes/{print $2}' /proc/$BP/io)
timeout -s INT 8 strace -f -c -e trace=fdatasync,pwritev,pwrite64 -p $BP -o $D/strace.txt
w1=$(awk '/^write_bytes/{print $2}' /proc/$BP/io)
wait $LP
kill -9 $BP; wait $BP 2>/dev/null
echo "$(basename $BIN) wrote $(( (w1-w0)/1000000 )) MB in 8 s"; grep -E "fdatasync|pwrite" $D/strace.txt
