#!/usr/bin/env python3
"""End-to-end wall time of the PyTorch pipelines users run today, for the comparison with
`mrsampler restore` in docs/benchmarks.md. Run by hand:

    pip install torch numpy safetensors einops scikit-image opencv-python-headless tqdm ftfy regex
    python3 tools/torch_pipeline_bench.py IRSDE_CHECKOUT MRS_CHECKOUT IMAGE.png [--threads 2]
    python3 tools/torch_pipeline_bench.py IRSDE_CHECKOUT MRS_CHECKOUT IMAGE.png \
        --arch unet|nafnet --checkpoint NET.pth [--posterior-steps K] [--repeats 1] [--nfe 10]
    python3 tools/torch_pipeline_bench.py IRSDE_CHECKOUT MRS_CHECKOUT IMAGE.png \
        --arch daclip --checkpoint DENOISER.pth --clip ENCODER.pt --daclip DACLIP_CHECKOUT ...

IRSDE_CHECKOUT: github.com/Algolzw/image-restoration-sde (MIT), for the network class.
MRS_CHECKOUT: github.com/grrrute/mr-sampler, the official MR Sampler (its DA-CLIP code base's
`universal-image-restoration/utils/{sde_utils,sampler}.py`: `IRSDE.reverse_posterior`, the
upstream posterior sampler, and `MRSampler`). Both are imported at run time, nothing is copied.
Two shims let that code import on current libraries without changing what it computes: a stub
`torchvision` (imported by its image-saving helpers only) and `numpy.int` (a removed alias used
in a type annotation).

`--arch shipped` (default): the shipped weights in the upstream ConditionalUNet (attention 4 x 4,
as trained). `--arch unet|nafnet`: IR-SDE's U-Net (nf 64, depth 4) or Refusion's NAFNet (width
64) at their released configurations, or others with `--setting '{"nf": 40}'`, weights from
`--checkpoint` (a state_dict as `tools/upstream_parity.py --one` writes it). `--arch daclip`: DA-CLIP's denoiser (nf 64,
[1, 2, 4, 8], contexts 512) from `--checkpoint` and its ViT-B/32 encoder with the controller
from `--clip` (as `tools/daclip_parity.py --one ... --released-encoder` writes them), imported
from a daclip-uir checkout; each restore computes the contexts as upstream's test script does
(`clip_transform`, `encode_image(control=True)`) and passes them to every call.

For the image (its degraded version, [1, 3, H, W] in [0, 1]) it prints one row per pipeline:
median wall seconds of `--repeats` runs after a warm-up (with `--repeats 1`, one network
call as the warm-up), and
peak resident memory. `--posterior-steps K` < 100 times the first K of upstream's 100 posterior
steps and scales the time to 100 (each step is one network call and a few tensor operations;
the row says so).
"""
import argparse
import json
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from skimage.io import imread

sys.path.insert(0, str(Path(__file__).parent))
from train_restore import build  # noqa: E402


def import_official(checkout: Path):
    np.int = int  # removed alias in an annotation of utils/sampler.py
    tv, tu = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    tu.make_grid = None
    tv.utils = tu
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.utils", tu)
    sys.path.insert(0, str(checkout / "universal-image-restoration"))
    import utils.sampler as sampler  # noqa: E402
    import utils.sde_utils as sde_utils  # noqa: E402
    return sde_utils, sampler


class Net(torch.nn.Module):
    """The upstream U-Net behind DA-CLIP's model call signature (contexts ignored)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, mu, t, **_):
        if not torch.is_tensor(t):
            t = torch.tensor([float(t)])
        t = t.float().reshape(-1).expand(x.shape[0])
        return self.unet(x, mu, t)


class Contexts(torch.nn.Module):
    """DA-CLIP's denoiser with the contexts of the current image passed to every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.image_context = self.degra_context = None

    def forward(self, x, mu, t, **_):
        if not torch.is_tensor(t):
            t = torch.tensor([float(t)])
        t = t.float().reshape(-1).expand(x.shape[0])
        return self.unet(x, mu, t, text_context=self.degra_context,
                         image_context=self.image_context)


class Stop(Exception):
    pass


