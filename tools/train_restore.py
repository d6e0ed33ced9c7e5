#!/usr/bin/env python3
"""Trains the network shipped in assets/restore/: a Refusion ConditionalNAFNet for Gaussian
denoising (sigma = 25/255, RGB) under the IR-SDE / DA-CLIP mean-reverting schedule. Run by
hand, not by CI (about 70 minutes on the 2-core dev machine with the defaults):

    pip install torch scikit-image safetensors numpy einops
    python3 tools/train_restore.py UPSTREAM_CHECKOUT --out assets/restore

UPSTREAM_CHECKOUT is a checkout of github.com/Algolzw/image-restoration-sde (MIT licence). The
network class is imported from there at run time (`codes/config/deraining`'s
`ConditionalNAFNet`, Refusion's module; `--arch unet` trains its `ConditionalUNet` instead), so
the shipped weights have exactly the layout of a released checkpoint and load through the same
code path (`mrsampler_models::Network::load`). Nothing of upstream is copied into this project.

Every default below is the configuration of the shipped weights; `train_log.json` records the
arguments, the training loss every 100 steps, the validation loss at every check and the wall
time. The run is deterministic for a given thread count (seeded generators, CPU kernels).

Data (`--help` of each flag says more):
* colour photographs shipped in scikit-image: astronaut, stereo_motorcycle (left and right
  views), hubble_deep_field, immunohistochemistry, retina, each also at half size;
* gray photographs and textures shipped in scikit-image, replicated to RGB: camera, brick,
  grass, gravel, moon, coins, clock, cell, page, text;
* synthetic "dead leaves" images (occluding disks with a power-law radius distribution and
  random colours, some of them slightly blurred), generated from a fixed seed;
* never: rocket (the validation crops of `tools/make_eval_set.py`), chelsea and coffee (the
  test crops), nor any photograph of another package.
Patches are drawn at random with the eight flips/rotations and a random channel order; their
side varies from batch to batch by up to 7 pixels below `--patch`, so that the network also
learns images whose size is not a multiple of its down-sampling factor (it pads them).

Degradation, as the evaluation images are made: mu = round(255 clip(x0 + N(0, (25/255)^2))) /
255 (a noisy photograph stored in 8 bits).

Process: the IR-SDE / DA-CLIP schedule (cosine theta, T = 100, eps = 0.005, max_sigma = 50/255,
Theta summed from index 0 as the MR Sampler does): x_t = alpha x0 + (1 - alpha) mu + sigma eps
with integer t ~ U{1..100}. Fit target: the noise eps (MSE).

Optimisation: AdamW (betas 0.9, 0.9; weight decay 0), linear warm-up then cosine decay of the
learning rate, gradient-norm clipping, an exponential moving average (EMA) of the weights. Every
`--val-every` steps the EMA weights are scored on the validation crops (noise MSE at fixed times
and fixed noise); the best-scoring EMA weights are the ones saved.

Outputs in --out: model.safetensors (the upstream state_dict), parity.safetensors (an input and
this network's PyTorch output, for the Rust parity test), train_log.json.
"""
import argparse
import copy
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
from skimage.io import imread
from skimage.transform import rescale

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


def build(a):
    pkg = load_modules(a.upstream, "deraining")
    if a.arch == "nafnet":
        return pkg.ConditionalNAFNet(img_channel=3, width=a.width, enc_blk_nums=a.enc,
                                     middle_blk_num=a.middle, dec_blk_nums=a.dec)
    arch = sys.modules[pkg.__name__ + ".DenoisingUNet_arch"]
    util = sys.modules[pkg.__name__ + ".module_util"]
    # Attention built with 4 x 4 channels instead of upstream's fixed 4 x 32 (the loader
    # infers the width from the `to_qkv` shape).
    arch.LinearAttention = functools.partial(util.LinearAttention, heads=4, dim_head=4)
    arch.Attention = functools.partial(util.Attention, heads=4, dim_head=4)
    return pkg.ConditionalUNet(in_nc=3, out_nc=3, nf=a.width, depth=a.depth)


def to_chw(im):
    """uint8 / float HxW or HxWx3 -> float32 3xHxW in [0, 1]."""
    im = np.asarray(im)
    if im.dtype == np.uint8:
        im = im.astype(np.float32) / 255.0
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    return torch.tensor(np.ascontiguousarray(im[:, :, :3]), dtype=torch.float32).permute(2, 0, 1)


