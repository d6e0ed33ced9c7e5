#!/usr/bin/env python3
"""Parity cases for DA-CLIP in `mrsampler-models`, computed by the upstream modules.

    python3 tools/daclip_parity.py DACLIP_CHECKOUT [--out models/tests/data/daclip]
    python3 tools/daclip_parity.py DACLIP_CHECKOUT --one NAME --out DIR [--nf 16 ...]

DACLIP_CHECKOUT is a checkout of github.com/Algolzw/daclip-uir (MIT licence). Its
`universal-image-restoration` modules (the denoiser `ConditionalUNet` and the `open_clip` package
with `DaCLIP`) are imported from there at run time; nothing of it is copied into this project.

Writes, for small random-weight configurations (every parameter random, so that no
zero-initialised layer hides a wrong path):

* denoisers `NAME.pth` (the module's `state_dict`, as upstream saves it) with
  `NAME.io.safetensors`: `xt`, `mu`, the contexts `image_context` and `degra_context`, and
  upstream's outputs `out_0`, `out_1` at the case's times with both contexts, and `plain_0`
  without contexts where upstream can run without them (no image context);
* an encoder `daclip_vit_w128_l2.pt`: a DA-CLIP training checkpoint as open_clip's training code
  writes it (`{"epoch", "name", "state_dict": {"module.<name>": ...}, "optimizer"}`, text tower
  and aliased `visual.*` entries included), with `daclip_vit_w128_l2.io.safetensors`: CLIP-normalised
  `pixels` and upstream's `image_features`, `degra_features` (`encode_image(control=True)`);
* `preprocess.io.safetensors`: an RGB image in [0, 1] and upstream's `clip_transform` of it;
* `cases.json` (the manifest read by `models/tests/daclip.rs`) and `defaults.json`: parameter counts
  of the released configurations (denoiser, and the encoder's two visual towers with the
  controller).

`--one NAME` writes one denoiser case at the configuration given by the flags, with its inputs as
`.npy` files for checking the `mrsampler net` command, and the encoder case with an image
`preprocess.png` and upstream's contexts of it (`preprocess.{image,degra}_context.npy`) for
checking `mrsampler encode`.

Needs: torch, torchvision, pillow, safetensors, einops, ftfy, regex, tqdm, numpy.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

DENOISERS = [
    # Spatial transformers at level 3 and in the middle, the prompt path, odd sizes, batch 2;
    # contexts as wide as the encoder case gives (a pair for restoring through the CLI).
    # (Upstream needs at least 32 channels at every level: its heads are 32 wide.)
    dict(name="daclip_nf32", setting=dict(in_nc=3, out_nc=3, nf=32, ch_mult=[1, 1, 1, 1],
         context_dim=32, use_degra_context=True, use_image_context=True),
         shape=[2, 3, 19, 27], times=[37.5, 3.0]),
    # The prompt path alone (upstream's constructor default: no image context).
    dict(name="daclip_nf32_degra", setting=dict(in_nc=3, out_nc=3, nf=32, ch_mult=[1, 1],
         context_dim=24, use_degra_context=True, use_image_context=False),
         shape=[1, 3, 16, 20], times=[99.0, 0.5]),
]

# Two heads of open_clip's default width 64 (the count the loader infers).
ENCODER = dict(name="daclip_vit_w128_l2",
               vision=dict(image_size=48, layers=2, width=128, patch_size=16),
               text=dict(context_length=16, vocab_size=64, width=32, heads=2, layers=1),
               embed_dim=32, batch=2)


def import_upstream(checkout: Path):
    root = checkout / "universal-image-restoration"
    if not (root / "open_clip").is_dir():
        sys.exit(f"{root}/open_clip does not exist: pass the root of a daclip-uir checkout")
    # The controller moves itself to CUDA on construction; keep it on the CPU.
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "config" / "daclip-sde"))
    import open_clip  # noqa: F401
    from open_clip.daclip_model import DaCLIP
    from open_clip.model import CLIP
    from models.modules.DenoisingUNet_arch import ConditionalUNet
    from data import util
    return ConditionalUNet, CLIP, DaCLIP, util


def randomize(net: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".g") or (p.dim() == 1 and ("norm" in name or "ln_" in name)
                                       and name.endswith("weight")):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def denoiser_case(ConditionalUNet, case: dict, out: Path, seed: int, npy: bool = False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    net = ConditionalUNet(**case["setting"]).eval()
    randomize(net, gen)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(sd, out / f"{case['name']}.pth")
    mu = torch.rand(case["shape"], generator=gen)
    xt = mu + 0.3 * torch.randn(case["shape"], generator=gen)
    b, d = case["shape"][0], case["setting"]["context_dim"]
    ic = torch.randn(b, d, generator=gen)
    dc = torch.randn(b, d, generator=gen)
    io = {"xt": xt, "mu": mu, "image_context": ic, "degra_context": dc}
    with torch.no_grad():
        for i, t in enumerate(case["times"]):
            time = torch.full((b,), t, dtype=torch.float32)
            io[f"out_{i}"] = net(xt, mu, time, text_context=dc, image_context=ic).contiguous()
        if not case["setting"]["use_image_context"]:  # (upstream needs it when it has one)
            time = torch.full((b,), case["times"][0], dtype=torch.float32)
            io["plain_0"] = net(xt, mu, time).contiguous()
    save_file(io, str(out / f"{case['name']}.io.safetensors"))
    if npy:
        for k, v in io.items():
            np.save(out / f"{case['name']}.{k}.npy", v.numpy())
    return dict(case, seed=seed, params=sum(p.numel() for p in net.parameters()))


def build_daclip(CLIP, DaCLIP, cfg: dict):
    clip = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision"], text_cfg=cfg["text"])
    model = DaCLIP(clip)
    model.initial_controller()
    return model.eval()


def released_encoder() -> dict:
    """The released `daclip_ViT-B-32` configuration, in ENCODER's form."""
    cfg = json.loads((Path(sys.modules["open_clip"].__file__).parent / "model_configs" /
                      "daclip_ViT-B-32.json").read_text())
    return dict(name="daclip_vit_b32", vision=cfg["vision_cfg"], text=cfg["text_cfg"],
                embed_dim=cfg["embed_dim"], batch=1)


