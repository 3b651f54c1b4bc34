#!/usr/bin/env python3
"""Build the stage-2 parity fixture with the reference stack (PyTorch + transformers + peft).

A tiny CLIP is built from a config (no download) with peft LoRA on the vision q/k/v projections,
and one stage-2 step is run with the official loss and hook semantics (HorizonTEL/DGS-Net,
networks/trainer.py; LoRA dropout off for determinism). The weights, the batch, the losses and
the gradients of every LoRA matrix and of the two trained heads are written to
tests/fixtures/stage2_tiny.safetensors, which tests/parity.rs replays through our code.

Generated once, not in CI:
    python3 -m venv .torch && .torch/bin/pip install torch transformers peft safetensors
    .torch/bin/python scripts/make_torch_fixture.py
"""
import json
import sys
from pathlib import Path

import peft
import safetensors.torch
import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_loss import stage2_loss  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stage2_tiny.safetensors"
RANK, ALPHA = 4, 8.0


def tiny_config():
    tower = dict(intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, attention_dropout=0.0)
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_channels=3, **tower)
    text = dict(hidden_size=32, vocab_size=1000, max_position_embeddings=16, eos_token_id=999,
                bos_token_id=998, pad_token_id=999, **tower)
    return transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    base = transformers.CLIPModel(tiny_config()).float().eval()
    base_state = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()
                  if not k.endswith("position_ids")}
    lcfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                           target_modules=r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)")
    model = peft.get_peft_model(base, lcfg)
    # peft starts B at zero (so A gets no gradient); give B values so both gradients are tested.
    lora = {}
    for name, p in model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.normal_(0.0, 0.2)
        if "lora_" in name:
            # ...base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight
            short = name.split("base_model.model.")[1].replace(".default.weight", "")
            lora[short] = p
    inner = model.base_model.model
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
    with model.disable_adapter():
        ft = image_features().detach().requires_grad_()
    fx = inner.text_projection(inner.text_model(input_ids=ids).pooler_output).detach().requires_grad_()

    # The official get_loss (scripts/official_loss.py).
    loss, l_img, l_text, l_help = stage2_loss(f, ft, fx, img_fc, teacher, text_fc, labels)
    loss.backward()

    out = {f"base.{k}": v for k, v in base_state.items()}
    for k, p in lora.items():
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
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "lora_rank": str(RANK), "lora_alpha": str(ALPHA), "config": json.dumps(tiny_config().to_dict())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(out, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}; loss {loss.item():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
