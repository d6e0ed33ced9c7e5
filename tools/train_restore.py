#!/usr/bin/env python3
"""Trains the network shipped in assets/restore/: a small IR-SDE ConditionalUNet for Gaussian
denoising (sigma = 25/255, RGB). Run by hand, not by CI:

    pip install torch scikit-image safetensors numpy einops
    python3 tools/train_restore.py UPSTREAM_CHECKOUT --out assets/restore

UPSTREAM_CHECKOUT is a checkout of github.com/Algolzw/image-restoration-sde (MIT licence). The
network class is imported from there at run time (`codes/config/deraining`'s
`ConditionalUNet`, the module of the released deraining/deblurring/SR checkpoints), so the
shipped weights have exactly the layout of a released checkpoint and load through the same
code path (`mrsampler_models::Network::load`). Nothing of upstream is copied into this project.

The one departure from upstream's constructor: the attention blocks are built with
`--heads` x `--head-dim` = 4 x 4 channels instead of upstream's fixed 4 x 32 (the 128-channel
attention at full resolution would dominate the CPU cost of a network this narrow). The
loader infers the width from the weights (4 heads, width from the `to_qkv` shape).

Every default below is the configuration of the shipped weights; `train_log.json` records the
arguments, the loss every 100 steps and the wall time.

Data: random patches (with flips) of public-domain / CC0 photographs shipped in scikit-image:
astronaut, hubble_deep_field, immunohistochemistry, retina. The validation (rocket) and test
(chelsea, coffee) images of `tools/make_eval_set.py` are never seen in training.

Process: the IR-SDE / DA-CLIP schedule (cosine theta, T = 100, eps = 0.005, max_sigma = 50/255,
Theta summed from index 0 as the MR Sampler does): x_t = alpha x0 + (1 - alpha) mu + sigma eps
with integer t ~ U{1..100} and mu = x0 + N(0, (25/255)^2). Fit target: the noise eps (MSE).

Outputs in --out: model.safetensors (the upstream state_dict), parity.safetensors (an input and
this network's PyTorch output, for the Rust parity test), train_log.json.
"""
import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).parent))
from upstream_parity import load_modules  # noqa: E402

T = 100
EPS = 0.005
SIGMA_INF = 50.0 / 255.0
NOISE = 25.0 / 255.0


def schedule():
    """alpha_i and sigma_i for i = 0..T (cosine theta, cumulative sum from index 0)."""
    k = T + 2
    s = 0.008
    c = [math.cos((i / k + s) / (1 + s) * math.pi * 0.5) ** 2 for i in range(k + 1)]
    theta = [1 - c[i + 1] / c[0] for i in range(T + 1)]
    cum = np.cumsum(theta)
    dt = -math.log(EPS) / cum[-1]
    alpha = np.exp(-cum * dt)
    sigma = SIGMA_INF * np.sqrt(1 - np.exp(-2 * cum * dt))
    return torch.tensor(alpha, dtype=torch.float32), torch.tensor(sigma, dtype=torch.float32)


def build(checkout: Path, nf: int, depth: int, heads: int, head_dim: int):
    pkg = load_modules(checkout, "deraining")
    arch = sys.modules[pkg.__name__ + ".DenoisingUNet_arch"]
    util = sys.modules[pkg.__name__ + ".module_util"]
    arch.LinearAttention = functools.partial(util.LinearAttention, heads=heads, dim_head=head_dim)
    arch.Attention = functools.partial(util.Attention, heads=heads, dim_head=head_dim)
    return pkg.ConditionalUNet(in_nc=3, out_nc=3, nf=nf, depth=depth)


def images():
    train = [skdata.astronaut(), skdata.hubble_deep_field(), skdata.immunohistochemistry(),
             skdata.retina()]
    return [torch.tensor(im, dtype=torch.float32).permute(2, 0, 1) / 255.0 for im in train]


def batch(train, n, size, gen):
    out = []
    for _ in range(n):
        im = train[int(torch.randint(len(train), (1,), generator=gen))]
        _, h, w = im.shape
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        p = im[:, y:y + size, x:x + size]
        if torch.rand(1, generator=gen) < 0.5:
            p = p.flip(2)
        if torch.rand(1, generator=gen) < 0.5:
            p = p.flip(1)
        out.append(p)
    return torch.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upstream", type=Path, help="root of an image-restoration-sde checkout")
    ap.add_argument("--out", default="assets/restore")
    ap.add_argument("--nf", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    os.makedirs(a.out, exist_ok=True)
    alpha, sigma = schedule()
    train = images()
    net = build(a.upstream, a.nf, a.depth, a.heads, a.head_dim)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps, eta_min=a.lr / 20)
    log = []
    start = time.time()
    running = 0.0
    for step in range(a.steps):
        x0 = batch(train, a.batch, a.patch, gen)
        mu = x0 + NOISE * torch.randn(x0.shape, generator=gen)
        t = torch.randint(1, T + 1, (a.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        al = alpha[t][:, None, None, None]
        sg = sigma[t][:, None, None, None]
        xt = al * x0 + (1 - al) * mu + sg * eps
        loss = F.mse_loss(net(xt, mu, t.float()), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 100 == 0 or step == a.steps - 1:
            n = (step % 100) + 1
            log.append({"step": step + 1, "loss": running / n, "seconds": time.time() - start})
            print(f"step {step + 1:5d} loss {running / n:.5f} {time.time() - start:.0f}s",
                  flush=True)
            running = 0.0
    net.eval()
    weights = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(weights, os.path.join(a.out, "model.safetensors"))
    # Parity sample: odd sizes (the network pads to a multiple of 2^depth), two times.
    g = torch.Generator().manual_seed(2)
    px = torch.rand((2, 3, 30, 45), generator=g)
    pmu = torch.rand((2, 3, 30, 45), generator=g)
    pt = torch.tensor([37.5, 100.0])
    with torch.no_grad():
        pout = net(px, pmu, pt)
    save_file({"x": px, "mu": pmu, "t": pt, "out": pout.contiguous()},
              os.path.join(a.out, "parity.safetensors"))
    n_params = sum(p.numel() for p in net.parameters())
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    args.pop("upstream")
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"args": args, "params": n_params, "torch": torch.__version__,
                   "seconds": time.time() - start, "log": log}, f, indent=1)
    print(f"saved {n_params} parameters to {a.out}")


if __name__ == "__main__":
    main()
