#!/usr/bin/env python3
"""Where a program's GPU time goes, from `ncu --csv --metrics gpu__time_duration.sum` output:
the kernels grouped by name (templates and arguments stripped), their count, total time and
share, largest first.

    ncu --csv --metrics gpu__time_duration.sum PROGRAM > k.csv; python3 scripts/ncu-summary.py k.csv [TOP]
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*", "", name)          # arguments
    name = re.sub(r"<.*>", "", name)          # template parameters
    return name.split("::")[-1].strip()[:60]


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    lines = open(path, errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        print(f"{path}: no ncu CSV table found")
        return 1
    total = defaultdict(float)
    count = defaultdict(int)
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "nsecond": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(unit, 1e-3)
        k = short(row["Kernel Name"])
        total[k] += value * scale
        count[k] += 1
    grand = sum(total.values())
    print(f"{len(total)} kernels, {sum(count.values())} launches, {grand / 1e3:.1f} ms of GPU time")
    print(f"{'kernel':<60} {'launches':>8} {'ms':>9} {'share':>7}")
    for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{k:<60} {count[k]:>8} {v / 1e3:>9.2f} {100 * v / grand:>6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
