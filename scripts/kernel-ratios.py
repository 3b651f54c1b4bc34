#!/usr/bin/env python3
"""The kernel checks from one GPU run: criterion estimates under OUT/criterion against the empty launch
and the device-to-device copy, and against the PyTorch reference (OUT/torch.json), with targets.

    python3 scripts/kernel-ratios.py OUT
"""
import json, os, sys
out = sys.argv[1]
def crit(group, fn):
    p = os.path.join(out, "criterion", group.replace("/", "_"), fn, "new", "estimates.json")
    if not os.path.exists(p):
        # criterion keeps the group id with '/' replaced
        for root, _, files in os.walk(os.path.join(out, "criterion")):
            if root.endswith(os.path.join(fn, "new")) and "benchmark.json" in files:
                meta = json.load(open(os.path.join(root, "benchmark.json")))
                if meta["group_id"] == group:
                    return json.load(open(os.path.join(root, "estimates.json")))["mean"]["point_estimate"] / 1e3
        return None
    return json.load(open(p))["mean"]["point_estimate"] / 1e3
torch = json.load(open(os.path.join(out, "torch.json"))) if os.path.exists(os.path.join(out, "torch.json")) else {}
print(f"{'check':<44} {'value':>10}  target")
for dt in ("f32", "f16", "bf16"):
    g = f"cuda_rowwise/{dt}/32x768"
    fused, empty = crit(g, "fused"), crit(g, "empty_kernel")
    if fused and empty:
        print(f"{'rows 32x768 '+dt+': fused / empty launch':<44} {fused/empty:10.2f}  <= 1.5")
    t = torch.get("rows", {}).get(dt, {}).get("32x768")
    if fused and t:
        print(f"{'rows 32x768 '+dt+': torch eager / fused':<44} {t/fused:10.2f}  >= 5")
    g = f"cuda_rowwise/{dt}/65536x768"
    f2, c2 = crit(g, "fused"), crit(g, "d2d_copy")
    if f2 and c2:
        print(f"{'rows 65536x768 '+dt+': copy / fused (bw fraction)':<44} {c2/f2:10.2f}  >= 0.85")
for op in ("gram", "combine"):
    for dt, key in (("f32", "K4x50M"), ("f16", "K4x100M"), ("bf16", "K4x100M")):
        g = f"cuda_{op}/{dt}/{key}"
        f, c = crit(g, "fused"), crit(g, "d2d_copy")
        if f and c:
            print(f"{op+' '+dt+' '+key+': copy / fused':<44} {c/f:10.2f}  >= 0.85")
        t = torch.get(op, {}).get(dt, {}).get(key)
        if f and t:
            print(f"{op+' '+dt+' '+key+': torch / fused':<44} {t/f:10.2f}")
g = "cuda_pcgrad/f16/K4x100M"
f, c = crit(g, "fused"), crit(g, "d2d_copy")
if f and c:
    print(f"{'pcgrad f16 4x100M: copy / fused':<44} {c/f:10.2f}  >= 0.80")
t = torch.get("pcgrad", {}).get("f16", {}).get("K4x100M")
if f and t:
    print(f"{'pcgrad f16 4x100M: torch reference / fused':<44} {t/f:10.2f}  >= 10")

# Fused attention (benches/attention_cuda.rs) against PyTorch's fastest SDPA backend, with the
# achieved rate (criterion's throughput for these groups is the FLOP count).
def group_flops(group):
    for root, _, files in os.walk(os.path.join(out, "criterion")):
        if "benchmark.json" in files:
            meta = json.load(open(os.path.join(root, "benchmark.json")))
            if meta["group_id"] == group and meta.get("throughput"):
                return meta["throughput"].get("Elements")
    return None
for tag, parts in torch.get("attention", {}).items():
    for part, target in (("forward", None), ("forward_backward", 1.0)):
        ours = crit(f"cuda_attention_{part}/bf16/{tag}", "fused")
        theirs = parts.get(part, {})
        if not ours or not theirs:
            continue
        best = min(theirs, key=theirs.get)
        flops = group_flops(f"cuda_attention_{part}/bf16/{tag}")
        rate = f" ({flops / ours / 1e6:.1f} TFLOP/s)" if flops else ""
        goal = f"  >= {target}" if target and tag.startswith("vit-l14") else ""
        print(f"{'attention '+part+' '+tag+': torch '+best+' / fused':<44} {theirs[best]/ours:10.2f}{goal}{rate}")
