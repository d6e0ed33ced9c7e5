#!/usr/bin/env python3
"""f32 error of Winograd's F(2x2, 3x3) and F(4x4, 3x3) against a float64 direct convolution,
for the choice recorded in docs/benchmarks.md (issue 29): which tile the 3 x 3 convolutions can
use without leaving the parity tests' 1e-5.

    python3 tools/winograd_error.py

Prints, for 64, 256 and 512 input channels (16 output channels, a 26 x 26 input of standard
normals, kernels scaled by 1/sqrt(9 Cin)), max |winograd - direct| / max |direct|. Every
stage (kernel, input and output transforms, the per-position channel sums) is rounded to f32.
The matrices are the standard ones: F(2, 3) on the points 0, 1, -1, inf (as
models/src/kernels/winograd.rs), F(4, 3) on 0, 1, -1, 2, -2, inf. Needs numpy.
"""
import numpy as np

F2 = (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
      np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
      np.array([[1, 1, 1, 0], [0, 1, -1, -1]]))
F4 = (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
      np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
      np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]]))


def winograd(x, g, bt, gm, at):
    """x [Cin, H, W], g [Cout, Cin, 3, 3] -> [Cout, m*th, m*tw], all in f32."""
    f = np.float32
    bt, gm, at = bt.astype(f), gm.astype(f), at.astype(f)
    m, n = at.shape
    cin, h, w = x.shape
    th, tw = (h - 2) // m, (w - 2) // m
    u = np.einsum("ij,ocjk,lk->ocil", gm, g.astype(f), gm).astype(f)
    tiles = np.stack([x[:, ty * m:ty * m + n, tx * m:tx * m + n]
                      for ty in range(th) for tx in range(tw)], 1).astype(f)
    v = np.einsum("ij,ctjk,lk->ctil", bt, tiles, bt).astype(f)
    prod = np.einsum("ocij,ctij->otij", u, v).astype(f)
    out = np.einsum("ij,otjk,lk->otil", at, prod, at).astype(f)
    cout = g.shape[0]
    return out.reshape(cout, th, tw, m, m).transpose(0, 1, 3, 2, 4).reshape(cout, th * m, tw * m)


def direct(x, g):
    _, h, w = x.shape
    out = np.zeros((g.shape[0], h - 2, w - 2))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", g[:, :, i, j], x[:, i:i + h - 2, j:j + w - 2])
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    print("| input channels | F(2x2, 3x3) | F(4x4, 3x3) |")
    print("|---|---|---|")
    for cin in (64, 256, 512):
        x = rng.standard_normal((cin, 26, 26)).astype(np.float32).astype(np.float64)
        g = (rng.standard_normal((16, cin, 3, 3)) / np.sqrt(9 * cin))
        g = g.astype(np.float32).astype(np.float64)
        ref = direct(x, g)
        errs = []
        for bt, gm, at in (F2, F4):
            out = winograd(x, g, bt, gm, at)
            errs.append(np.abs(out - ref[:, :out.shape[1], :out.shape[2]]).max() / np.abs(ref).max())
        print(f"| {cin} | {errs[0]:.1e} | {errs[1]:.1e} |")


if __name__ == "__main__":
    main()
