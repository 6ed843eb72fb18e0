#!/usr/bin/env python3
"""Medians of `go test -bench -count N` output, per benchmark and metric (benchstat-style).

usage: medians.py bench.txt
"""
import re
import statistics
import sys
from collections import OrderedDict

rows = OrderedDict()
for line in open(sys.argv[1]):
    if not line.startswith("Benchmark"):
        continue
    fields = line.split()
    name = re.sub(r"-\d+$", "", fields[0])
    metrics = rows.setdefault(name, OrderedDict())
    # fields[1] is the iteration count; then value/unit pairs
    for value, unit in zip(fields[2::2], fields[3::2]):
        metrics.setdefault(unit, []).append(float(value))

for name, metrics in rows.items():
    n = max(len(v) for v in metrics.values())
    parts = []
    for unit, values in metrics.items():
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med * 100 if med else 0
        parts.append(f"{med:.4g} {unit} (±{spread / 2:.0f}%)")
    print(f"{name} [n={n}]: " + ", ".join(parts))
