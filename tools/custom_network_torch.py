#!/usr/bin/env python3
"""The small conditional U-Net of `models/examples/custom_network.rs` in PyTorch, timed the same
way (batch 1, median of RUNS after a warm-up, float32, CPU).

    python3 tools/custom_network_torch.py [SIZE] [RUNS] [THREADS]
"""
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TDIM = 128


def embed(t, dim=32):
    half = dim // 2
    step = -math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * step)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(TDIM, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        part = lambda z: z.reshape(b, 1, c, h * w).transpose(2, 3)
        a = F.scaled_dot_product_attention(part(q), part(k), part(v))
        return x + self.out(a.transpose(2, 3).reshape(b, c, h, w))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.time1 = nn.Linear(32, TDIM)
        self.time2 = nn.Linear(TDIM, TDIM)
        self.input = nn.Conv2d(6, 32, 3, padding=1)
        self.down1 = ResBlock(32, 32)
        self.pool1 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.down2 = ResBlock(64, 64)
        self.pool2 = nn.Conv2d(64, 96, 3, stride=2, padding=1)
        self.mid = ResBlock(96, 96)
        self.attn = SelfAttention(96)
        self.up2 = ResBlock(96 + 64, 64)
        self.up1 = ResBlock(64 + 32, 32)
        self.out = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x, mu, t):
        temb = self.time2(F.silu(self.time1(embed(t))))
        h0 = self.input(torch.cat([x, mu], 1))
        h1 = self.down1(h0, temb)
        h2 = self.down2(self.pool1(h1), temb)
        m = self.attn(self.mid(self.pool2(h2), temb))
        u2 = self.up2(torch.cat([F.interpolate(m, size=h2.shape[2:]), h2], 1), temb)
        u1 = self.up1(torch.cat([F.interpolate(u2, size=h1.shape[2:]), h1], 1), temb)
        return self.out(u1)


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = Net().eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(1, 3, size, size)
    mu = torch.randn(1, 3, size, size) * 0.2 + 0.5
    t = torch.tensor([37.0])
    with torch.inference_mode():
        net(x, mu, t)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            net(x, mu, t)
            times.append(time.perf_counter() - start)
    print(f"PyTorch {torch.__version__}: {params} parameters, {size}², batch 1, {threads} threads, "
          f"median of {runs}: {statistics.median(times):.3f} s per forward")


if __name__ == "__main__":
    main()