def encoder_case(CLIP, DaCLIP, out: Path, seed: int, cfg: dict = ENCODER) -> dict:
    gen = torch.Generator().manual_seed(seed)
    model = build_daclip(CLIP, DaCLIP, cfg)
    randomize(model, gen)
    sd = {"module." + k: v.contiguous() for k, v in model.state_dict().items()}
    # Training state as open_clip's trainer saves it next to the weights.
    # Optimizer state for the controller's linear layers (DA-CLIP trains the controller with
    # the CLIP towers locked; a subset keeps the file small).
    opt = torch.optim.AdamW(model.visual_control.transformer.zero_modules.parameters(), lr=1e-4)
    s = cfg["vision"]["image_size"]
    model(torch.randn(1, 3, s, s, generator=gen), None)["image_features"].sum().backward()
    opt.step()
    torch.save({"epoch": 1, "name": "parity", "state_dict": sd,
                "optimizer": opt.state_dict()}, out / f"{cfg['name']}.pt")
    pixels = torch.randn(cfg["batch"], 3, s, s, generator=gen)
    with torch.no_grad():
        image, degra = model.encode_image(pixels, control=True)
    save_file({"pixels": pixels, "image_features": image.contiguous(),
               "degra_features": degra.contiguous()},
              str(out / f"{cfg['name']}.io.safetensors"))
    towers = [model.clip.visual, model.visual_control]
    params = sum(p.numel() for m in towers for p in m.parameters())
    return dict(name=cfg["name"], vision=cfg["vision"], embed_dim=cfg["embed_dim"], seed=seed,
                params=params)


def preprocess_case(util, out: Path, seed: int, png: bool = False) -> None:
    """A smooth image (so that 8-bit resampling differences stay small) and its transform."""
    rng = np.random.default_rng(seed)
    h, w = 150, 97
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    phase = rng.uniform(0, 6, size=3)
    img = np.stack([0.5 + 0.45 * np.sin(3 * x + 2 * y + p) for p in phase], axis=-1)
    img = img.astype(np.float32)
    clip = util.clip_transform(img)  # RGB HWC in [0, 1] -> [3, 224, 224]
    save_file({"image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
               "pixels": clip.contiguous()}, str(out / "preprocess.io.safetensors"))
    if png:
        from PIL import Image
        Image.fromarray((img * 255).round().astype(np.uint8)).save(out / "preprocess.png")


