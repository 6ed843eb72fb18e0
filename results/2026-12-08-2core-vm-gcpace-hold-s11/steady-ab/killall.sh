#!/bin/bash
pkill -9 -f 'sluice.* serve'
for i in $(seq 50); do pgrep -f 'sluice.* serve' >/dev/null || break; sleep 0.2; done
for p in 19091 19092 19093 19191 19192 19193; do for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null || break; sleep 0.2; done; done
