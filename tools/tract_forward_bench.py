#!/usr/bin/env python3
"""One forward of an upstream network in tract (the pure-Rust ONNX engine, through its Python
bindings) and in PyTorch on one thread: the "pure-Rust inference engine" route of issue 16.

    pip install torch tract onnx onnxscript einops
    python3 tools/tract_forward_bench.py IRSDE_CHECKOUT unet|nafnet SIZE [REPEATS]

The upstream module (the released configuration, every parameter random as in
`tools/upstream_parity.py`) is exported to ONNX with PyTorch's TorchScript exporter at a
fixed [1, 3, SIZE, SIZE] input, optimised by tract (`into_model`: analysed, decluttered and optimised) and run; tract's Python
bindings run on one thread, so PyTorch is timed with one thread too (this crate's twin:
`RAYON_NUM_THREADS=1 forward_bench ARCH SIZE`). Prints one table row per engine: median seconds
of REPEATS forwards after a warm-up, and the largest difference between the two outputs.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tract

sys.path.insert(0, str(Path(__file__).parent))
from upstream_parity import load_modules, randomize  # noqa: E402

# The released configurations (as in tools/torch_forward_bench.py).
ARCHS = {
    "unet": ("ConditionalUNet", dict(in_nc=3, out_nc=3, nf=64, depth=4)),
    "nafnet": ("ConditionalNAFNet", dict(img_channel=3, width=64, enc_blk_nums=[1, 1, 1, 28],
                                         middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1])),
}


def median_time(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upstream", type=Path)
    ap.add_argument("arch", choices=["unet", "nafnet"])
    ap.add_argument("size", type=int)
    ap.add_argument("repeats", type=int, nargs="?", default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cls, setting = ARCHS[a.arch]
    net = getattr(load_modules(a.upstream, "deraining"), cls)(**setting).eval()
    gen = torch.Generator().manual_seed(0)
    # Every parameter random: upstream initialises the NAF blocks' residual scales to zero,
    # and tract's optimiser would then remove the blocks it multiplies by zero.
    randomize(net, gen)
    x = torch.randn(1, 3, a.size, a.size, generator=gen)
    mu = torch.randn(1, 3, a.size, a.size, generator=gen)
    t = torch.tensor([50.0])
    with torch.no_grad():
        want = net(x, mu, t).numpy()
        torch_s = median_time(lambda: net(x, mu, t), a.repeats)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "net.onnx"
            torch.onnx.export(net, (x, mu, t), str(path), dynamo=False, opset_version=17,
                              input_names=["x", "mu", "t"], output_names=["out"])
            model = tract.onnx().load(str(path)).into_model().into_runnable()
    inputs = [x.numpy(), mu.numpy(), t.numpy()]
    got = model.run(inputs)[0].to_numpy()
    tract_s = median_time(lambda: model.run(inputs), a.repeats)
    diff = float(np.abs(got - want).max())
    print(f"| PyTorch {torch.__version__.split('+')[0]}, 1 thread | {a.arch} | {a.size}² | "
          f"{torch_s:.3f} | |")
    print(f"| tract {tract.version()}, 1 thread | "
          f"{a.arch} | {a.size}² | {tract_s:.3f} | max abs diff to PyTorch {diff:.2e} |")


if __name__ == "__main__":
    main()