def quantize(x):
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def photographs():
    left, right, _ = skdata.stereo_motorcycle()
    colour = [skdata.astronaut(), left, right, skdata.hubble_deep_field(),
              skdata.immunohistochemistry(), skdata.retina()]
    gray = [skdata.camera(), skdata.brick(), skdata.grass(), skdata.gravel(), skdata.moon(),
            skdata.coins(), skdata.clock(), skdata.cell(), skdata.page(), skdata.text()]
    out = {"colour": [], "gray": []}
    for kind, ims in (("colour", colour), ("gray", gray)):
        for im in ims:
            x = to_chw(im)
            out[kind].append(x)
            half = rescale(x.permute(1, 2, 0).numpy(), 0.5, channel_axis=2, anti_aliasing=True)
            out[kind].append(quantize(torch.tensor(half, dtype=torch.float32).permute(2, 0, 1)))
    return out


def dead_leaves(n, size, rng):
    """`n` dead-leaves images (occluding disks, radius density ~ r^-3 on [2, size/3])."""
    out = []
    yy, xx = np.mgrid[0:size, 0:size]
    rmin, rmax = 2.0, size / 3.0
    for _ in range(n):
        im = np.zeros((size, size, 3), np.float32)
        covered = np.zeros((size, size), bool)
        # Painted front to back: a disk only fills pixels that no earlier disk covered.
        while covered.mean() < 0.995:
            u = rng.random()
            r = 1.0 / math.sqrt(u / rmin**2 + (1 - u) / rmax**2)  # inverse CDF of r^-3
            cy, cx = rng.random(2) * size
            y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            disk = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
            fill = disk & ~covered[y0:y1, x0:x1]
            im[y0:y1, x0:x1][fill] = rng.random(3)
            covered[y0:y1, x0:x1] |= fill
        x = torch.tensor(im).permute(2, 0, 1)
        if rng.random() < 0.5:  # soft edges, as in a photograph
            x = gaussian_blur(x, 0.5 + rng.random())
        out.append(quantize(x))
    return out


def gaussian_blur(x, s):
    r = int(math.ceil(3 * s))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * s * s))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="reflect"), k, groups=3)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)
    return y[0]


def patch(im, size, gen):
    _, h, w = im.shape
    y = int(torch.randint(h - size + 1, (1,), generator=gen))
    x = int(torch.randint(w - size + 1, (1,), generator=gen))
    p = im[:, y:y + size, x:x + size]
    k = int(torch.randint(8, (1,), generator=gen))
    if k & 1:
        p = p.flip(2)
    if k & 2:
        p = p.flip(1)
    if k & 4:
        p = p.transpose(1, 2)
    return p[torch.randperm(3, generator=gen)]


def batch(pools, weights, n, size, gen):
    out = []
    for _ in range(n):
        pool = pools[int(torch.multinomial(weights, 1, generator=gen))]
        out.append(patch(pool[int(torch.randint(len(pool), (1,), generator=gen))], size, gen))
    return torch.stack(out)


def diffuse(x0, t, alpha, sigma, gen):
    mu = quantize(x0 + NOISE * torch.randn(x0.shape, generator=gen))
    eps = torch.randn(x0.shape, generator=gen)
    al = alpha[t][:, None, None, None]
    sg = sigma[t][:, None, None, None]
    return al * x0 + (1 - al) * mu + sg * eps, mu, eps


