#!/usr/bin/env python3
"""Time the surgery the way the official PyTorch code does it, on the GPU machine.

- Row-wise DGS (feature space): the official hook's eager ops (HorizonTEL/DGS-Net,
  networks/trainer.py): min(g_img, 0), the help term added into the gradient, relu(g_text),
  its row norm + eps, the division, then the hook's multiply / sum / multiply / subtract.
- Gram: flatten each gradient list (torch.cat) and one torch.dot per pair.
- Combine: torch._foreach_add_ (PyTorch's own multi-tensor kernels), one call per operand.
- PCGrad: the usual public implementation: flatten each task's gradients, for each task visit
  the others in random order with one torch.dot each and a host-side `if dot < 0` (a device
  sync per pair), project, then average.
- Attention: torch.nn.functional.scaled_dot_product_attention, bf16, forward and forward +
  backward, with PyTorch's default choice and with each backend forced (cuDNN, flash,
  memory-efficient, math), at the shapes of benches/attention_cuda.rs.

Sizes mirror benches/surgery_cuda.rs and benches/attention_cuda.rs. Prints a table and, with --json PATH, writes the medians
(microseconds) for scripts/gpu-check.sh to set beside our kernels.
"""
import argparse
import json
import random
import statistics
import sys
import time

import torch

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def timed(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t) / iters * 1e6)
    return statistics.median(samples)


def tensor_lens(total, count=300, seed=9):
    rng = random.Random(seed)
    w = [rng.uniform(0.1, 2.0) for _ in range(count)]
    s = sum(w)
    return [int(v / s * total) + 1 for v in w]


def rows(dtype, b, d, iters):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, d, device="cuda", dtype=dtype, generator=g)
    a = torch.randn(b, d, device="cuda", dtype=dtype, generator=g)
    h = torch.randn(b, d, device="cuda", dtype=dtype, generator=g)

    def official():
        g_help = torch.minimum(a, torch.zeros_like(a))
        grad = x + (0.2 / b) * g_help
        g_harm = torch.relu(h)
        g_harm = g_harm / (g_harm.norm(p=2, dim=-1, keepdim=True) + 1e-6)
        comp = (grad * g_harm).sum(-1, keepdim=True)
        return grad - comp * g_harm

    return timed(official, iters)


def lists(dtype, k, total):
    lens = tensor_lens(total)
    return [[torch.rand(n, device="cuda", dtype=dtype) for n in lens] for _ in range(k)]


def gram(ls):
    flat = [torch.cat([t.flatten() for t in lst]) for lst in ls]
    k = len(flat)
    out = torch.empty(k, k, device="cuda", dtype=torch.float32)
    for i in range(k):
        for j in range(i, k):
            out[i, j] = torch.dot(flat[i], flat[j]).float()
    return out


def combine(ls, out):
    for o in out:
        o.zero_()
    for lst in ls:
        torch._foreach_add_(out, lst, alpha=0.5)


def pcgrad(ls, seed=7):
    grads = [torch.cat([t.flatten() for t in lst]) for lst in ls]
    rng = random.Random(seed)
    projected = []
    for g_i in grads:
        g_i = g_i.clone()
        order = list(range(len(grads)))
        rng.shuffle(order)
        for j in order:
            g_j = grads[j]
            dot = torch.dot(g_i, g_j)
            if dot < 0:  # host sync, as in the public implementation
                g_i -= dot * g_j / (g_j.norm() ** 2)
        projected.append(g_i)
    return torch.stack(projected).mean(dim=0)


# (name, batch, heads, t, causal): as in benches/attention_cuda.rs.
ATTENTION_SHAPES = [("vit-l14", 32, 16, 257, False), ("vit-b32", 32, 12, 50, False), ("text", 32, 12, 77, True)]


def attention(name, b, h, t, causal, iters):
    """Medians (µs) of SDPA forward and forward + backward, per backend ("default" = PyTorch's
    own choice); a backend that refuses the shape is left out."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, d_o = (torch.randn(b, h, t, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)

    def fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.125)

    def fwd_bwd():
        torch.autograd.grad(fwd(), (q, k, v), d_o)

    backends = {"default": None, "cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    res = {"forward": {}, "forward_backward": {}}
    for label, backend in backends.items():
        for part, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
            try:
                if backend is None:
                    res[part][label] = timed(fn, iters)
                else:
                    with sdpa_kernel([backend]):
                        res[part][label] = timed(fn, iters)
            except RuntimeError as e:
                res.setdefault("refused", {})[label] = str(e).splitlines()[0][:120]
    return res


def copy_us(nbytes, iters):
    src = torch.empty(nbytes // 2, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    return timed(lambda: dst.copy_(src), iters)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write medians (µs) here")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA device", file=sys.stderr)
        return 1
    big = 1 << 20 if args.quick else 100 << 20
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": {}, "gram": {}, "combine": {}, "pcgrad": {}, "copy": {}}
    for name, dt in DTYPES.items():
        for b, d in [(32, 768), (65536, 768)]:
            if args.quick and b > 1024:
                continue
            res["rows"].setdefault(name, {})[f"{b}x{d}"] = rows(dt, b, d, 200 if b == 32 else 20)
    for name, total in [("f32", 50 << 20), ("f16", big), ("bf16", big)]:
        total = min(total, big)
        ls = lists(DTYPES[name], 4, total)
        n = sum(t.numel() for t in ls[0])
        key = f"K4x{n >> 20}M"
        res["gram"].setdefault(name, {})[key] = timed(lambda: gram(ls), 3)
        out = [torch.empty_like(t) for t in ls[0]]
        res["combine"].setdefault(name, {})[key] = timed(lambda: combine(ls, out), 3)
        if name == "f16":
            res["pcgrad"][name] = {key: timed(lambda: pcgrad(ls), 2, warmup=1)}
        del ls, out
        torch.cuda.empty_cache()
    res["copy"]["256MiB"] = copy_us(256 << 20, 10)
    res["attention"] = {}
    for name, b, h, t, causal in ATTENTION_SHAPES:
        tag = f"{name}/B{b}xH{h}xT{t}" + ("/causal" if causal else "")
        res["attention"][tag] = attention(name, b, h, t, causal, 5 if args.quick else 20)
    print(f"torch {res['torch']} on {res['device']}")
    for op in ("rows", "gram", "combine", "pcgrad"):
        for dt, sizes in res[op].items():
            for size, us in sizes.items():
                print(f"torch {op:<8} {dt:<5} {size:<12} {us:12.1f} us")
    for tag, parts in res["attention"].items():
        for part in ("forward", "forward_backward"):
            for backend, us in parts[part].items():
                print(f"torch attention {tag:<28} {part:<17} {backend:<9} {us:10.1f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
