#!/usr/bin/env python3
"""DA-CLIP's image preprocessing at two more image sizes, computed with PIL, for
`models/tests/daclip.rs`.

    python3 tools/pil_preprocess_cases.py [--out models/tests/data/daclip/preprocess_sizes.safetensors]

Upstream's `clip_transform` (daclip-uir, `config/daclip-sde/app.py`) turns an RGB image in
[0, 1] into the encoder's input as `Image.fromarray((image * 255).astype(np.uint8))`, then
torchvision's `Resize(224, BICUBIC)` (which, on a PIL image, is PIL's `Image.resize` to the
shorter side 224 and the longer `int(224 * long / short)`), `CenterCrop(224)` (offsets
`round((size - 224) / 2)`), `ToTensor()` and `Normalize` with CLIP's mean and std. This tool
does those steps with the same library calls (PIL, numpy), without importing upstream, for a
shrunk landscape image (300 x 200) and a shrunk portrait one (389 x 517), and stores each 8-bit
input (`image_a`, `image_b`: uint8 [3, H, W], given to the transform as float32 k / 255) and
the 8-bit crop before `ToTensor` (`bytes_a`, `bytes_b`: uint8 [3, 224, 224]).
The existing upstream case (`preprocess.io.safetensors`, written by tools/daclip_parity.py
through upstream's own function) covers enlarging.

Needs: numpy, pillow, safetensors, torch.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

def clip_transform(image: np.ndarray, resolution: int = 224) -> np.ndarray:
    """Upstream's transform up to the 8-bit crop (`ToTensor` and `Normalize` are exact
    elementwise maps, applied by the test)."""
    pil = Image.fromarray((image * 255).astype(np.uint8))
    w, h = pil.size
    if w <= h:
        size = (resolution, int(resolution * h / w))
    else:
        size = (int(resolution * w / h), resolution)
    pil = pil.resize(size, Image.BICUBIC)
    w, h = pil.size
    top, left = int(round((h - resolution) / 2.0)), int(round((w - resolution) / 2.0))
    pil = pil.crop((left, top, left + resolution, top + resolution))
    return np.asarray(pil).transpose(2, 0, 1)


def image(h: int, w: int, seed: int) -> np.ndarray:
    """8-bit texture with edges and fine detail, so that resampling differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    base = np.stack([0.5 + 0.4 * np.sin(9 * x + 5 * y + p) for p in rng.uniform(0, 6, 3)], -1)
    noise = rng.uniform(-0.15, 0.15, size=(h, w, 3))
    return np.round(np.clip(base + noise, 0, 1) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path,
                    default=Path("models/tests/data/daclip/preprocess_sizes.safetensors"))
    args = ap.parse_args()
    tensors = {}
    for key, (h, w), seed in [("a", (200, 300), 1), ("b", (517, 389), 2)]:
        img8 = image(h, w, seed)
        # The image as the crate receives it: each byte k as the float32 k / 255.
        img = img8.astype(np.float32) / np.float32(255)
        tensors[f"image_{key}"] = torch.from_numpy(img8.transpose(2, 0, 1).copy())
        tensors[f"bytes_{key}"] = torch.from_numpy(clip_transform(img).copy())
    save_file(tensors, str(args.out))
    print(args.out, {k: list(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
