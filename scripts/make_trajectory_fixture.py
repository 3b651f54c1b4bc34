#!/usr/bin/env python3
"""Build the trajectory parity fixture: 20 stage-2 steps of the official method in PyTorch with
Adam, on the tiny CLIP of make_torch_fixture.py with the official DGS-Net LoRA layer (alpha /
sqrt(r)), LoRA dropout 0, B starting at zero as in the official code.

Written to tests/fixtures/stage2_trajectory.safetensors: the starting weights (base, LoRA, heads),
the batches (step i uses batch i mod 5), the per-step losses, every trainable after the last
step, and the feature-drift metric (mean cosine between student and frozen image features on a
held-out batch) at the start and at the end. tests/parity.rs runs the same steps through our
trainer and compares.

Generated once, not in CI (same environment as make_torch_fixture.py):
    .torch/bin/python scripts/make_trajectory_fixture.py
"""
import json
import sys
from pathlib import Path

import safetensors.torch
import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_torch_fixture import ALPHA, RANK, Official, tiny_config  # noqa: E402
from official_loss import stage2_loss  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stage2_trajectory.safetensors"
STEPS, BATCHES, BATCH, LR = 20, 5, 4, 1e-3


def main():
    torch.manual_seed(1)
    torch.use_deterministic_algorithms(True)
    base = transformers.CLIPModel(tiny_config()).float()
    base_state = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()
                  if not k.endswith("position_ids")}
    model = Official(base)
    inner = model.inner
    inner.train()
    teacher, img_fc, text_fc = nn.Linear(16, 1), nn.Linear(16, 1), nn.Linear(16, 1)
    start = {f"lora.{k}": p.detach().clone() for k, p in model.lora.items()}
    for name, head in (("teacher", teacher), ("img_fc", img_fc), ("text_fc", text_fc)):
        for pname, p in head.named_parameters():
            start[f"heads.{name}.{pname}"] = p.detach().clone()
    trained = list(model.lora.items()) + [(f"img_fc.{n}", p) for n, p in img_fc.named_parameters()] \
        + [(f"text_fc.{n}", p) for n, p in text_fc.named_parameters()]
    opt = torch.optim.Adam([p for _, p in trained], lr=LR, betas=(0.9, 0.999), eps=1e-8)

    pixels = torch.randn(BATCHES, BATCH, 3, 32, 32)
    labels = (torch.rand(BATCHES, BATCH) < 0.5).float()
    ids = torch.randint(0, 998, (BATCHES, BATCH, 6))
    ids[:, :, 0] = 998
    ids[:, :, -1] = 999
    held_out = torch.randn(6, 3, 32, 32)

    def image_features(px):
        return inner.visual_projection(inner.vision_model(pixel_values=px).pooler_output)

    def drift():
        with torch.no_grad():
            s = image_features(held_out)
            with model.frozen():
                t = image_features(held_out)
            cos = (s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1) + 1e-12)
            return cos.mean().reshape(1)

    drift_start = drift()
    losses = []
    for step in range(STEPS):
        b = step % BATCHES
        opt.zero_grad(set_to_none=True)
        f = image_features(pixels[b])
        with torch.no_grad(), model.frozen():
            ft = image_features(pixels[b])
        with torch.no_grad():
            fx = inner.text_projection(inner.text_model(input_ids=ids[b]).pooler_output)
        loss, *_ = stage2_loss(f, ft.requires_grad_(), fx.requires_grad_(), img_fc, teacher, text_fc, labels[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())

    out = {f"base.{k}": v for k, v in base_state.items()}
    out.update({k: v.contiguous() for k, v in start.items()})
    for k, p in trained:
        key = f"lora.{k}" if k.startswith("vision_model.") else f"heads.{k}"
        out[f"final.{key}"] = p.detach().clone().contiguous()
    out["batch.pixels"] = pixels
    out["batch.labels"] = labels
    out["batch.ids"] = ids.to(torch.int64)
    out["held_out.pixels"] = held_out
    out["loss.steps"] = torch.tensor(losses)
    out["drift.start"] = drift_start
    out["drift.end"] = drift()
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "lora_rank": str(RANK),
            "lora_alpha": str(ALPHA), "lora_scaling": "official", "lr": str(LR), "steps": str(STEPS),
            "config": json.dumps(tiny_config().to_dict())}
    safetensors.torch.save_file(out, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): losses {losses[0]:.6f} → {losses[-1]:.6f}, "
          f"drift {drift_start.item():.6f} → {out['drift.end'].item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
