#!/usr/bin/env python3
"""Writes the evaluation images shipped in assets/eval/ (run by hand, not by CI):

    pip install scikit-image numpy
    python3 tools/make_eval_set.py --out assets/eval

Two disjoint sets of 128 x 128 RGB crops of photographs shipped in scikit-image, none of which
the shipped network saw in training (tools/train_restore.py trains on astronaut,
hubble_deep_field, immunohistochemistry and retina):

* val/  (where configurations are chosen): four crops of `rocket` (public domain, SpaceX);
* test/ (where results are reported): three crops of `chelsea` (CC0, Stefan van der Walt) and
  three of `coffee` (CC0, Rachel Michetti).

Each set has gt/NAME.png (the clean crop) and degraded/NAME.png (the crop plus Gaussian noise
of standard deviation 25/255 from a fixed seed, clipped to [0, 1] and rounded to 8 bits, as a
noisy photograph is stored). `mrsampler eval --gt DIR --degraded DIR` pairs them by name.
"""
import argparse
from pathlib import Path

import numpy as np
from skimage import data as skdata
from skimage.io import imsave

SIZE = 128
NOISE = 25.0 / 255.0
# (set, name, image, top, left)
CROPS = [
    ("val", "rocket_nose", "rocket", 100, 256),
    ("val", "rocket_base", "rocket", 280, 270),
    ("val", "rocket_tower", "rocket", 150, 0),
    ("val", "rocket_lights", "rocket", 280, 110),
    ("test", "chelsea_eye_left", "chelsea", 60, 100),
    ("test", "chelsea_eye_right", "chelsea", 60, 240),
    ("test", "chelsea_nose", "chelsea", 172, 180),
    ("test", "coffee_cup", "coffee", 80, 200),
    ("test", "coffee_spoon", "coffee", 230, 300),
    ("test", "coffee_saucer", "coffee", 260, 450),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("assets/eval"))
    ap.add_argument("--seed", type=int, default=2024)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for split, name, image, top, left in CROPS:
        im = getattr(skdata, image)()
        crop = im[top:top + SIZE, left:left + SIZE].astype(np.float64) / 255.0
        assert crop.shape == (SIZE, SIZE, 3), (name, crop.shape)
        noisy = np.clip(crop + NOISE * rng.standard_normal(crop.shape), 0.0, 1.0)
        for kind, arr in (("gt", crop), ("degraded", noisy)):
            d = a.out / split / kind
            d.mkdir(parents=True, exist_ok=True)
            imsave(d / f"{name}.png", np.round(arr * 255.0).astype(np.uint8), check_contrast=False)
    print(f"wrote {len(CROPS)} crops to {a.out}")


if __name__ == "__main__":
    main()
