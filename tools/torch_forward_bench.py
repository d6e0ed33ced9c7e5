#!/usr/bin/env python3
"""Forward time and peak memory of an upstream network in PyTorch (the Rust side's twin:
`cargo run --release -p mrsampler-models --example forward_bench -- ARCH SIZE`).

    python3 tools/torch_forward_bench.py UPSTREAM_CHECKOUT ARCH SIZE [REPEATS] [--threads N]

ARCH: unet (IR-SDE nf 64, depth 4), unet-deshadow (nf 32, depth 5), nafnet (Refusion width 64,
[1, 1, 1, 28]). Random weights, one [1, 3, SIZE, SIZE] input, float32, torch.no_grad().
Prints one table row: median seconds of REPEATS forwards after a warm-up, and the process's
peak resident memory (MiB). Run one configuration per process.
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from upstream_parity import load_modules  # noqa: E402

ARCHS = {
    "unet": ("ConditionalUNet", dict(in_nc=3, out_nc=3, nf=64, depth=4)),
    "unet-deshadow": ("ConditionalUNet", dict(in_nc=3, out_nc=3, nf=32, depth=5)),
    "nafnet": ("ConditionalNAFNet", dict(img_channel=3, width=64, enc_blk_nums=[1, 1, 1, 28],
                                         middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1])),
}

ap = argparse.ArgumentParser()
ap.add_argument("upstream", type=Path)
ap.add_argument("arch", choices=ARCHS)
ap.add_argument("size", type=int)
ap.add_argument("repeats", type=int, nargs="?", default=3)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
cls, setting = ARCHS[args.arch]
net = getattr(load_modules(args.upstream, "deraining"), cls)(**setting).eval()
x = torch.randn(1, 3, args.size, args.size)
mu = torch.randn(1, 3, args.size, args.size)
t = torch.tensor([50.0])
times = []
with torch.no_grad():
    net(x, mu, t)
    for _ in range(args.repeats):
        start = time.perf_counter()
        net(x, mu, t)
        times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"| PyTorch {torch.__version__.split('+')[0]} | {args.arch} | {args.size}² | "
      f"{statistics.median(times):.3f} | {peak:.0f} |")
