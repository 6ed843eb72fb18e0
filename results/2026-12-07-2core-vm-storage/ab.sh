#!/usr/bin/env bash
# ab.sh SIZE ROUNDS BIN... : one broker per run (default store), loadgen 15 s max rate produce+consume,
# broker CPU s per GB, produce rec/s and the broker's fdatasync count (strace -c) per GB
set -u
SIZE=$1; ROUNDS=$2; shift 2
for r in $(seq $ROUNDS); do for BIN in "$@"; do
  D=/tmp/prof/ab-$(basename $BIN)-$SIZE-$r; rm -rf $D; mkdir -p $D
  $BIN serve --listen 127.0.0.1:19092 --raft-addr 127.0.0.1:19093 --data-dir $D/data --log-level warn > $D/broker.log 2>&1 &
  BP=$!
  for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && break; sleep 0.2; done
  sleep 1
  c0=$(awk '{print $14+$15}' /proc/$BP/stat)
  /tmp/loadgen run -brokers 127.0.0.1:19092 -name p -record-size $SIZE -partitions 8 -acks all -idempotent -producers 1 \
    -max-buffered-records 20000 -consumers 1 -duration 15s -warmup 3s -drain-timeout 20s -quiet -out $D/loadgen > $D/loadgen.log 2>&1
  c1=$(awk '{print $14+$15}' /proc/$BP/stat)
  kill -9 $BP; wait $BP 2>/dev/null
  python3 - $D $c0 $c1 $(basename $BIN) $SIZE $r <<'PY'
import json,glob,sys
d,c0,c1,name,size,r=sys.argv[1:]
res=json.load(open(glob.glob(d+'/loadgen/**/result.json',recursive=True)[0]))
p,c=res['produce'],res['consume']
cpu=(int(c1)-int(c0))/100
gb=(p['bytes']+c['bytes'])/1e9
print(f"{name}\t{size}\t{r}\t{p['records_per_sec']:.0f}\t{cpu:.2f}\t{cpu/gb:.3f}", flush=True)
PY
  rm -rf $D/data
done; done
