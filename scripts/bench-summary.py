#!/usr/bin/env python3
"""Print GB/s and the ratio to the copy baseline for every criterion group that has one.

usage: scripts/bench-summary.py [target/criterion]

Each bench group holds `fused`, optionally `naive`, and `memcpy` (or `d2d_copy` on a GPU), all with
Throughput::Bytes set to the same traffic, so the ratio of their GB/s is the fused op's fraction
of copy bandwidth, measured in one run.
"""
import json
import sys
from pathlib import Path

COPY_NAMES = ("memcpy", "d2d_copy")


def load(bench_dir: Path):
    est = bench_dir / "new" / "estimates.json"
    bench = bench_dir / "new" / "benchmark.json"
    if not est.exists() or not bench.exists():
        return None
    mean_ns = json.loads(est.read_text())["mean"]["point_estimate"]
    meta = json.loads(bench.read_text())
    tp = meta.get("throughput") or {}
    nbytes = tp.get("Bytes") or tp.get("BytesDecimal")
    return meta["group_id"], meta["function_id"], mean_ns, nbytes


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    groups = {}
    for est in sorted(root.rglob("new/benchmark.json")):
        r = load(est.parent.parent)
        if r is None:
            continue
        gid, fid, ns, nbytes = r
        groups.setdefault(gid, {})[fid] = (ns, nbytes)
    if not groups:
        print(f"no criterion results under {root}", file=sys.stderr)
        return 1
    print(f"{'group':<28} {'variant':<8} {'time':>11} {'GB/s':>8} {'vs copy':>8}")
    for gid in sorted(groups):
        fns = groups[gid]
        copy = next((fns[n] for n in COPY_NAMES if n in fns), None)
        for fid in sorted(fns, key=lambda f: (f in COPY_NAMES, f)):
            ns, nbytes = fns[fid]
            gbs = nbytes / ns if nbytes else float("nan")
            ratio = copy[0] / ns if copy else float("nan")
            t = f"{ns / 1e3:.1f} us" if ns < 1e6 else f"{ns / 1e6:.2f} ms"
            print(f"{gid:<28} {fid:<8} {t:>11} {gbs:>8.2f} {ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
