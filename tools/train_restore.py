"""Trains the small MR restoration network shipped in assets/restore/ (Gaussian denoising,
sigma = 25/255) and exports it for the Rust `restore` example. Run by hand, not by CI:

    pip install torch scikit-image safetensors numpy
    python3 tools/train_restore.py --steps 2500 --out assets/restore

Data: patches of public-domain / CC0 photographs shipped in scikit-image (astronaut, coffee,
rocket, hubble_deep_field); `chelsea` is held out for evaluation (see assets/ATTRIBUTION.md).

Process: the IR-SDE / DA-CLIP schedule (cosine theta, T = 100, eps = 0.005, max_sigma = 50,
Theta summed from index 0 as the MR Sampler does), x_t = alpha x0 + (1 - alpha) mu + sigma eps
with integer t ~ U{1..100}, mu = clean + N(0, (25/255)^2). Fit target: the noise eps (MSE).

Outputs: model.safetensors (weights, names as the Rust network reads them), eval.png (the
held-out clean crop), parity.safetensors (an input and this network's output, for the Rust
parity test), train_log.json.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data as skdata
from skimage.io import imsave

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


def timestep_embedding(t, dim=32):
    """Sinusoidal embedding of the raw index t (as IR-SDE / DA-CLIP do)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, ch, temb):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.temb = nn.Linear(temb, ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(x)) + self.temb(emb)[:, :, None, None]
        h = self.conv2(F.silu(h))
        return x + h


class Net(nn.Module):
    """A two-level U-Net on concat(x_t - mu, mu), conditioned on the index time."""

    def __init__(self, ch=32, temb=64):
        super().__init__()
        self.t1 = nn.Linear(32, temb)
        self.t2 = nn.Linear(temb, temb)
        self.inc = nn.Conv2d(6, ch, 3, padding=1)
        self.res1 = ResBlock(ch, temb)
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.res2 = ResBlock(2 * ch, temb)
        self.res3 = ResBlock(2 * ch, temb)
        self.up = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.merge = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.res4 = ResBlock(ch, temb)
        self.outc = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x, mu, t):
        emb = self.t2(F.silu(self.t1(timestep_embedding(t))))
        h0 = self.res1(self.inc(torch.cat([x - mu, mu], dim=1)), emb)
        h = self.res3(self.res2(self.down(h0), emb), emb)
        h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.res4(self.merge(torch.cat([h, h0], dim=1)), emb)
        return self.outc(F.silu(h))


def images():
    train = [skdata.astronaut(), skdata.coffee(), skdata.rocket(), skdata.hubble_deep_field()]
    train = [torch.tensor(im, dtype=torch.float32).permute(2, 0, 1) / 255.0 for im in train]
    held_out = torch.tensor(skdata.chelsea(), dtype=torch.float32).permute(2, 0, 1) / 255.0
    return train, held_out


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
        out.append(p)
    return torch.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="assets/restore")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    os.makedirs(a.out, exist_ok=True)
    alpha, sigma = schedule()
    train, held_out = images()
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps, eta_min=1e-4)
    log = []
    start = time.time()
    for step in range(a.steps):
        x0 = batch(train, a.batch, a.patch, gen)
        mu = x0 + NOISE * torch.randn(x0.shape, generator=gen)
        t = torch.randint(1, T + 1, (a.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        al = alpha[t][:, None, None, None]
        sg = sigma[t][:, None, None, None]
        xt = al * x0 + (1 - al) * mu + sg * eps
        loss = F.mse_loss(net(xt, mu, t), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == a.steps - 1:
            log.append({"step": step, "loss": float(loss), "seconds": time.time() - start})
            print(f"step {step:5d} loss {float(loss):.4f} {time.time() - start:.0f}s", flush=True)
    net.eval()
    weights = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(weights, os.path.join(a.out, "model.safetensors"))
    # Held-out evaluation crop (128x128 from the centre of chelsea).
    _, h, w = held_out.shape
    crop = held_out[:, (h - 128) // 2:(h - 128) // 2 + 128, (w - 128) // 2:(w - 128) // 2 + 128]
    imsave(os.path.join(a.out, "eval.png"), (crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    # Parity sample for the Rust forward pass.
    g = torch.Generator().manual_seed(2)
    px = torch.rand((2, 3, 32, 48), generator=g)
    pmu = torch.rand((2, 3, 32, 48), generator=g)
    pt = torch.tensor([37.5, 100.0])
    with torch.no_grad():
        pout = net(px, pmu, pt)
    save_file({"x": px, "mu": pmu, "t": pt, "out": pout.contiguous()}, os.path.join(a.out, "parity.safetensors"))
    n_params = sum(p.numel() for p in net.parameters())
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"steps": a.steps, "batch": a.batch, "patch": a.patch, "params": n_params,
                   "torch": torch.__version__, "log": log}, f, indent=1)
    print(f"saved {n_params} parameters to {a.out}")


if __name__ == "__main__":
    main()
