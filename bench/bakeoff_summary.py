#!/usr/bin/env python3
"""bench/bakeoff_summary.py CELLS_TSV: the bake-off's comparison tables (markdown) from bench/bakeoff.sh's
cells.tsv. Per cell (size, connections, rate) every backend side by side: the median over passes of
records/s and publish latency percentiles, each pass's ratio to gnet, broker CPU per produced MB; then
the geometric means of the ratios over all cells."""
import csv
import math
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
backends = []
for r in rows:
    if r["backend"] not in backends:
        backends.append(r["backend"])
order = [b for b in ("std", "gnet", "uring") if b in backends] + [b for b in backends if b not in ("std", "gnet", "uring")]
base = "gnet" if "gnet" in order else order[0]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


cells = defaultdict(lambda: defaultdict(list))  # (size, conns, mode) -> backend -> [row]
for r in rows:
    cells[(int(r["size"]), int(r["conns"]), r["mode"])][r["backend"]].append(r)


def med(rs, key):
    vals = [num(r[key]) for r in rs if num(r[key]) is not None and num(r["rec_s"])]
    return statistics.median(vals) if vals else None


def fmt(v, d=0):
    if v is None:
        return "-"
    if d == 0:
        return f"{v:,.0f}"
    return f"{v:,.{d}f}"


def size_name(s):
    return {100: "100 B", 1024: "1 KiB", 1048576: "1 MiB"}.get(s, f"{s} B")


ratios = defaultdict(lambda: defaultdict(list))  # metric -> backend -> [ratio per pass and cell]


def pass_ratios(cell, key, metric, mode):
    by_pass = defaultdict(dict)
    for b, rs in cell.items():
        for r in rs:
            if num(r[key]) and num(r["rec_s"]):
                by_pass[r["pass"]][b] = num(r[key])
    out = defaultdict(list)
    for p, vals in sorted(by_pass.items()):
        if base not in vals:
            continue
        for b in order:
            if b in vals and vals[base] > 0:
                out[b].append(vals[b] / vals[base])
                ratios[(metric, mode)][b].append(vals[b] / vals[base])
    return out


print("### Max rate (closed loop): throughput\n")
print("| size | conns | " + " | ".join(f"{b} rec/s" for b in order) + " | " +
      " | ".join(f"{b}/{base} per pass" for b in order if b != base) + " | publish p99 ms " + "/".join(order) +
      " | CPU s per MB " + "/".join(order) + " |")
print("|---|---:|" + "---:|" * len(order) + "---|" * (len(order) - 1) + "---|---|")
for key in sorted(k for k in cells if k[2] == "max"):
    cell = cells[key]
    pr = pass_ratios(cell, "rec_s", "rec_s", "max")
    pass_ratios(cell, "cpu_s_per_MB", "cpu", "max")
    print(f"| {size_name(key[0])} | {key[1]:,} | " +
          " | ".join(fmt(med(cell.get(b, []), "rec_s")) for b in order) + " | " +
          " | ".join(", ".join(f"{x:.2f}" for x in pr.get(b, [])) or "-" for b in order if b != base) + " | " +
          " / ".join(fmt(med(cell.get(b, []), "pub_p99_ms"), 1) for b in order) + " | " +
          " / ".join(fmt(med(cell.get(b, []), "cpu_s_per_MB"), 4) for b in order) + " |")

print("\n### Half of the lowest max rate (open loop, same offered load for all): latency\n")
print("| size | conns | rate/s | " + " | ".join(f"{b} publish p50 / p99 / p99.9 / max ms" for b in order) +
      " | " + " | ".join(f"{b}/{base} p99 per pass" for b in order if b != base) + " |")
print("|---|---:|---:|" + "---|" * len(order) + "---|" * (len(order) - 1))
for key in sorted(k for k in cells if k[2] == "half"):
    cell = cells[key]
    pr = pass_ratios(cell, "pub_p99_ms", "p99", "half")
    pass_ratios(cell, "pub_p50_ms", "p50", "half")
    pass_ratios(cell, "pub_p999_ms", "p999", "half")
    pass_ratios(cell, "cpu_s_per_MB", "cpu", "half")
    rate = statistics.median(num(r["target_rate"]) for rs in cell.values() for r in rs)
    print(f"| {size_name(key[0])} | {key[1]:,} | {rate:,.0f} | " +
          " | ".join(" / ".join(fmt(med(cell.get(b, []), k), 1) for k in ("pub_p50_ms", "pub_p99_ms", "pub_p999_ms", "pub_max_ms"))
                     for b in order) + " | " +
          " | ".join(", ".join(f"{x:.2f}" for x in pr.get(b, [])) or "-" for b in order if b != base) + " |")


def gmean(xs):
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


print(f"\n### Geometric means of the ratios to {base} over every cell and pass\n")
print("| metric | " + " | ".join(order) + " |")
print("|---|" + "---:|" * len(order))
for (metric, mode), label in [(("rec_s", "max"), "max-rate throughput (higher is better)"),
                              (("cpu", "max"), "CPU s per produced MB at max rate (lower is better)"),
                              (("p50", "half"), "publish p50 at half rate (lower is better)"),
                              (("p99", "half"), "publish p99 at half rate (lower is better)"),
                              (("p999", "half"), "publish p99.9 at half rate (lower is better)"),
                              (("cpu", "half"), "CPU s per produced MB at half rate (lower is better)")]:
    r = ratios.get((metric, mode), {})
    print(f"| {label} | " + " | ".join(fmt(gmean(r.get(b, [])), 3) + f" (n={len(r.get(b, []))})" for b in order) + " |")

print("\n### Broker CPU per produced MB, from the OS accounting (/proc/<pid>/stat utime and stime)\n")
print("Sums over every run of a kind (both passes; the one consumer's fetches included), so the cells with most "
      "data weigh most.\n")
print("| runs | size | backend | user s | system s | produced MB | user ms/MB | system ms/MB | total ms/MB |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for mode, label in (("max", "max rate"), ("half", "half rate")):
    for size in sorted({int(r["size"]) for r in rows}):
        for b in order:
            rs = [r for r in rows if r["backend"] == b and r["mode"] == mode and int(r["size"]) == size and num(r["produced_MB"])]
            u = sum(num(r["broker_user_s"]) for r in rs)
            s = sum(num(r["broker_sys_s"]) for r in rs)
            mb = sum(num(r["produced_MB"]) for r in rs)
            if mb:
                print(f"| {label} | {size_name(size)} | {b} | {u:,.1f} | {s:,.1f} | {mb:,.0f} | {1000 * u / mb:.2f} | {1000 * s / mb:.2f} | {1000 * (u + s) / mb:.2f} |")
