#!/usr/bin/env python3
"""Forward time and peak memory of an upstream network in PyTorch (the Rust side's twin:
`cargo run --release -p mrsampler-models --example forward_bench -- ARCH SIZE`).

    python3 tools/torch_forward_bench.py UPSTREAM_CHECKOUT ARCH SIZE [REPEATS] [--threads N]
    python3 tools/torch_forward_bench.py DACLIP_CHECKOUT daclip SIZE [REPEATS] [--const-cross]
    python3 tools/torch_forward_bench.py DACLIP_CHECKOUT daclip-encoder 224 [REPEATS]

ARCH: unet (IR-SDE nf 64, depth 4), unet-deshadow (nf 32, depth 5), nafnet (Refusion width 64,
[1, 1, 1, 28]) from an image-restoration-sde checkout; daclip (DA-CLIP's denoiser, nf 64,
[1, 2, 4, 8], contexts 512, called with both contexts) and daclip-encoder (its ViT-B/32 with the
controller, `encode_image(control=True)` on 224² pixels) from a daclip-uir checkout.
`--const-cross` replaces each cross-attention by its value computed once (what a one-token
context reduces it to, as mrsampler-models computes it): the difference of the two daclip rows
is what computing it once per image saves. Random weights, one [1, 3, SIZE, SIZE] input,
float32, torch.no_grad().
Prints one table row: median seconds of REPEATS forwards after a warm-up, and the process's
peak resident memory (MiB). Run one configuration per process.

`--onnxruntime` times the same module in ONNX Runtime instead (CPU execution provider,
`--threads` intra-op threads, all graph optimisations): exported by `torch.onnx.export`
(opset 18, fixed shapes) to a temporary file, then run on the same inputs. The encoder has no
other ONNX route (`tools/export_onnx.py` exports denoisers); for the denoisers it agrees with
`forward_bench onnx` on `tools/export_onnx.py`'s graphs. The peak memory then includes the
PyTorch module the graph was exported from.
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
    "daclip": None,
    "daclip-encoder": None,
}

ap = argparse.ArgumentParser()
ap.add_argument("upstream", type=Path)
ap.add_argument("arch", choices=ARCHS)
ap.add_argument("size", type=int)
ap.add_argument("repeats", type=int, nargs="?", default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--const-cross", action="store_true")
ap.add_argument("--onnxruntime", action="store_true")
args = ap.parse_args()
torch.set_num_threads(args.threads)
x = torch.randn(1, 3, args.size, args.size)
mu = torch.randn(1, 3, args.size, args.size)
t = torch.tensor([50.0])
if args.arch == "daclip":
    from daclip_parity import import_upstream
    ConditionalUNet, _, _, _ = import_upstream(args.upstream.resolve())
    net = ConditionalUNet(3, 3, 64, [1, 2, 4, 8], 512, True, True).eval()
    ic, dc = torch.randn(1, 512), torch.randn(1, 512)
    if args.const_cross:
        for m in net.modules():
            if type(m).__name__ == "CrossAttention" and m.to_k.in_features == 512:
                const = m.to_out(m.to_v(ic.unsqueeze(1))).detach()
                m.forward = lambda x, context=None, mask=None, c=const: c
    call = lambda: net(x, mu, t, text_context=dc, image_context=ic)  # noqa: E731
elif args.arch == "daclip-encoder":
    import json
    from daclip_parity import import_upstream
    _, CLIP, DaCLIP, _ = import_upstream(args.upstream.resolve())
    cfg = json.loads((args.upstream / "universal-image-restoration/open_clip/model_configs/"
                      "daclip_ViT-B-32.json").read_text())
    net = DaCLIP(CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                      text_cfg=cfg["text_cfg"])).eval()
    pixels = torch.randn(1, 3, 224, 224)
    call = lambda: net.encode_image(pixels, control=True)  # noqa: E731
else:
    cls, setting = ARCHS[args.arch]
    net = getattr(load_modules(args.upstream, "deraining"), cls)(**setting).eval()
    call = lambda: net(x, mu, t)  # noqa: E731
runtime = f"PyTorch {torch.__version__.split('+')[0]}"
if args.onnxruntime:
    import os
    import tempfile

    import onnxruntime as ort

    class Call(torch.nn.Module):
        """The timed call as a module of its tensor inputs, for the export."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *inputs):
            return rebuild(self.net, *inputs)

    if args.arch == "daclip":
        inputs = (x, mu, t, ic, dc)
        rebuild = lambda n, x, mu, t, ic, dc: n(x, mu, t, text_context=dc, image_context=ic)  # noqa: E731
    elif args.arch == "daclip-encoder":
        inputs = (pixels,)
        rebuild = lambda n, p: n.encode_image(p, control=True)  # noqa: E731
    else:
        inputs = (x, mu, t)
        rebuild = lambda n, x, mu, t: n(x, mu, t)  # noqa: E731
    path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    with torch.no_grad():
        torch.onnx.export(Call(net), inputs, path, opset_version=18, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: v.numpy() for i, v in zip(session.get_inputs(), inputs)}
    call = lambda: session.run(None, feed)  # noqa: E731
    runtime = f"ONNX Runtime {ort.__version__}"
times = []
with torch.no_grad():
    call()
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
name = args.arch + (" (cross-attention once)" if args.const_cross else "")
print(f"| {runtime} | {name} | {args.size}² | "
      f"{statistics.median(times):.3f} | {peak:.0f} |")