class Counted(torch.nn.Module):
    """Counts calls and stops the sampler after `limit` of them (for `--posterior-steps`)."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.calls = net, limit, 0

    def forward(self, *a, **k):
        if self.calls >= self.limit:
            raise Stop
        self.calls += 1
        return self.net(*a, **k)


def timed(f, repeats):
    if repeats > 1:
        f()
    ts = []
    for _ in range(repeats):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("irsde", type=Path)
    ap.add_argument("mrs", type=Path)
    ap.add_argument("image", type=Path, help="the degraded image (PNG, RGB)")
    ap.add_argument("--weights", type=Path,
                    default=Path(__file__).parent.parent / "assets/restore/model.safetensors")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--arch", choices=["shipped", "unet", "nafnet", "daclip"], default="shipped")
    ap.add_argument("--checkpoint", type=Path, help="the network's state_dict (--arch != shipped)")
    ap.add_argument("--setting", type=json.loads, default={},
                    help="--arch unet|nafnet: constructor arguments over the released ones, as "
                         "JSON (a configuration the project does not ship)")
    ap.add_argument("--clip", type=Path, help="DA-CLIP's encoder checkpoint (--arch daclip)")
    ap.add_argument("--daclip", type=Path, help="a daclip-uir checkout (--arch daclip)")
    ap.add_argument("--posterior-steps", type=int, default=100)
    ap.add_argument("--kinds", nargs="+", default=["sde", "ode"], choices=["sde", "ode"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    encode = None
    if a.arch == "shipped":
        unet = build(a.irsde, nf=8, depth=3, heads=4, head_dim=4)
        unet.load_state_dict(load_file(str(a.weights)))
        net = Net(unet).eval()
    elif a.arch in ("unet", "nafnet"):
        from upstream_parity import load_modules
        pkg = load_modules(a.irsde, "deraining")
        if a.arch == "unet":
            setting = dict(in_nc=3, out_nc=3, nf=64, depth=4) | a.setting
            unet = pkg.ConditionalUNet(**setting)
        else:
            setting = dict(img_channel=3, width=64, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1,
                           dec_blk_nums=[1, 1, 1, 1]) | a.setting
            unet = pkg.ConditionalNAFNet(**setting)
        unet.load_state_dict(torch.load(a.checkpoint))
        net = Net(unet).eval()
    else:
        from daclip_parity import build_daclip, import_upstream, released_encoder
        ConditionalUNet, CLIP, DaCLIP, util = import_upstream(a.daclip.resolve())
        unet = ConditionalUNet(3, 3, 64, [1, 2, 4, 8], 512, True, True)
        unet.load_state_dict(torch.load(a.checkpoint))
        net = Contexts(unet).eval()
        cfg = released_encoder()
        clip = build_daclip(CLIP, DaCLIP, cfg)
        sd = torch.load(a.clip, weights_only=False)["state_dict"]
        clip.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()})

        def encode(lq):  # upstream's test script: HWC in [0, 1] -> contexts
            pixels = util.clip_transform(lq.squeeze(0).permute(1, 2, 0).numpy()).unsqueeze(0)
            with torch.no_grad():
                image, degra = clip.encode_image(pixels, control=True)
            net.image_context, net.degra_context = image.float(), degra.float()
    sde_utils, sampler = import_official(a.mrs)
    opt = {"sde": {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005}}
    sde = sde_utils.IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005, device="cpu")
    counted = Counted(net, a.posterior_steps)
    sde.set_model(counted)
    mu = torch.tensor(imread(a.image).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    sde.set_mu(mu)
    h, w = mu.shape[2:]
    print(f"| pipeline (PyTorch {torch.__version__}, {a.threads} threads, {w}x{h}, {a.arch}) "
          f"| NFE | seconds |")
    print("|---|---|---|")

    def posterior():
        counted.calls = 0
        with torch.no_grad():
            if encode:
                encode(mu)
            x = mu + torch.randn_like(mu) * sde.max_sigma
            try:
                sde.reverse_posterior(x)
            except Stop:
                pass

    if a.repeats == 1:  # no warm-up run of the pipelines: warm up the network alone
        with torch.no_grad():
            if encode:
                encode(mu)
            net(mu, mu, torch.tensor([50.0]))
    secs = timed(posterior, a.repeats)
    if a.posterior_steps < 100:
        label = f"(first {a.posterior_steps} of 100 steps timed, scaled to 100)"
        secs *= 100 / a.posterior_steps
    else:
        label = ""
    print(f"| upstream posterior sampling (IRSDE.reverse_posterior) {label} | 100 | "
          f"{secs:.3f} |", flush=True)
    counted.limit = 1 << 30
    for kind in a.kinds:
        for nfe in a.nfe:
            s = sampler.MRSampler(sde, opt, num_sample_steps=nfe, solver_type=kind,
                                  parameterization="data", order=2, fit_target="noise")

            def official():
                if encode:
                    encode(mu)
                s.sampling(mu)

            secs = timed(official, a.repeats)
            print(f"| official MR Sampler, {kind}-2 data | {nfe} | {secs:.3f} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
