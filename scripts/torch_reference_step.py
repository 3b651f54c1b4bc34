#!/usr/bin/env python3
"""The official DGS-Net stage-2 training step in PyTorch, timed like `dgs bench step`.

transformers' CLIPModel built from a config (random weights, no download) with peft LoRA on the
vision q/k/v projections (rank 6, alpha 6, dropout 0.8), the three linear heads, the official
loss and gradient hook (HorizonTEL/DGS-Net networks/trainer.py), Adam lr 1e-4 on LoRA + img_fc +
text_fc. Base weights in the compute dtype, adapters and heads in f32 (as dgs does). Steps are
timed after warm-up with device synchronisation (and, for DGS, the same phases as `dgs bench
step`: the student forward, and steps split into all forwards, backward, optimiser); memory is torch.cuda.max_memory_allocated and
max_memory_reserved, and the device memory in use after the timed steps (driver view).

    python scripts/torch_reference_step.py --models vit-b32,vit-l14 --dtypes f32,bf16 --json out.json
"""
import argparse
import json
import sys
import time

import peft
import torch
import transformers
from torch import nn

from official_loss import stage2_loss

TOWER = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0)
MODELS = {
    # name: (vision hidden, intermediate, layers, heads, patch), (text hidden, inter, layers, heads), proj
    "vit-b32": ((768, 3072, 12, 12, 32), (512, 2048, 12, 8), 512),
    "vit-l14": ((1024, 4096, 24, 16, 14), (768, 3072, 12, 12), 768),
    "demo": ((64, 128, 2, 4, 32), (32, 64, 1, 4), 32),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def config(name):
    (vh, vi, vl, vn, patch), (th, ti, tl, tn), proj = MODELS[name]
    vision = dict(hidden_size=vh, intermediate_size=vi, num_hidden_layers=vl, num_attention_heads=vn,
                  image_size=224, patch_size=patch, num_channels=3, **TOWER)
    vocab, pos = (64, 16) if name == "demo" else (49408, 77)
    text = dict(hidden_size=th, intermediate_size=ti, num_hidden_layers=tl, num_attention_heads=tn,
                vocab_size=vocab, max_position_embeddings=pos, eos_token_id=vocab - 1,
                bos_token_id=vocab - 2, pad_token_id=vocab - 1, **TOWER)
    return transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=proj)


