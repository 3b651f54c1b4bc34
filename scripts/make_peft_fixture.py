#!/usr/bin/env python3
"""Build the peft adapter fixtures: adapters trained-looking (random B) on the tiny CLIP of
make_torch_fixture.py (the same seed, so the same base weights as
tests/fixtures/stage2_tiny.safetensors), saved with peft's save_pretrained, and the student image
features they give, for tests/peft.rs.

Two folders under tests/fixtures/peft/: `plain` (peft's alpha / r scaling, adapters on q and v
only) and `rslora` (use_rslora: alpha / sqrt(r), the official DGS-Net rule, on q, k and v).
Generated once, not in CI:
    .torch/bin/python scripts/make_peft_fixture.py
"""
import sys
from pathlib import Path

import peft
import safetensors.torch
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_torch_fixture import tiny_config  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "peft"
CASES = {"plain": (["q_proj", "v_proj"], False), "rslora": (["q_proj", "k_proj", "v_proj"], True)}


def main():
    pixels = None
    for name, (projections, rslora) in CASES.items():
        torch.manual_seed(0)
        base = transformers.CLIPModel(tiny_config()).float().eval()
        target = r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(" + "|".join(projections) + ")"
        cfg = peft.LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=target, use_rslora=rslora)
        model = peft.get_peft_model(base, cfg)
        gen = torch.Generator().manual_seed(7)
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        if pixels is None:
            pixels = torch.randn(3, 3, 32, 32, generator=gen)
        model.save_pretrained(OUT / name)
        (OUT / name / "README.md").unlink()  # peft's model card template: nothing the tests read
        inner = model.base_model.model
        with torch.no_grad():
            features = inner.visual_projection(inner.vision_model(pixel_values=pixels).pooler_output)
        safetensors.torch.save_file({"pixels": pixels.contiguous(), "features": features.contiguous()},
                                    str(OUT / name / "expected.safetensors"),
                                    metadata={"peft": peft.__version__, "torch": torch.__version__})
        print(f"wrote {OUT / name}: {sorted(p.name for p in (OUT / name).iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
