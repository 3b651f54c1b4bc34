#!/usr/bin/env python3
"""Build the JPEG decoding fixture: generated JPEGs of every kind users have, and the RGB pixels
PIL decodes them to (`Image.open(p).convert("RGB")`, as the official pipeline reads images),
stored losslessly as PNG. tests/data.rs decodes each JPEG with dgs and requires the same bytes.

Kinds: baseline 4:2:0, 4:2:2 and 4:4:4, progressive, grayscale, CMYK (as PIL writes it, Adobe
marker and inverted data), and sizes that are not multiples of the 16-pixel MCU. Also the JPEG
augmentation's round trip: a PNG and, per quality, the pixels of PIL's `save(quality=q)` + `open`
(`roundtrip.png`, `roundtrip_qNN.pil.png`).
Generated once, not in CI:
    .torch/bin/pip install numpy pillow && .torch/bin/python scripts/make_jpeg_fixture.py
"""
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, features

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "jpeg_pil"


def picture(rng, h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, ((x * 3 + y * 5) % 64) * 4], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8))


def main():
    rng = np.random.default_rng(11)
    OUT.mkdir(parents=True, exist_ok=True)
    img, odd = picture(rng, 48, 64), picture(rng, 37, 61)
    cases = {
        "baseline_420": (img, dict(quality=85)),
        "baseline_422": (img, dict(quality=90, subsampling=1)),
        "baseline_444": (img, dict(quality=90, subsampling=0)),
        "progressive": (img, dict(quality=80, progressive=True)),
        "odd_size_420": (odd, dict(quality=75)),
        "grayscale": (odd.convert("L"), dict(quality=85)),
        "cmyk": (img.convert("CMYK"), dict(quality=90)),
    }
    for name, (im, opts) in cases.items():
        path = OUT / f"{name}.jpg"
        im.save(path, **opts)
        Image.open(path).convert("RGB").save(OUT / f"{name}.pil.png")
    odd.save(OUT / "roundtrip.png")
    for q in (24, 30, 55, 75, 95, 100):
        buf = io.BytesIO()
        odd.save(buf, format="jpeg", quality=q)
        Image.open(buf).convert("RGB").save(OUT / f"roundtrip_q{q}.pil.png")
    print(f"libjpeg-turbo {features.version('libjpeg_turbo')}: "
          f"{sum(p.stat().st_size for p in OUT.iterdir())} bytes in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
