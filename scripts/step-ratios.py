#!/usr/bin/env python3
"""Ratios from one GPU run of `dgs bench step --json A` and `torch_reference_step.py --json B`:
dgs images/s over PyTorch's for the same model, dtype and method (eager, and torch.compile when
the reference ran with --compile); the fused surgery's share of
the DGS step against the 2 % target; the fused kernel against the candle op chain; memory.

    python3 scripts/step-ratios.py dgs_step.json torch_step.json
"""
import json
import sys


def main():
    dgs = json.load(open(sys.argv[1]))
    rows = json.load(open(sys.argv[2]))
    torch = {(r["model"], r["dtype"], r["method"]): r for r in rows if not r.get("compiled")}
    compiled = {(r["model"], r["dtype"], r["method"]): r for r in rows if r.get("compiled")}
    ours = {(r["model"], r["dtype"], r["method"]): r for r in dgs}
    print(f"{'check':<48} {'value':>9}  target")
    for (model, dt, method), r in sorted(ours.items()):
        tag = f"{model} {dt} {method}"
        t = torch.get((model, dt, method))
        if t:
            print(f"{tag + ': images/s dgs / torch':<48} {r['images_per_s'] / t['images_per_s']:9.2f}  >= 1.0")
            if r.get("peak_bytes") and t.get("max_allocated"):
                print(f"{tag + ': peak memory dgs / torch allocated':<48} {r['peak_bytes'] / t['max_allocated']:9.2f}  <= 1.0")
            if r.get("device_bytes") and t.get("device_used"):
                print(f"{tag + ': device in use dgs / torch':<48} {r['device_bytes'] / t['device_used']:9.2f}")
        tc = compiled.get((model, dt, method))
        if tc:
            print(f"{tag + ': images/s dgs / torch.compile':<48} {r['images_per_s'] / tc['images_per_s']:9.2f}  >= 1.0")
        if t and r.get("phases") and t.get("phases"):
            a, b = r["phases"], t["phases"]
            parts = {
                "student forward": (a["student_forward_ms"], b["student_forward_ms"]),
                "other forwards": (a["forward_ms"] - a["student_forward_ms"], b["forward_ms"] - b["student_forward_ms"]),
                "backward": (a["backward_ms"], b["backward_ms"]),
                "optimiser": (a["optimiser_ms"], b["optimiser_ms"]),
            }
            for part, (x, y) in parts.items():
                print(f"{tag + ': ' + part + ' ms dgs / torch':<48} {x:9.2f} / {y:.2f}")
        if method == "dgs" and r.get("surgery_share") is not None:
            print(f"{tag + ': surgery share of the step':<48} {100 * r['surgery_share']:8.3f}%  <= 2%")
            chain = ours.get((model, dt, "dgs-op-chain"))
            if chain and chain.get("surgery_ms"):
                print(f"{tag + ': op-chain / fused surgery time':<48} {chain['surgery_ms'] / r['surgery_ms']:9.2f}  > 1")
                print(f"{tag + ': op-chain / fused step time':<48} {chain['step_ms'] / r['step_ms']:9.2f}  >= 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