def build(name, dtype, device):
    cfg = config(name)
    base = transformers.CLIPModel(cfg).to(device=device, dtype=dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    lcfg = peft.LoraConfig(r=6, lora_alpha=6, lora_dropout=0.8,
                           target_modules=r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)")
    model = peft.get_peft_model(base, lcfg)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
    d = cfg.projection_dim
    heads = [nn.Linear(d, 1).to(device) for _ in range(3)]
    return cfg, model, heads


def step_fn(cfg, model, heads, method, batch, device, dtype, compiled=False):
    inner = model.base_model.model
    teacher, img_fc, text_fc = heads
    b = batch
    pixels = torch.randn(b, 3, 224, 224, device=device, dtype=dtype)
    labels = (torch.arange(b, device=device) % 2).float()
    t = cfg.text_config.max_position_embeddings
    ids = torch.randint(0, cfg.text_config.eos_token_id, (b, t), device=device)
    ids[:, -1] = cfg.text_config.eos_token_id
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    params += list(img_fc.parameters()) + list(text_fc.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
    bce = nn.BCEWithLogitsLoss()

    def feats():
        return inner.visual_projection(inner.vision_model(pixel_values=pixels).pooler_output).float()

    def forward():
        model.train()
        f = feats()
        l_img = bce(img_fc(f).squeeze(1), labels)
        if method == "plain-lora":
            return l_img
        with torch.no_grad(), model.disable_adapter():
            ft = feats()
        with torch.no_grad():
            fx = inner.text_projection(inner.text_model(input_ids=ids).pooler_output).float()
        ft.requires_grad_()
        fx.requires_grad_()
        return stage2_loss(f, ft, fx, img_fc, teacher, text_fc, labels)[0]

    if compiled:
        # The stronger anchor: the same forward (models, losses, hook) through torch.compile's
        # default backend; the backward and Adam stay eager, as in the eager rows.
        forward = torch.compile(forward)

    def step(mark=lambda: None):
        loss = forward()
        mark()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mark()
        opt.step()

    def student_forward():
        model.train()
        feats()

    return step, student_forward


def step_phases(device, reps, step, student_forward):
    """As `dgs bench step`: synchronised steps split where the forward and the backward end (the
    parts add up to a step), the student's forward timed on its own beside them; mean ms over
    reps runs after one untimed run."""
    total = [0.0] * 4
    for rep in range(reps + 1):
        timed = 1.0 if rep else 0.0
        sync(device)
        t0 = time.perf_counter()
        student_forward()
        sync(device)
        total[0] += timed * (time.perf_counter() - t0)
        marks = [time.perf_counter()]

        def mark():
            sync(device)
            marks.append(time.perf_counter())

        step(mark)
        sync(device)
        marks.append(time.perf_counter())
        for k in range(3):
            total[k + 1] += timed * (marks[k + 1] - marks[k])
    names = ("student_forward_ms", "forward_ms", "backward_ms", "optimiser_ms")
    return {n: t * 1e3 / reps for n, t in zip(names, total)}


def cpu_reset_peak():
    """Forget the process's peak resident set (Linux), as `dgs bench step` does on the CPU."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_peak_bytes():
    """The process's peak resident set since the last reset (VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        return kb * 1024
    except (OSError, StopIteration):
        return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile(a, device):
    """One DGS step (after warm-up) under torch.profiler: the CUDA kernels by total time."""
    from collections import defaultdict
    from torch.profiler import ProfilerActivity
    name, dt = a.models.split(",")[0], a.dtypes.split(",")[0]
    cfg, model, heads = build(name, DTYPES[dt], device)
    step, _ = step_fn(cfg, model, heads, "dgs", a.batch, device, DTYPES[dt])
    for _ in range(a.warmup):
        step()
    sync(device)
    on_gpu = device.type == "cuda"
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
        step()
        sync(device)
    total, count = defaultdict(float), defaultdict(int)
    for e in prof.events():
        if (e.device_type == torch.autograd.DeviceType.CUDA) == on_gpu:
            k = e.name.split("(")[0].split("<")[0].split("::")[-1][:60]
            total[k] += e.time_range.elapsed_us()
            count[k] += 1
    grand = sum(total.values())
    print(f"PyTorch {name} {dt} dgs step: {len(total)} kernels, {sum(count.values())} launches, "
          f"{grand / 1e3:.1f} ms of GPU time")
    print(f"{'kernel':<60} {'launches':>8} {'ms':>9} {'share':>7}")
    for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:20]:
        print(f"{k:<60} {count[k]:>8} {v / 1e3:>9.2f} {100 * v / grand:>6.1f}%")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="vit-b32,vit-l14")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    ap.add_argument("--compile", action="store_true",
                    help="also time each method with its forward under torch.compile (rows marked compiled)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: one DGS step of the first model and dtype under torch.profiler, "
                         "its CUDA kernels grouped by name")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    rows = []
    if a.profile:
        return profile(a, device)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
          f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    peak = "max alloc" if device.type == "cuda" else "peak RSS"
    print(f"{'model':<8} {'dtype':<5} {'method':<13} {'step ms':>9} {'images/s':>9} {peak:>10} {'reserved':>10}")
    for name in a.models.split(","):
        for dt in a.dtypes.split(","):
            cfg, model, heads = build(name, DTYPES[dt], device)
            variants = [(m, c) for m in ("dgs", "plain-lora") for c in ([False, True] if a.compile else [False])]
            for method, compiled in variants:
                step, student_forward = step_fn(cfg, model, heads, method, a.batch, device, DTYPES[dt], compiled)
                for _ in range(a.warmup):
                    step()
                sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                else:
                    cpu_reset_peak()
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    step()
                sync(device)
                ms = (time.perf_counter() - t0) * 1e3 / a.steps
                # On the CPU: the peak resident set of the timed steps.
                alloc = torch.cuda.max_memory_allocated() if device.type == "cuda" else cpu_peak_bytes()
                reserved = torch.cuda.max_memory_reserved() if device.type == "cuda" else None
                used = None
                if device.type == "cuda":
                    free, total = torch.cuda.mem_get_info()
                    used = total - free
                row = dict(model=name, dtype=dt, method=method, compiled=compiled, batch=a.batch, step_ms=ms,
                           images_per_s=a.batch / (ms / 1e3), max_allocated=alloc, max_reserved=reserved,
                           device_used=used)
                if method == "dgs":
                    row["phases"] = step_phases(device, min(a.steps, 5), step, student_forward)
                rows.append(row)
                gib = lambda v: "—" if v is None else f"{v / 2**30:.2f} GiB"
                label = method + (" compiled" if compiled else "")
                print(f"{name:<8} {dt:<5} {label:<13} {ms:9.2f} {row['images_per_s']:9.1f} {gib(alloc):>10} {gib(reserved):>10}")
                if "phases" in row:
                    p = row["phases"]
                    print(f"{'':<28} student forward {p['student_forward_ms']:.2f} ms, all forwards {p['forward_ms']:.2f} ms, "
                          f"backward {p['backward_ms']:.2f} ms, optimiser {p['optimiser_ms']:.2f} ms")
            del model, heads
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
