#!/usr/bin/env python3
"""Writes an independent check set for the shipped restorer (run by hand, not shipped):

    pip install scikit-image scikit-learn matplotlib numpy
    python3 tools/make_other_set.py --out target/other
    cargo run --release -p mrsampler-cli -- eval --gt target/other/gt \
        --degraded target/other/degraded --classical on

Eight 128 x 128 crops of photographs that come with other Python packages and that the shipped
network never saw in training or validation (tools/train_restore.py uses only scikit-image's
data): scikit-learn's `china.jpg` and `flower.jpg` (CC BY 2.0, see scikit-learn's
`datasets/images/README.txt`) and matplotlib's `grace_hopper.jpg` (matplotlib's sample data).
They are not redistributed by this project. Each crop gets Gaussian noise of standard
deviation 25/255 from a fixed seed, clipped and rounded to 8 bits, as `tools/make_eval_set.py`
does for the shipped set.
"""
import argparse
import os
from pathlib import Path

import matplotlib
import numpy as np
import sklearn.datasets
from skimage.io import imread, imsave

SIZE = 128
NOISE = 25.0 / 255.0
SKLEARN = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
MPL = Path(os.path.dirname(matplotlib.__file__)) / "mpl-data" / "sample_data"
# (name, file, top, left)
CROPS = [
    ("china_roof", SKLEARN / "china.jpg", 60, 200),
    ("china_wall", SKLEARN / "china.jpg", 250, 330),
    ("china_trees", SKLEARN / "china.jpg", 290, 40),
    ("flower_petals", SKLEARN / "flower.jpg", 120, 250),
    ("flower_centre", SKLEARN / "flower.jpg", 200, 380),
    ("flower_leaves", SKLEARN / "flower.jpg", 290, 60),
    ("hopper_face", MPL / "grace_hopper.jpg", 120, 190),
    ("hopper_uniform", MPL / "grace_hopper.jpg", 400, 220),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("target/other"))
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for name, path, top, left in CROPS:
        im = imread(path)
        crop = im[top:top + SIZE, left:left + SIZE, :3].astype(np.float64) / 255.0
        assert crop.shape == (SIZE, SIZE, 3), (name, crop.shape)
        noisy = np.clip(crop + NOISE * rng.standard_normal(crop.shape), 0.0, 1.0)
        for kind, arr in (("gt", crop), ("degraded", noisy)):
            d = a.out / kind
            d.mkdir(parents=True, exist_ok=True)
            imsave(d / f"{name}.png", np.round(arr * 255.0).astype(np.uint8), check_contrast=False)
    print(f"wrote {len(CROPS)} crops to {a.out}")


if __name__ == "__main__":
    main()
