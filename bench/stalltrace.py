#!/usr/bin/env python3
"""bench/stalltrace.py TRACE [MIN_MS]: the long waits in a Go execution trace, e.g. one that
`sluice serve --debug-stall-trace DIR` wrote when a Produce stalled (or /debug/pprof/trace).

From `go tool trace -d=parsed` (Go 1.26) it lists, with times in ms from the trace's start and
the first frames of each goroutine's stack:
  - GC phases and stop-the-world pauses of 1 ms or more;
  - goroutines Runnable for MIN_MS (default 5) or more: waiting for a CPU (the machine, or GC); the
    stack is where they became runnable: their waker's (a channel send, a go statement) or their
    own preemption point;
  - goroutines in a Syscall for MIN_MS or more: the disk (fdatasync, pwritev) or a blocking wait;
  - goroutines Waiting (blocked: locks, channels, selects) for MIN_MS or more;
each with totals by stack. A stall is the window where the producer's goroutines (netio's event
loop, dragonboat's step and apply workers, raftlog's syncs, quorum's drain) wait: which kind of
wait it is says whether the CPU, the disk or a lock held them.
"""
import collections
import re
import subprocess
import sys

path = sys.argv[1]
min_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
ev_re = re.compile(r"^M=(-?\d+) P=(-?\d+) G=(-?\d+) (\w+) Time=(\d+)(.*)$")
st_re = re.compile(r'GoID=(\d+) (\w+)->(\w+) Reason="([^"]*)"')
name_re = re.compile(r'Name="([^"]*)"')
short = [("github.com/sluicebroker/sluice/", ""), ("github.com/lni/dragonboat/v4", "dragonboat")]

t0 = t_last = None
state = {}  # goroutine -> (state, since, stack, reason)
longs = []  # (ms, state, start ms, goroutine, reason, stack)
ranges, phases = {}, []
cur, stack = None, []


def end_event():
    global cur, stack
    if cur is not None:
        kind, g, t, rest = cur
        top = " < ".join(stack[:6])
        if kind == "StateTransition":
            m = st_re.search(rest)
            if m:
                goid, a, b, reason = int(m.group(1)), m.group(2), m.group(3), m.group(4)
                prev = state.get(goid)
                if prev and prev[0] == a and a in ("Runnable", "Syscall", "Waiting"):
                    ms = (t - prev[1]) / 1e6
                    if ms >= min_ms:
                        longs.append((ms, a, (prev[1] - t0) / 1e6, goid, prev[3], prev[2]))
                state[goid] = (b, t, top, reason)
        else:
            m = name_re.search(rest)
            if m:
                if kind == "RangeBegin":
                    ranges[(m.group(1), g)] = t
                elif (m.group(1), g) in ranges:
                    s = ranges.pop((m.group(1), g))
                    phases.append(((t - s) / 1e6, m.group(1), (s - t0) / 1e6))
    cur, stack = None, []


proc = subprocess.Popen(["go", "tool", "trace", "-d=parsed", path], stdout=subprocess.PIPE, text=True, errors="replace")
for line in proc.stdout:
    if line.startswith("M="):
        end_event()
        m = ev_re.match(line)
        if not m:
            continue
        t = int(m.group(5))
        t0 = t if t0 is None else t0
        t_last = t
        if m.group(4) in ("StateTransition", "RangeBegin", "RangeEnd"):
            cur = (m.group(4), int(m.group(3)), t, m.group(6))
    elif cur is not None and line.startswith("\t") and not line.startswith("\t\t"):
        fn = line.strip().split(" @ ")[0]
        if (not stack or not fn.startswith("runtime.")) and fn not in stack:
            for a, b in short:
                fn = fn.replace(a, b)
            stack.append(fn)
end_event()
if t0 is None:
    sys.exit("no events: is this a Go 1.26 execution trace?")
print(f"trace span {(t_last - t0) / 1e6:.0f} ms; waits of {min_ms} ms or more")
print("\n== GC phases and stop-the-world >= 1 ms (start ms, duration ms)")
for ms, name, s in sorted(phases, key=lambda x: x[2]):
    if ms >= 1:
        print(f"{s:9.1f} {ms:7.1f}  {name}")
for kind, what in (("Runnable", "waiting for a CPU; stack: who made it runnable"), ("Syscall", "in a system call"), ("Waiting", "blocked")):
    sel = sorted((x for x in longs if x[1] == kind), key=lambda x: -x[0])
    print(f"\n== {kind} ({what}): {len(sel)}; the longest (ms, start ms, goroutine, reason, stack)")
    for ms, _, s, goid, reason, st in sel[:20]:
        print(f"{ms:7.1f} @{s:9.1f} g{goid:<6} {reason[:18]:18} {st[:220]}")
    if kind == "Waiting":
        # Idle workers waiting for work dominate the list above; lock waits are the interesting ones.
        locks = [x for x in sel if "sync.(*Mutex)" in x[5] or "sync.(*RWMutex)" in x[5]]
        print(f"-- of them on a mutex: {len(locks)}, {sum(x[0] for x in locks):.1f} ms in all; the longest")
        for ms, _, s, goid, reason, st in locks[:15]:
            print(f"{ms:7.1f} @{s:9.1f} g{goid:<6} {st[:220]}")
    agg = collections.Counter()
    for ms, _, s, goid, reason, st in sel:
        agg[st[:140]] += ms
    print(f"-- {kind} totals by stack (ms)")
    for st, ms in agg.most_common(8):
        print(f"{ms:9.1f}  {st}")