def image_contexts(CLIP, DaCLIP, util, out: Path, seed: int) -> None:
    """Upstream's contexts of `preprocess.png` (read back as upstream's test code reads an
    image: 8-bit RGB scaled to [0, 1]) with the encoder case's weights, for `mrsampler encode`."""
    from PIL import Image
    model = build_daclip(CLIP, DaCLIP, ENCODER)
    sd = torch.load(out / f"{ENCODER['name']}.pt", map_location="cpu")["state_dict"]
    model.load_state_dict({k[len("module."):]: v for k, v in sd.items()})
    img = np.asarray(Image.open(out / "preprocess.png").convert("RGB")).astype(np.float32) / 255
    pixels = util.clip_transform(img, resolution=ENCODER["vision"]["image_size"]).unsqueeze(0)
    with torch.no_grad():
        image, degra = model.encode_image(pixels, control=True)
    np.save(out / "preprocess.image_context.npy", image.numpy())
    np.save(out / "preprocess.degra_context.npy", degra.numpy())


def defaults(ConditionalUNet, CLIP, DaCLIP) -> list:
    net = ConditionalUNet(3, 3, 64, [1, 2, 4, 8], 512, True, True)
    cfg = json.loads((Path(sys.modules["open_clip"].__file__).parent / "model_configs" /
                      "daclip_ViT-B-32.json").read_text())
    model = DaCLIP(CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                        text_cfg=cfg["text_cfg"]))
    towers = [model.clip.visual, model.visual_control]
    return [
        dict(name="daclip denoiser (universal-ir)", setting=dict(
            in_nc=3, out_nc=3, nf=64, ch_mult=[1, 2, 4, 8], context_dim=512,
            use_degra_context=True, use_image_context=True),
            params=sum(p.numel() for p in net.parameters())),
        dict(name="daclip_ViT-B-32 encoder (visual + visual_control)", vision=cfg["vision_cfg"],
             embed_dim=cfg["embed_dim"],
             params=sum(p.numel() for m in towers for p in m.parameters())),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", type=Path, help="root of a daclip-uir checkout")
    ap.add_argument("--out", type=Path, default=Path("models/tests/data/daclip"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--one", metavar="NAME", help="one denoiser case at the flags' configuration")
    ap.add_argument("--nf", type=int, default=32)
    ap.add_argument("--ch-mult", type=json.loads, default=[1, 1, 2, 2])
    ap.add_argument("--context-dim", type=int, default=32)
    ap.add_argument("--shape", type=json.loads, default=[1, 3, 40, 56])
    ap.add_argument("--times", type=json.loads, default=[42.5])
    ap.add_argument("--released-encoder", action="store_true",
                    help="with --one: the encoder at the released ViT-B/32 configuration "
                         "(random weights; use --context-dim 512 for a matching denoiser)")
    args = ap.parse_args()
    ConditionalUNet, CLIP, DaCLIP, util = import_upstream(args.checkout.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        case = dict(name=args.one, setting=dict(
            in_nc=args.shape[1], out_nc=args.shape[1], nf=args.nf, ch_mult=args.ch_mult,
            context_dim=args.context_dim, use_degra_context=True, use_image_context=True),
            shape=args.shape, times=args.times)
        print(json.dumps(denoiser_case(ConditionalUNet, case, args.out, args.seed, npy=True)))
        if args.released_encoder:
            print(json.dumps(encoder_case(CLIP, DaCLIP, args.out, args.seed, released_encoder())))
            return
        print(json.dumps(encoder_case(CLIP, DaCLIP, args.out, args.seed)))
        preprocess_case(util, args.out, args.seed, png=True)
        image_contexts(CLIP, DaCLIP, util, args.out, args.seed)
        return
    cases = [denoiser_case(ConditionalUNet, c, args.out, args.seed + i)
             for i, c in enumerate(DENOISERS)]
    encoder = encoder_case(CLIP, DaCLIP, args.out, args.seed)
    preprocess_case(util, args.out, args.seed)
    manifest = dict(denoisers=cases, encoder=encoder)
    (args.out / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (args.out / "defaults.json").write_text(
        json.dumps(defaults(ConditionalUNet, CLIP, DaCLIP), indent=1) + "\n")
    print(f"wrote {len(cases)} denoiser cases, the encoder and preprocessing cases to {args.out}")


if __name__ == "__main__":
    main()
