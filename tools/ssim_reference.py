#!/usr/bin/env python3
"""Reference SSIM/PSNR values for the CLI's metric test, computed by scikit-image (an
independent implementation). Run by hand:

    pip install scikit-image numpy
    python3 tools/ssim_reference.py > cli/tests/data/ssim_reference.txt

For every shipped test crop: SSIM of the clean crop against its degraded version in the
population convention the CLI uses (`use_sample_covariance=False`), in scikit-image's default
sample convention (to show they differ), and PSNR.
"""
from pathlib import Path

import numpy as np
import skimage
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

root = Path(__file__).resolve().parent.parent / "assets" / "eval" / "test"
print(f"# name ssim_population ssim_sample psnr (scikit-image {skimage.__version__})")
for gt_path in sorted((root / "gt").glob("*.png")):
    gt = imread(gt_path).astype(np.float64) / 255.0
    deg = imread(root / "degraded" / gt_path.name).astype(np.float64) / 255.0
    kw = dict(data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5)
    pop = structural_similarity(gt, deg, use_sample_covariance=False, **kw)
    sample = structural_similarity(gt, deg, **kw)
    psnr = peak_signal_noise_ratio(gt, deg, data_range=1.0)
    print(f"{gt_path.stem} {pop:.10f} {sample:.10f} {psnr:.10f}")
