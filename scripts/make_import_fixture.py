#!/usr/bin/env python3
"""Build the `dgs import` fixtures: a tiny model with the structure of the official DGS-Net
`CLIPModel`, saved with torch.save as the official training saves it, and the logits it gives.

The structure, written here in our words:
- an OpenAI-layout CLIP (`visual.conv1`, `class_embedding`, `positional_embedding`, `ln_pre`,
  `transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_post`, `proj` used as
  `x @ proj`; the text tower with `nn.MultiheadAttention`'s fused `in_proj_weight`,
  `token_embedding`, `ln_final`, `text_projection`, EOS pooling at the largest token id);
- in every vision block, the attention replaced by the LoRA'd one: separate `q_proj`, `k_proj`,
  `v_proj` (each an nn.Linear carrying `w_lora_A` [r, in] and `w_lora_B` [out, r], update scaled
  by alpha / sqrt(r) and merged into the weight in eval mode) and `proj` for the output;
- the frozen copy `clip_model_frozen.clip_model_frozen` (the same CLIP without LoRA) with the
  teacher head `clip_model_frozen.img_frozen_fc`, and the heads `img_fc`, `text_fc`.

Writes tests/fixtures/official_unmerged.pth (saved in training mode: LoRA apart from the weights),
tests/fixtures/official_merged.pth (saved after eval(): the update already in q/k/v, A and B kept
too) and tests/fixtures/official_expected.safetensors (pixels, the eval logits of img_fc, caption
ids and the text features). Generated once, not in CI:
    .torch/bin/python scripts/make_import_fixture.py
"""
import math
import sys
from collections import OrderedDict
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
RANK, ALPHA = 6, 6.0
WIDTH, LAYERS, PATCH, IMAGE, EMBED = 64, 1, 8, 32, 16
TEXT_WIDTH, TEXT_LAYERS, CONTEXT, VOCAB = 64, 1, 8, 50


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LinearLoRA(nn.Linear):
    """nn.Linear plus the official low-rank update, merged into `weight` in eval mode."""

    def __init__(self, base, r, alpha):
        super().__init__(base.in_features, base.out_features, bias=True)
        self.load_state_dict(base.state_dict())
        self.w_lora_A = nn.Parameter(self.weight.new_zeros(r, self.in_features))
        self.w_lora_B = nn.Parameter(self.weight.new_zeros(self.out_features, r))
        nn.init.kaiming_uniform_(self.w_lora_A, a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(r)
        self.merged = False

    def delta(self):
        return (self.w_lora_B @ self.w_lora_A) * self.scaling

    def train(self, mode=True):
        super().train(mode)
        if mode and self.merged:
            self.weight.data -= self.delta()
            self.merged = False
        elif not mode and not self.merged:
            self.weight.data += self.delta()
            self.merged = True
        return self

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        return y if self.merged else y + x @ self.delta().transpose(0, 1)


class LoraAttention(nn.Module):
    """Multi-head self-attention from separate q/k/v LoRA projections and an output `proj`."""

    def __init__(self, mha, r, alpha):
        super().__init__()
        e = mha.embed_dim
        self.heads = mha.num_heads
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            base = nn.Linear(e, e)
            base.weight.data.copy_(mha.in_proj_weight.data[i * e:(i + 1) * e])
            base.bias.data.copy_(mha.in_proj_bias.data[i * e:(i + 1) * e])
            setattr(self, name, LinearLoRA(base, r, alpha))
        self.proj = nn.Linear(e, e)
        self.proj.load_state_dict(mha.out_proj.state_dict())

    def forward(self, q, k, v, need_weights=False, attn_mask=None):
        length, n, e = q.shape
        split = lambda t: t.reshape(length, n * self.heads, e // self.heads).transpose(0, 1).reshape(
            n, self.heads, length, e // self.heads)
        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = y.permute(2, 0, 1, 3).reshape(length, n, e)
        return self.proj(y), None


class Block(nn.Module):
    def __init__(self, width, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // 64)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)
        self.attn_mask = mask

    def forward(self, x):
        h = self.ln_1(x)
        mask = None if self.attn_mask is None else self.attn_mask.to(x.dtype)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Visual(nn.Module):
    def __init__(self):
        super().__init__()
        scale = WIDTH ** -0.5
        self.conv1 = nn.Conv2d(3, WIDTH, PATCH, PATCH, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(WIDTH))
        self.positional_embedding = nn.Parameter(scale * torch.randn((IMAGE // PATCH) ** 2 + 1, WIDTH))
        self.ln_pre = nn.LayerNorm(WIDTH)
        self.transformer = Transformer(WIDTH, LAYERS)
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(scale * torch.randn(WIDTH, EMBED))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, WIDTH)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = Visual()
        mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
        self.transformer = Transformer(TEXT_WIDTH, TEXT_LAYERS, mask)
        self.token_embedding = nn.Embedding(VOCAB, TEXT_WIDTH)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(CONTEXT, TEXT_WIDTH))
        self.ln_final = nn.LayerNorm(TEXT_WIDTH)
        self.text_projection = nn.Parameter(TEXT_WIDTH ** -0.5 * torch.randn(TEXT_WIDTH, EMBED))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


def randomise(module):
    """Random values everywhere (layer norms and biases included), so every tensor matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "w_lora_B" in name or name.endswith("bias") or "ln" in name:
                p.normal_(0.0, 0.1)
                if "ln" in name and name.endswith("weight"):
                    p.add_(1.0)


class Pretrained(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip_model_frozen = clip
        self.img_frozen_fc = nn.Linear(EMBED, 1)


class DGSNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.clip_model = CLIP()
        frozen = CLIP()
        randomise(self.clip_model)
        frozen.load_state_dict(self.clip_model.state_dict())
        for block in self.clip_model.visual.transformer.resblocks:
            block.attn = LoraAttention(block.attn, RANK, ALPHA)
        randomise(self.clip_model.visual.transformer)
        # The LoRA'd copies of the base weights must stay those of the frozen copy.
        for block, plain in zip(self.clip_model.visual.transformer.resblocks,
                                frozen.visual.transformer.resblocks):
            e = WIDTH
            with torch.no_grad():
                for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                    getattr(block.attn, name).weight.copy_(plain.attn.in_proj_weight[i * e:(i + 1) * e])
                    getattr(block.attn, name).bias.copy_(plain.attn.in_proj_bias[i * e:(i + 1) * e])
                block.attn.proj.load_state_dict(plain.attn.out_proj.state_dict())
                for part in ("ln_1", "ln_2", "mlp"):
                    getattr(block, part).load_state_dict(getattr(plain, part).state_dict())
        self.clip_model_frozen = Pretrained(frozen)
        self.text_fc = nn.Linear(EMBED, 1)
        self.img_fc = nn.Linear(EMBED, 1)


def main():
    torch.manual_seed(3)
    model = DGSNet().train()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), FIXTURES / "official_unmerged.pth")
    model.eval()
    torch.save(model.state_dict(), FIXTURES / "official_merged.pth")
    pixels = torch.randn(3, 3, IMAGE, IMAGE)
    ids = torch.tensor([[VOCAB - 2, 5, 9, VOCAB - 1, 0, 0, 0, 0],
                        [VOCAB - 2, 7, VOCAB - 1, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        student = model.clip_model.encode_image(pixels)
        logits = model.img_fc(student).squeeze(1)
        teacher = model.clip_model_frozen.img_frozen_fc(
            model.clip_model_frozen.clip_model_frozen.encode_image(pixels)).squeeze(1)
        text = model.clip_model.encode_text(ids)
    out = {"pixels": pixels, "logits": logits, "teacher_logits": teacher, "ids": ids.to(torch.int64),
           "text_features": text, "student_features": student}
    safetensors.torch.save_file({k: v.contiguous() for k, v in out.items()},
                                str(FIXTURES / "official_expected.safetensors"),
                                metadata={"torch": torch.__version__, "lora_rank": str(RANK),
                                          "lora_alpha": str(ALPHA)})
    sizes = {p.name: p.stat().st_size for p in FIXTURES.glob("official_*")}
    print(f"wrote {sizes}; logits {logits.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
