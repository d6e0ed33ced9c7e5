#!/usr/bin/env python3
"""End-to-end wall time of the PyTorch pipelines users run today, on the shipped network, for
the comparison with `mrsampler restore` in docs/benchmarks.md. Run by hand:

    pip install torch numpy safetensors einops scikit-image opencv-python-headless tqdm
    python3 tools/torch_pipeline_bench.py IRSDE_CHECKOUT MRS_CHECKOUT IMAGE.png [--threads 2]

IRSDE_CHECKOUT: github.com/Algolzw/image-restoration-sde (MIT), for the network class.
MRS_CHECKOUT: github.com/grrrute/mr-sampler, the official MR Sampler (its DA-CLIP code base's
`universal-image-restoration/utils/{sde_utils,sampler}.py`: `IRSDE.reverse_posterior`, the
upstream posterior sampler, and `MRSampler`). Both are imported at run time, nothing is copied.
Two shims let that code import on current libraries without changing what it computes: a stub
`torchvision` (imported by its image-saving helpers only) and `numpy.int` (a removed alias used
in a type annotation).

The shipped weights are loaded into the upstream ConditionalUNet (attention 4 x 4, as trained).
For the image (its degraded version, [1, 3, H, W] in [0, 1]) it prints one row per pipeline:
median wall seconds of `--repeats` runs after a warm-up, and peak resident memory.
"""
import argparse
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from skimage.io import imread

sys.path.insert(0, str(Path(__file__).parent))
from train_restore import build  # noqa: E402


def import_official(checkout: Path):
    np.int = int  # removed alias in an annotation of utils/sampler.py
    tv, tu = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    tu.make_grid = None
    tv.utils = tu
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.utils", tu)
    sys.path.insert(0, str(checkout / "universal-image-restoration"))
    import utils.sampler as sampler  # noqa: E402
    import utils.sde_utils as sde_utils  # noqa: E402
    return sde_utils, sampler


class Net(torch.nn.Module):
    """The upstream U-Net behind DA-CLIP's model call signature (contexts ignored)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, mu, t, **_):
        if not torch.is_tensor(t):
            t = torch.tensor([float(t)])
        t = t.float().reshape(-1).expand(x.shape[0])
        return self.unet(x, mu, t)


def timed(f, repeats):
    f()
    ts = []
    for _ in range(repeats):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("irsde", type=Path)
    ap.add_argument("mrs", type=Path)
    ap.add_argument("image", type=Path, help="the degraded image (PNG, RGB)")
    ap.add_argument("--weights", type=Path,
                    default=Path(__file__).parent.parent / "assets/restore/model.safetensors")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    unet = build(a.irsde, nf=8, depth=3, heads=4, head_dim=4)
    unet.load_state_dict(load_file(str(a.weights)))
    net = Net(unet).eval()
    sde_utils, sampler = import_official(a.mrs)
    opt = {"sde": {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005}}
    sde = sde_utils.IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005, device="cpu")
    sde.set_model(net)
    mu = torch.tensor(imread(a.image).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    sde.set_mu(mu)
    h, w = mu.shape[2:]
    print(f"| pipeline (PyTorch {torch.__version__}, {a.threads} threads, {w}x{h}) | NFE | seconds |")
    print("|---|---|---|")

    def posterior():
        with torch.no_grad():
            x = mu + torch.randn_like(mu) * sde.max_sigma
            return sde.reverse_posterior(x)

    print(f"| upstream posterior sampling (IRSDE.reverse_posterior) | 100 | "
          f"{timed(posterior, a.repeats):.3f} |", flush=True)
    for kind in ("sde", "ode"):
        for nfe in a.nfe:
            s = sampler.MRSampler(sde, opt, num_sample_steps=nfe, solver_type=kind,
                                  parameterization="data", order=2, fit_target="noise")
            secs = timed(lambda: s.sampling(mu), a.repeats)
            print(f"| official MR Sampler, {kind}-2 data | {nfe} | {secs:.3f} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
