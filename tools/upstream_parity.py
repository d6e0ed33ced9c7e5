#!/usr/bin/env python3
"""Parity cases for the networks of `mrsampler-models`, computed by the upstream modules.

    python3 tools/upstream_parity.py UPSTREAM_CHECKOUT [--out models/tests/data]
    python3 tools/upstream_parity.py UPSTREAM_CHECKOUT --one ARCH --out DIR [--seed S] ...

UPSTREAM_CHECKOUT is a checkout of the IR-SDE code base (github.com/Algolzw/image-restoration-sde,
MIT licence). Its network modules are imported from there at run time; nothing of it is copied
into this project. For each small random-weight configuration listed in CASES the tool writes

* `NAME.pth`: the upstream `state_dict`, saved by `torch.save` exactly as upstream's training
  code saves it;
* `NAME.safetensors`: the same tensors in safetensors;
* `nafnet_w8_e11_wrapped.pth`: one case wrapped as `{"state_dict": {"module.<name>": ...}}`;
* `NAME.io.safetensors`: the inputs `xt`, `mu` and upstream's outputs `out_0`, `out_1`, ...
  at the case's times (float32);

and `cases.json`, the manifest read by `models/tests/parity.rs`: architecture, configuration,
times, parameter count. `defaults.json` records the parameter counts of the released default
configurations (the Rust tests rebuild them with random weights and compare).

`--one` writes a single case at a configuration given on the command line, with its inputs
and outputs also as `NAME.xt.npy`, `NAME.mu.npy`, `NAME.out_0.npy`, ... (for checking the
`mrsampler net` command on a configuration that is not shipped).

Needs: torch, safetensors, einops (the upstream modules import it).
"""

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# Small random-weight configurations: odd sizes that need padding, batch 2, several depths.
CASES = [
    # IR-SDE ConditionalUNet (deraining/deblurring/sisr/inpainting/deshadow module).
    dict(name="unet_nf4_d2", arch="ConditionalUNet", module="deraining",
         setting=dict(in_nc=3, out_nc=3, nf=4, depth=2), shape=[2, 3, 13, 10], times=[37.5, 12.0]),
    dict(name="unet_nf4_d3_gray", arch="ConditionalUNet", module="deraining",
         setting=dict(in_nc=1, out_nc=1, nf=4, depth=3), shape=[1, 1, 9, 21], times=[99.25, 1.0]),
    # The denoising-sde module: unconditional input, full self-attention in the middle.
    dict(name="unet_uncond_nf4_d2", arch="ConditionalUNet", module="denoising-sde",
         setting=dict(in_nc=3, out_nc=3, nf=4, depth=2), shape=[2, 3, 11, 7], times=[50.5, 3.0]),
    # Refusion ConditionalNAFNet.
    dict(name="nafnet_w8_e11", arch="ConditionalNAFNet", module="deraining",
         setting=dict(img_channel=3, width=8, enc_blk_nums=[1, 1], middle_blk_num=1,
                      dec_blk_nums=[1, 1]), shape=[2, 3, 13, 10], times=[37.5, 12.0]),
    dict(name="nafnet_w4_e121_gray", arch="ConditionalNAFNet", module="deraining",
         setting=dict(img_channel=1, width=4, enc_blk_nums=[1, 2, 1], middle_blk_num=2,
                      dec_blk_nums=[2, 1, 1]), shape=[1, 1, 9, 17], times=[70.75, 100.0]),
    # Wide enough (odd sides, 4 623 output pixels at full resolution) for the Winograd 3 x 3
    # convolution, which the crate uses from 2 048 output pixels.
    dict(name="unet_nf4_d2_wide", arch="ConditionalUNet", module="deraining",
         setting=dict(in_nc=3, out_nc=3, nf=4, depth=2), shape=[1, 3, 69, 67], times=[37.5]),
]

# The released configurations (upstream option files, `network_G.setting`).
DEFAULTS = [
    dict(name="ir-sde (deraining, deblurring, sisr, inpainting)", arch="ConditionalUNet",
         module="deraining", setting=dict(in_nc=3, out_nc=3, nf=64, depth=4)),
    dict(name="ir-sde (deshadow)", arch="ConditionalUNet", module="deraining",
         setting=dict(in_nc=3, out_nc=3, nf=32, depth=5)),
    dict(name="refusion", arch="ConditionalNAFNet", module="deraining",
         setting=dict(img_channel=3, width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1,
                      dec_blk_nums=[1, 1, 1, 1])),
]