def validation_set(root, alpha, sigma):
    """Each validation crop at 8 fixed times with fixed noise."""
    gen = torch.Generator().manual_seed(3)
    names = sorted(p for p in (root / "gt").iterdir() if p.suffix == ".png")
    x0 = torch.stack([to_chw(imread(p)) for p in names])
    times = torch.tensor([5, 15, 30, 45, 60, 75, 90, 100])
    x0 = x0.repeat_interleave(len(times), 0)
    t = times.repeat(len(names))
    xt, mu, eps = diffuse(x0, t, alpha, sigma, gen)
    return xt, mu, t, eps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upstream", type=Path, help="root of an image-restoration-sde checkout")
    ap.add_argument("--out", default="assets/restore")
    ap.add_argument("--val", type=Path, default=Path("assets/eval/val"),
                    help="validation crops (gt/*.png) for choosing the saved weights")
    ap.add_argument("--arch", choices=["nafnet", "unet"], default="nafnet")
    ap.add_argument("--width", type=int, default=32, help="NAFNet width / U-Net nf")
    ap.add_argument("--enc", type=json.loads, default=[1, 1, 2], help="NAFNet encoder blocks")
    ap.add_argument("--middle", type=int, default=2, help="NAFNet middle blocks")
    ap.add_argument("--dec", type=json.loads, default=[1, 1, 1], help="NAFNet decoder blocks")
    ap.add_argument("--depth", type=int, default=3, help="U-Net depth")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--leaves", type=int, default=160, help="dead-leaves images (192 x 192)")
    ap.add_argument("--mix", type=json.loads, default=[0.45, 0.25, 0.30],
                    help="share of patches from colour photographs, gray images, dead leaves")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    os.makedirs(a.out, exist_ok=True)
    start = time.time()
    alpha, sigma = schedule()
    photos = photographs()
    leaves = dead_leaves(a.leaves, 192, np.random.default_rng(4))
    pools = [photos["colour"], photos["gray"], leaves]
    weights = torch.tensor(a.mix, dtype=torch.float64)
    print(f"data ready in {time.time() - start:.0f}s", flush=True)
    val = validation_set(a.val, alpha, sigma)
    net = build(a)
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, betas=(0.9, 0.9), weight_decay=0.0)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        q = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q)))

    def validate():
        with torch.no_grad():
            xt, mu, t, eps = val
            out = torch.cat([ema(xt[i:i + 8], mu[i:i + 8], t[i:i + 8].float())
                             for i in range(0, len(t), 8)])
            return F.mse_loss(out, eps).item()

    log, checks = [], []
    best = (math.inf, 0, None)
    running = 0.0
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        # A side of patch - 0..7 pixels per batch: the network pads its input to a multiple of
        # its down-sampling factor, so training sees that padding as a user's image does.
        size = a.patch - int(torch.randint(8, (1,), generator=gen))
        x0 = batch(pools, weights, a.batch, size, gen)
        t = torch.randint(1, T + 1, (a.batch,), generator=gen)
        xt, mu, eps = diffuse(x0, t, alpha, sigma, gen)
        loss = F.mse_loss(net(xt, mu, t.float()), eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        # EMA with a short horizon at the start (the average of the first steps is useless).
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.mul_(d).add_(p, alpha=1 - d)
        running += loss.item()
        if (step + 1) % 100 == 0 or step == a.steps - 1:
            n = (step % 100) + 1
            log.append({"step": step + 1, "loss": running / n, "seconds": time.time() - start})
            print(f"step {step + 1:5d} loss {running / n:.5f} lr {lr_at(step):.2e} "
                  f"{time.time() - start:.0f}s", flush=True)
            running = 0.0
        if (step + 1) % a.val_every == 0 or step == a.steps - 1:
            v = validate()
            checks.append({"step": step + 1, "val_loss": v})
            print(f"  validation (EMA) {v:.5f}", flush=True)
            if v < best[0]:
                best = (v, step + 1, copy.deepcopy(ema.state_dict()))
    ema.load_state_dict(best[2])
    print(f"best validation loss {best[0]:.5f} at step {best[1]}")
    weights = {k: v.detach().contiguous() for k, v in ema.state_dict().items()}
    save_file(weights, os.path.join(a.out, "model.safetensors"))
    # Parity sample: odd sizes (the network pads to a multiple of its down-sampling), two times.
    g = torch.Generator().manual_seed(2)
    px = torch.rand((2, 3, 30, 45), generator=g)
    pmu = torch.rand((2, 3, 30, 45), generator=g)
    pt = torch.tensor([37.5, 100.0])
    with torch.no_grad():
        pout = ema(px, pmu, pt)
    save_file({"x": px, "mu": pmu, "t": pt, "out": pout.contiguous()},
              os.path.join(a.out, "parity.safetensors"))
    n_params = sum(p.numel() for p in ema.parameters())
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    args.pop("upstream")
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"args": args, "params": n_params, "torch": torch.__version__,
                   "seconds": time.time() - start, "best_step": best[1],
                   "best_val_loss": best[0], "checks": checks, "log": log}, f, indent=1)
    print(f"saved {n_params} parameters to {a.out}")


if __name__ == "__main__":
    main()
