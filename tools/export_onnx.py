#!/usr/bin/env python3
"""Export an MR network (IR-SDE U-Net, Refusion NAFNet, DA-CLIP denoiser) to ONNX for
`mrsampler-models`' `OnnxNetwork` and `mrsampler --model NET.onnx`.

    python3 tools/export_onnx.py UPSTREAM_CHECKOUT CHECKPOINT OUT.onnx \
        [--arch unet|nafnet|daclip] [--setting JSON] [--module deraining] [--opset 18] \
        [--check-size H W] [--reference OUT.io.safetensors]

UPSTREAM_CHECKOUT: github.com/Algolzw/image-restoration-sde (unet, nafnet) or
github.com/Algolzw/daclip-uir (daclip), both MIT; the network class is imported from it at run
time, nothing is copied. CHECKPOINT: the network's `state_dict` (`.pth` as upstream saves it,
`{"state_dict": ...}` and `module.` prefixes accepted). `--setting` gives the constructor's
arguments as JSON (default: the released configuration of the architecture: IR-SDE nf 64 depth 4,
Refusion width 64 [1, 1, 1, 28], DA-CLIP nf 64 [1, 2, 4, 8] contexts 512); `--arch` defaults to
what the tensor names say.

The graph follows the crate's input convention (docs/models.md, "Export your own network"):
inputs `x_t` and `mu` float32 `[B, C, H, W]`, `t` float32 `[B]` (the schedule's time index),
for DA-CLIP also `image_context` and `degra_context` float32 `[B, D]`; output `noise` float32
`[B, C, H, W]`; batch, height and width are dynamic axes. Opset 18 by default.

After exporting, the script runs the graph in ONNX Runtime (when `onnxruntime` is installed) at
a second size (`--check-size`, default 37 x 29) and prints its largest difference from the
PyTorch module. `--reference FILE` also writes that input and PyTorch's output as safetensors
(`xt`, `mu`, `t`, contexts, `out`) for tests.

Needs: torch (2.x), onnx, safetensors, einops; onnxruntime for the check.
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

RELEASED = {
    "unet": dict(in_nc=3, out_nc=3, nf=64, depth=4),
    "nafnet": dict(img_channel=3, width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1,
                   dec_blk_nums=[1, 1, 1, 1]),
    "daclip": dict(in_nc=3, out_nc=3, nf=64, ch_mult=[1, 2, 4, 8], context_dim=512,
                   use_degra_context=True, use_image_context=True),
}
CLASSES = {"unet": "ConditionalUNet", "nafnet": "ConditionalNAFNet", "daclip": "ConditionalUNet"}


def load_state_dict(path: Path) -> dict:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def guess_arch(sd: dict) -> str:
    if "intro.weight" in sd:
        return "nafnet"
    if "init_conv.weight" in sd:
        return "daclip" if any("prompt" in k or "transformer" in k for k in sd) else "unet"
    sys.exit("cannot tell the architecture from the tensor names: pass --arch")


def import_class(checkout: Path, arch: str, module: str):
    if arch == "daclip":
        root = checkout / "universal-image-restoration"
        if not root.is_dir():
            sys.exit(f"{root} does not exist: pass the root of a daclip-uir checkout")
        torch.nn.Module.cuda = lambda self, *a, **k: self  # its controller moves itself to CUDA
        sys.path.insert(0, str(root / "config" / "daclip-sde"))
        from models.modules.DenoisingUNet_arch import ConditionalUNet
        return ConditionalUNet
    path = checkout / "codes" / "config" / module / "models" / "modules"
    if not path.is_dir():
        sys.exit(f"{path} does not exist: pass the root of an image-restoration-sde checkout")
    spec = importlib.util.spec_from_file_location(
        "upstream_modules", path / "__init__.py", submodule_search_locations=[str(path)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["upstream_modules"] = pkg
    spec.loader.exec_module(pkg)
    return getattr(pkg, CLASSES[arch])


class Plain(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t):
        return self.net(x_t, mu, t)


class WithContexts(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t, image_context, degra_context):
        return self.net(x_t, mu, t, text_context=degra_context, image_context=image_context)


def example(channels: int, h: int, w: int, batch: int, context_dim, seed: int):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.rand(batch, channels, h, w, generator=gen)
    xt = mu + 0.3 * torch.randn(batch, channels, h, w, generator=gen)
    t = torch.full((batch,), 37.5)
    args = [xt, mu, t]
    if context_dim:
        args += [torch.randn(batch, context_dim, generator=gen),
                 torch.randn(batch, context_dim, generator=gen)]
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--arch", choices=sorted(RELEASED))
    ap.add_argument("--setting", type=json.loads)
    ap.add_argument("--module", default="deraining",
                    help="the IR-SDE config folder the class is taken from")
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--check-size", type=int, nargs=2, default=[37, 29])
    ap.add_argument("--reference", type=Path)
    args = ap.parse_args()

    sd = load_state_dict(args.checkpoint)
    arch = args.arch or guess_arch(sd)
    setting = args.setting or RELEASED[arch]
    net = import_class(args.checkout, arch, args.module)(**setting).eval()
    net.load_state_dict(sd)
    for m in net.modules():  # gradient checkpointing (an autograd.Function) cannot be traced;
        if isinstance(getattr(m, "checkpoint", None), bool):  # off, the forward is the same
            m.checkpoint = False
    wrapped = (WithContexts if arch == "daclip" else Plain)(net).eval()
    channels = setting.get("in_nc", setting.get("img_channel", 3))
    context_dim = setting.get("context_dim") if arch == "daclip" else None

    names = ["x_t", "mu", "t"] + (["image_context", "degra_context"] if context_dim else [])
    axes = {"x_t": {0: "batch", 2: "height", 3: "width"},
            "mu": {0: "batch", 2: "height", 3: "width"},
            "t": {0: "batch"}, "noise": {0: "batch", 2: "height", 3: "width"}}
    if context_dim:
        axes |= {"image_context": {0: "batch"}, "degra_context": {0: "batch"}}
    # Traced at one size, checked at another: the graph must not bake the size in.
    traced = example(channels, 32, 24, 2, context_dim, seed=0)
    with torch.no_grad():
        torch.onnx.export(wrapped, tuple(traced), str(args.out), input_names=names,
                          output_names=["noise"], dynamic_axes=axes, opset_version=args.opset,
                          dynamo=False)
    print(f"{args.out}: {arch} {json.dumps(setting)}, inputs {names}, opset {args.opset}")

    h, w = args.check_size
    check = example(channels, h, w, 1, context_dim, seed=1)
    with torch.no_grad():
        expected = wrapped(*check)
    if args.reference:
        from safetensors.torch import save_file
        ref = dict(zip(["xt", "mu", "t", "image_context", "degra_context"], check))
        ref["out"] = expected
        save_file({k: v.contiguous() for k, v in ref.items()}, str(args.reference))
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: the exported graph was not run")
        return
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: v.numpy() for n, v in zip(names, check)})[0]
    err = float((torch.from_numpy(got) - expected).abs().max() / expected.abs().max())
    print(f"ONNX Runtime {ort.__version__} at {h}x{w}: max |difference| / max |output| = {err:.2e}")
    if err > 1e-4:
        sys.exit("the exported graph disagrees with the PyTorch module")


if __name__ == "__main__":
    main()
