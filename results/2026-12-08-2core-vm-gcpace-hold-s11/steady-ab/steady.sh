#!/bin/bash
# steady.sh BIN LOADGEN OUTDIR SIZE [ENV...]: the steady state of an rf=3 max-rate run, without the
# start-up (the heap's first growth, the disk's first gigabytes): three brokers (cluster3.sh), one
# 40 s loadgen run (franz-go, 8 partitions, rf=3, one consumer); from t=14 s to t=24 s it counts the
# brokers' page faults and CPU ticks (/proc/PID/stat), the machine's busy and iowait ticks and
# loadgen's CPU, and averages loadgen's per-second produce MB/s over the same seconds.
# Session 11's tool (2026-12-08), kept with its results.
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$1; LOADGEN=$2; O=$3; SIZE=$4; shift 4
mkdir -p "$O"
"$HERE/killall.sh"; bash "$HERE/cluster3.sh" "$BIN" "$O/c3" "$@"
sleep 2
"$LOADGEN" run -brokers 127.0.0.1:19091,127.0.0.1:19092,127.0.0.1:19093 -record-size "$SIZE" -partitions 8 -replication-factor 3 -duration 40s -out "$O/lg" > "$O/lg.log" 2>&1 &
LG=$!
sleep 14
sum() { local t=0 i; for i in 1 2 3; do t=$((t + $(awk "{print $1}" "/proc/$(cat "$O/c3/pid-$i")/stat"))); done; echo $t; }
f0=$(sum '$10'); c0=$(sum '$14+$15')
read -r _ u n s i w _ < /proc/stat; lg0=$(awk '{print $14+$15}' /proc/$LG/stat)
sleep 10
read -r _ u2 n2 s2 i2 w2 _ < /proc/stat; lg1=$(awk '{print $14+$15}' /proc/$LG/stat)
f1=$(sum '$10'); c1=$(sum '$14+$15')
echo "machine busy $(( (u2+n2+s2-u-n-s)/10 )) idle $(( (i2-i)/10 )) iowait $(( (w2-w)/10 )) loadgen $(( (lg1-lg0)/10 ))" | tee "$O/stat.txt"
wait $LG
for i in 1 2 3; do kill -9 "$(cat "$O/c3/pid-$i")"; done
echo "faults/s $(( (f1-f0)/10 )) cpu_ticks/s $(( (c1-c0)/10 ))" | tee -a "$O/stat.txt"
grep -E '^ +1[4-9]s|^ +2[0-4]s' "$O/lg.log" | awk '{s+=$5; n++} END {print "produce MB/s t14-24", s/n}' | tee -a "$O/stat.txt"
