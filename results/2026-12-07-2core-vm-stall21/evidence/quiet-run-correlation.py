# Per-second p99 against loadgen's probe lateness in the quiet native run
# (results/2026-12-07-2core-vm-latency-native/runs), per cell: run from the repository root.
import re, statistics
base = "results/2026-12-07-2core-vm-latency-native/runs"
for cell in ["100/10", "100/25", "100/50", "1KiB/10", "1KiB/25"]:
    rows = []
    for line in open(f"{base}/{cell}/sluice-1/intervals.txt"):
        if line.startswith("end-to-end"):
            break
        m = re.match(r"\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            rows.append(tuple(float(x) for x in m.groups()))
    rows = [r for r in rows if r[1] > 1000]
    late, p99 = [r[6] for r in rows], [r[3] for r in rows]
    n, ml, mp = len(rows), statistics.mean(late), statistics.mean(p99)
    cov = sum((a - ml) * (b - mp) for a, b in zip(late, p99))
    r = cov / (sum((a - ml) ** 2 for a in late) * sum((b - mp) ** 2 for b in p99)) ** 0.5
    on = [x[3] for x in rows if x[6] <= 2]
    off = [x[3] for x in rows if x[6] > 3]
    print(f"{cell:8} seconds {n}  corr(probe late, p99) {r:.2f}  median probe late {statistics.median(late):.1f} ms  "
          f"median p99 when probe <= 2 ms late {statistics.median(on):.1f} (n={len(on)}), > 3 ms late {statistics.median(off):.1f} (n={len(off)})")