def load_modules(checkout: Path, config: str):
    """Imports `codes/config/<config>/models/modules` of the checkout as a package."""
    path = checkout / "codes" / "config" / config / "models" / "modules"
    if not path.is_dir():
        sys.exit(f"{path} does not exist: pass the root of an image-restoration-sde checkout")
    name = "upstream_" + config.replace("-", "_")
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py", submodule_search_locations=[str(path)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    return pkg


def build(checkout: Path, case: dict) -> torch.nn.Module:
    pkg = load_modules(checkout, case["module"])
    cls = getattr(pkg, case["arch"])
    return cls(**case["setting"]).eval()


def randomize(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter random, so that no zero-initialised gate hides a wrong path."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".g"):  # channel LayerNorm gain
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("beta") or name.endswith("gamma"):  # NAF block residual scales
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def forward(net, case, xt, mu, t):
    time = torch.full((xt.shape[0],), t, dtype=torch.float32)
    with torch.no_grad():
        if case["module"] == "denoising-sde":  # unconditional: the network sees x_t only
            return net(xt, time)
        return net(xt, mu, time)


def write_case(checkout: Path, case: dict, out: Path, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    net = build(checkout, case)
    randomize(net, gen)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(sd, out / f"{case['name']}.pth")
    save_file(sd, str(out / f"{case['name']}.safetensors"))
    mu = torch.rand(case["shape"], generator=gen)
    xt = mu + 0.3 * torch.randn(case["shape"], generator=gen)
    io = {"xt": xt, "mu": mu}
    for i, t in enumerate(case["times"]):
        io[f"out_{i}"] = forward(net, case, xt, mu, t).contiguous()
    save_file(io, str(out / f"{case['name']}.io.safetensors"))
    params = sum(p.numel() for p in net.parameters())
    return dict(case, seed=seed, params=params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upstream", type=Path, help="root of an image-restoration-sde checkout")
    ap.add_argument("--out", type=Path, default=Path("models/tests/data"))
    ap.add_argument("--one", choices=["ConditionalUNet", "ConditionalNAFNet"])
    ap.add_argument("--name", default="extra")
    ap.add_argument("--setting", type=json.loads, help="network_G.setting as JSON")
    ap.add_argument("--shape", type=json.loads, default=[1, 3, 37, 29])
    ap.add_argument("--times", type=json.loads, default=[42.5])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.one:
        case = dict(name=args.name, arch=args.one, module="deraining", setting=args.setting,
                    shape=args.shape, times=args.times)
        meta = write_case(args.upstream, case, args.out, args.seed)
        # The same inputs and outputs as .npy, for `mrsampler net --xt --mu --t --out`.
        import numpy as np
        from safetensors.numpy import load_file
        io = load_file(str(args.out / f"{args.name}.io.safetensors"))
        for key, value in io.items():
            np.save(args.out / f"{args.name}.{key}.npy", value)
        print(json.dumps(meta))
        return

    manifest = [write_case(args.upstream, c, args.out, 1000 + i) for i, c in enumerate(CASES)]
    # The smallest case once more as DataParallel training code saves it: wrapped in
    # `state_dict`, every name prefixed with `module.`, next to non-tensor entries.
    sd = torch.load(args.out / "nafnet_w8_e11.pth")
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "iter": 400000}
    torch.save(wrapped, args.out / "nafnet_w8_e11_wrapped.pth")
    (args.out / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
    defaults = []
    for d in DEFAULTS:
        net = build(args.upstream, d)
        defaults.append(dict(d, params=sum(p.numel() for p in net.parameters())))
    (args.out / "defaults.json").write_text(json.dumps(defaults, indent=1) + "\n")
    for m in manifest:
        print(f"{m['name']}: {m['params']} parameters")
    for d in defaults:
        print(f"default {d['name']}: {d['params']} parameters")


if __name__ == "__main__":
    main()
