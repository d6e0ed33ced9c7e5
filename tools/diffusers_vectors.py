"""Generates tests/data/diffusers/dpmsolver.json: runs of HuggingFace diffusers'
DPMSolverMultistepScheduler on VP (DDPM) schedules with a fixed toy network and injected
noise, for mrsampler to replay in `cargo test` (tests/diffusers.rs). Run by hand, not by CI:

    pip install diffusers torch numpy
    python3 tools/diffusers_vectors.py

diffusers computes its schedule in float32. For a tight comparison this script patches the
scheduler's arrays (betas, alphas_cumprod, alpha_t, sigma_t, lambda_t) to float64 right after
construction, recomputes the per-step sigmas in float64 after `set_timesteps` (which rounds
them to float32), removes the two float32 casts in `step` (sample and injected noise), and
feeds float64 tensors, so every run below is the diffusers algorithm in float64. The toy network is `0.9·tanh(0.7·x) + 0.05·t/T`, read as the configured prediction
type.
"""
import itertools
import json
import math

import diffusers
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

T = 1000
SHAPE = [2, 3, 4]


def _float64_step():
    """`step` downcasts the sample and the injected noise to float32; rebuild it without
    those two casts (the only change to diffusers' code)."""
    import inspect
    import textwrap

    import diffusers.schedulers.scheduling_dpmsolver_multistep as mod

    src = textwrap.dedent(inspect.getsource(DPMSolverMultistepScheduler.step))
    patched = src.replace("sample = sample.to(torch.float32)", "pass")
    patched = patched.replace(
        "noise = variance_noise.to(device=model_output.device, dtype=torch.float32)",
        "noise = variance_noise.to(device=model_output.device)",
    )
    assert patched.count("float32") == src.count("float32") - 2, "diffusers changed: update the patch"
    ns = {}
    exec(patched, mod.__dict__, ns)
    DPMSolverMultistepScheduler.step = ns["step"]


_float64_step()


def betas64(schedule, start, end):
    if schedule == "linear":
        return torch.linspace(start, end, T, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(start ** 0.5, end ** 0.5, T, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    raise ValueError(schedule)


def make(cfg):
    s = DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        beta_start=cfg["beta_start"],
        beta_end=cfg["beta_end"],
        beta_schedule=cfg["beta_schedule"],
        solver_order=cfg["solver_order"],
        prediction_type=cfg["prediction_type"],
        algorithm_type=cfg["algorithm_type"],
        solver_type=cfg.get("solver_type", "heun"),
        lower_order_final=True,
        timestep_spacing=cfg["timestep_spacing"],
        steps_offset=cfg["steps_offset"],
        final_sigmas_type=cfg["final_sigmas_type"],
    )
    # Patch to float64.
    s.betas = betas64(cfg["beta_schedule"], cfg["beta_start"], cfg["beta_end"])
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
    s.alpha_t = torch.sqrt(s.alphas_cumprod)
    s.sigma_t = torch.sqrt(1 - s.alphas_cumprod)
    s.lambda_t = torch.log(s.alpha_t) - torch.log(s.sigma_t)
    s.sigmas = ((1 - s.alphas_cumprod) / s.alphas_cumprod) ** 0.5
    return s


def toy(x, t):
    return 0.9 * torch.tanh(0.7 * x) + 0.05 * float(t) / T


def run(cfg, seed):
    s = make(cfg)
    s.set_timesteps(cfg["num_inference_steps"])
    # set_timesteps rounds its sigmas to float32: recompute them in float64 (the timesteps are
    # integers, so diffusers' interpolation is the table lookup).
    full = ((1 - s.alphas_cumprod) / s.alphas_cumprod) ** 0.5
    last = full[0:1] if cfg["final_sigmas_type"] == "sigma_min" else torch.zeros(1, dtype=torch.float64)
    s.sigmas = torch.cat([full[s.timesteps], last])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    x_T = x.clone()
    noises = []
    for t in s.timesteps:
        out = toy(x, t)
        kwargs = {}
        if cfg["algorithm_type"].startswith("sde"):
            z = torch.randn(SHAPE, generator=g, dtype=torch.float64)
            noises.append(z.flatten().tolist())
            kwargs["variance_noise"] = z
        x = s.step(out, t, x, **kwargs).prev_sample
    return {
        "x_T": x_T.flatten().tolist(),
        "noises": noises,
        "timesteps": [int(t) for t in s.timesteps],
        "final": x.flatten().tolist(),
    }


def main():
    cases = []
    schedules = [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 1e-4, 0.02)]
    combos = [
        ("dpmsolver++", 1), ("dpmsolver++", 2), ("dpmsolver++", 3),
        ("dpmsolver", 1), ("dpmsolver", 2), ("dpmsolver", 3),
        ("sde-dpmsolver++", 1), ("sde-dpmsolver++", 2),
    ]
    seed = 0
    for (sched, bs, be), (alg, order), pred, spacing, steps in itertools.product(
        schedules, combos, ["epsilon", "sample", "v_prediction"], ["linspace", "leading", "trailing"], [8, 20]
    ):
        # Keep the file small: every combination on the linear schedule, a spread on the others.
        if sched != "linear" and (pred != "epsilon" or spacing != "linspace"):
            continue
        finals = ["zero", "sigma_min"] if alg != "dpmsolver" else ["sigma_min"]
        for final in finals:
            cfg = {
                "beta_schedule": sched, "beta_start": bs, "beta_end": be, "T": T,
                "algorithm_type": alg, "solver_order": order, "prediction_type": pred,
                "timestep_spacing": spacing, "steps_offset": 1 if spacing == "leading" else 0,
                "final_sigmas_type": final, "num_inference_steps": steps, "shape": SHAPE,
            }
            seed += 1
            res = run(cfg, seed)
            name = f"{sched}/{alg}-{order}/{pred}/{spacing}/{steps}/{final}"
            cases.append({"name": name, **cfg, **res})
    # The midpoint second-order form (diffusers' default solver_type) on a subset: every
    # algorithm with an order-2 update, linear schedule, epsilon prediction.
    for (alg, order), spacing, steps, final in itertools.product(
        [("dpmsolver++", 2), ("dpmsolver++", 3), ("dpmsolver", 2), ("dpmsolver", 3), ("sde-dpmsolver++", 2)],
        ["linspace", "trailing"], [8, 20], ["zero", "sigma_min"],
    ):
        if alg == "dpmsolver" and final == "zero":
            continue
        cfg = {
            "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "T": T,
            "algorithm_type": alg, "solver_order": order, "prediction_type": "epsilon",
            "timestep_spacing": spacing, "steps_offset": 0, "solver_type": "midpoint",
            "final_sigmas_type": final, "num_inference_steps": steps, "shape": SHAPE,
        }
        seed += 1
        res = run(cfg, seed)
        name = f"linear/{alg}-{order}-midpoint/epsilon/{spacing}/{steps}/{final}"
        cases.append({"name": name, **cfg, **res})
    doc = {
        "schema": "mrsampler-diffusers-v1",
        "notes": f"diffusers {diffusers.__version__}, torch {torch.__version__}, DPMSolverMultistepScheduler "
                 "patched to float64; solver_type heun (midpoint where a case says so), lower_order_final "
                 "true; toy network "
                 "0.9*tanh(0.7*x) + 0.05*t/T; generated by tools/diffusers_vectors.py",
        "cases": cases,
    }
    with open("tests/data/diffusers/dpmsolver.json", "w") as f:
        json.dump(doc, f)
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
