#!/usr/bin/env python3
"""Build the stage-2 parity fixtures: one stage-2 step of the official method in PyTorch, on a
tiny CLIP built from a config (no download), under either LoRA rule.

- `--rule official` (tests/fixtures/stage2_tiny_official.safetensors): the LoRA layer the official
  DGS-Net code trains with, written out below in our words: the frozen linear map plus
  `(alpha / sqrt(r)) * dropout(x) @ (B A)^T`, A [r, in] Kaiming-uniform (a = sqrt(5)), B [out, r]
  zeros, one adapter on each of q, k and v of every vision layer.
- `--rule peft` (tests/fixtures/stage2_tiny.safetensors): the same step with peft's LoRA
  (`alpha / r`).

The loss and the Orthogonal Suppression hook are the official ones (scripts/official_loss.py);
LoRA dropout is off so the step is deterministic, and B gets random values so that both A's and
B's gradients are tested. The weights, the batch, the losses and the gradients of every LoRA
matrix and of the two trained heads are written for tests/parity.rs to replay through our code.

Generated once, not in CI:
    python3 -m venv .torch && .torch/bin/pip install torch transformers peft safetensors
    .torch/bin/python scripts/make_torch_fixture.py --rule official
    .torch/bin/python scripts/make_torch_fixture.py --rule peft
"""
import argparse
import json
import math
import sys
from pathlib import Path

import safetensors.torch
import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_loss import stage2_loss  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OUT = {"peft": FIXTURES / "stage2_tiny.safetensors", "official": FIXTURES / "stage2_tiny_official.safetensors"}
RANK, ALPHA = 4, 8.0
QKV = ("q_proj", "k_proj", "v_proj")


def tiny_config():
    tower = dict(intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, attention_dropout=0.0)
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_channels=3, **tower)
    text = dict(hidden_size=32, vocab_size=1000, max_position_embeddings=16, eos_token_id=999,
                bos_token_id=998, pad_token_id=999, **tower)
    return transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)


class OfficialLoraLinear(nn.Module):
    """A frozen nn.Linear with the official DGS-Net low-rank update (see the module docstring)."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.w_lora_A = nn.Parameter(base.weight.new_zeros(r, base.in_features))
        self.w_lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.w_lora_A, a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(r)
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    def forward(self, x):
        y = self.base(x)
        if not self.enabled:
            return y
        if self.training and self.dropout.p > 0:
            x = self.dropout(x)
        return y + torch.matmul(x, (self.w_lora_B @ self.w_lora_A).transpose(0, 1)) * self.scaling


class Official:
    """The tiny CLIP with official LoRA layers; `lora` maps our names to the (A, B) parameters."""

    def __init__(self, base):
        self.inner, self.lora, self.layers = base, {}, []
        for i, layer in enumerate(base.vision_model.encoder.layers):
            for proj in QKV:
                wrapped = OfficialLoraLinear(getattr(layer.self_attn, proj), RANK, ALPHA, 0.0)
                setattr(layer.self_attn, proj, wrapped)
                self.layers.append(wrapped)
                prefix = f"vision_model.encoder.layers.{i}.self_attn.{proj}"
                self.lora[f"{prefix}.lora_A"] = wrapped.w_lora_A
                self.lora[f"{prefix}.lora_B"] = wrapped.w_lora_B

    def frozen(self):
        outer = self

        class Off:
            def __enter__(self):
                for layer in outer.layers:
                    layer.enabled = False

            def __exit__(self, *exc):
                for layer in outer.layers:
                    layer.enabled = True

        return Off()


class Peft:
    """The tiny CLIP with peft's LoRA on the same projections."""

    def __init__(self, base):
        import peft
        cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                              target_modules=r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)")
        self.model = peft.get_peft_model(base, cfg)
        self.inner = self.model.base_model.model
        self.lora = {}
        for name, p in self.model.named_parameters():
            if "lora_" in name:
                # ...base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight
                self.lora[name.split("base_model.model.")[1].replace(".default.weight", "")] = p

    def frozen(self):
        return self.model.disable_adapter()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", choices=sorted(OUT), required=True)
    rule = parser.parse_args().rule
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    base = transformers.CLIPModel(tiny_config()).float().eval()
    base_state = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()
                  if not k.endswith("position_ids")}
    model = Official(base) if rule == "official" else Peft(base)
    # Both rules start B at zero (so A gets no gradient); give B values so both are tested.
    for name, p in model.lora.items():
        if name.endswith("lora_B"):
            with torch.no_grad():
                p.normal_(0.0, 0.2)
    inner = model.inner
    teacher, img_fc, text_fc = nn.Linear(16, 1), nn.Linear(16, 1), nn.Linear(16, 1)

    b = 4
    pixels = torch.randn(b, 3, 32, 32)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    ids = torch.tensor([[998, 5, 17, 999, 999, 999],
                        [998, 7, 8, 9, 10, 999],
                        [998, 999, 999, 999, 999, 999],
                        [998, 42, 43, 44, 999, 999]])

    def image_features():
        return inner.visual_projection(inner.vision_model(pixel_values=pixels).pooler_output)

    f = image_features()
    with model.frozen():
        ft = image_features().detach().requires_grad_()
    fx = inner.text_projection(inner.text_model(input_ids=ids).pooler_output).detach().requires_grad_()

    loss, l_img, l_text, l_help = stage2_loss(f, ft, fx, img_fc, teacher, text_fc, labels)
    loss.backward()

    out = {f"base.{k}": v for k, v in base_state.items()}
    for k, p in model.lora.items():
        out[f"lora.{k}"] = p.detach().clone().contiguous()
        out[f"grad.lora.{k}"] = p.grad.detach().clone().contiguous()
    for name, head in (("teacher", teacher), ("img_fc", img_fc), ("text_fc", text_fc)):
        for pname, p in head.named_parameters():
            out[f"heads.{name}.{pname}"] = p.detach().clone().contiguous()
            if p.grad is not None and name != "teacher":
                out[f"grad.heads.{name}.{pname}"] = p.grad.detach().clone().contiguous()
    out["batch.pixels"] = pixels
    out["batch.labels"] = labels
    out["batch.ids"] = ids.to(torch.int64)
    for name, v in (("l_img", l_img), ("l_text", l_text), ("l_help", l_help), ("loss", loss)):
        out[f"loss.{name}"] = v.detach().reshape(1)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "lora_rank": str(RANK), "lora_alpha": str(ALPHA), "config": json.dumps(tiny_config().to_dict())}
    if rule == "peft":
        import peft
        meta["peft"] = peft.__version__
    else:
        meta["lora_scaling"] = "official"
    path = OUT[rule]
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(out, str(path), metadata=meta)
    print(f"wrote {path} ({path.stat().st_size} bytes): torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {rule} LoRA rule; loss {loss.item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
