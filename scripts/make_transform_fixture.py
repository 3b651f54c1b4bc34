#!/usr/bin/env python3
"""Build the official-transform fixture: generated PNGs and, for each, the patches the official
DGS-Net PatchSelectionTransform selects, in its order before the shuffle.

The transform, in our words: the image at full size, cropped at the top-left to whole 32-pixel
patches, listed row-major; each patch's spectral entropy from its gray level
(0.299 R + 0.587 G + 0.114 B, divided by 255 only when its maximum exceeds 1); numpy's default
argsort of the entropies; the 24 first and 25 last indices of that order (overlapping, so
repeated, when there are fewer than 49 patches). Images of every kind of size are included —
under 32 px (no patch), fewer than 25 and fewer than 49 patches, sides that are not multiples
of 32 — and black borders and flat areas, whose patches tie in entropy.

numpy's argsort orders equal values by its portable introsort unless it dispatches to a
vectorised sort (x86-simd-sort: AVX-512 since numpy 1.25, AVX2 since numpy 2), whose order of
ties differs and depends on the CPU. dgs reproduces the portable one, so the fixture is made with
the vectorised sorts switched off (numpy 2 names: X86_V3, X86_V4, AVX512_ICL, AVX512_SPR).

Writes tests/fixtures/official_transform/{NAME.png, expected.json}. Generated once, not in CI:
    .torch/bin/pip install numpy pillow
    NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" \
        .torch/bin/python scripts/make_transform_fixture.py
"""
import os
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "official_transform"
PATCH, LOW, HIGH = 32, 24, 25


def spectral_entropy(patch):
    gray = np.dot(patch[..., :3], [0.299, 0.587, 0.114])
    if gray.max() > 1:
        gray = gray / 255.0
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray))) ** 2
    p = power.flatten() / (np.sum(power) + 1e-12)
    return -np.sum(p * np.log2(p + 1e-12))


def selected(img):
    h, w = img.shape[:2]
    h, w = h - h % PATCH, w - w % PATCH
    entropies = np.array([spectral_entropy(img[i:i + PATCH, j:j + PATCH])
                          for i in range(0, h, PATCH) for j in range(0, w, PATCH)])
    order = np.argsort(entropies)
    return np.concatenate([order[:LOW], order[-HIGH:]]).tolist()


def image(rng, h, w, border=0, flat=False):
    """Smooth colour gradients with texture in places, optional black border and flat blocks."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 / max(w, 1)), (y * 255 / max(h, 1)), ((x + y) % 97) * 2.5], axis=-1)
    texture = rng.integers(0, 60, size=(h, w, 3)) * (((x // 40) + (y // 40)) % 3 == 0)[..., None]
    img = np.clip(img + texture, 0, 255).astype(np.uint8)
    if flat:
        img[h // 3:2 * h // 3, :w // 2] = 128
        img[: h // 4, w // 2:] = 1  # dark, but the max > 1 rule leaves it unscaled
    if border:
        img[:border] = 0
        img[-border:] = 0
    return img


def main():
    if "X86_V3" not in os.environ.get("NPY_DISABLE_CPU_FEATURES", ""):
        print("set NPY_DISABLE_CPU_FEATURES (see the docstring): numpy's vectorised argsort orders ties "
              "its own way", file=sys.stderr)
        return 2
    rng = np.random.default_rng(5)
    cases = {
        "tiny_20x300": image(rng, 20, 300),
        "one_patch_40x40": image(rng, 40, 40),
        "six_patches_70x100": image(rng, 70, 100),
        "thirty_patches_170x200": image(rng, 170, 200, flat=True),
        "odd_230x257": image(rng, 230, 257, border=20),
        "ties_320x320": image(rng, 320, 320, border=64, flat=True),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, img in cases.items():
        Image.fromarray(img).save(OUT / f"{name}.png", optimize=True)
        expected[name] = selected(img)
    # numpy's argsort on its own: values with many ties, around and far above the insertion-sort
    # threshold, NaN included.
    argsort = []
    for n, levels in ((5, 2), (17, 3), (100, 4), (1000, 7)):
        values = rng.integers(0, levels, n).astype(np.float64)
        if n == 1000:
            values[::97] = np.nan
        argsort.append({"values": [None if np.isnan(v) else v for v in values.tolist()],
                        "order": np.argsort(values).tolist()})
    (OUT / "expected.json").write_text(json.dumps(
        {"numpy": np.__version__, "selected": expected, "argsort": argsort}))
    print({p.name: p.stat().st_size for p in OUT.iterdir()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
