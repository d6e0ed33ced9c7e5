"""Times one MR Sampler step in PyTorch (CPU), three ways. Optional; not run by CI.

    pip install torch
    python3 benches/torch_step.py [--shape 4,3,512,512] [--threads 2] [--runs 7]

* `reference`: as the reference implementation writes it, separate allocating tensor
  operations per term (`torch.randn_like` for the SDE);
* `inplace`: the best eager PyTorch: the conversion folded into the update's coefficients
  (one `mul` into a preallocated buffer, then `add_(…, alpha=…)` per term), noise drawn in place
  (`normal_`), no allocation per step;
* `compile`: `torch.compile` of the reference function (Inductor fuses it into one generated
  C++ loop; needs a C++ compiler; `null` where it fails).

Prints one JSON line like examples/step_overhead.rs. The "network" costs nothing: its output
is a fixed tensor, so the time is the sampler's own work (conversion + update + noise).
"""
import argparse
import json
import math
import time

import torch


def step_ode2_data(x, mu, eps, prev_q, c):
    # Conversion noise -> data, as the reference does it.
    q = (x - c["sigma_s"] * eps) / c["alpha_s"] - ((1 - c["alpha_s"]) / c["alpha_s"]) * mu
    d1 = (1.0 / c["r0"]) * (q - prev_q)
    x_t = (
        (c["sigma_t"] / c["sigma_s"]) * x
        - (c["alpha_t"] * c["phi_1"]) * q
        + (c["alpha_t"] * c["phi_2"]) * d1
        + mu * c["c_d"]
    )
    return x_t, q


def step_sde2_data(x, mu, eps, prev_q, c):
    q = (x - c["sigma_s"] * eps) / c["alpha_s"] - ((1 - c["alpha_s"]) / c["alpha_s"]) * mu
    d1 = (1.0 / c["r0"]) * (q - prev_q)
    noise = torch.randn_like(x)
    x_t = (
        (c["sigma_t"] / c["sigma_s"] * math.exp(-c["h"])) * x
        + (c["alpha_t"] * (1 - math.exp(-2.0 * c["h"]))) * q
        + (c["alpha_t"] * c["psi_2"]) * d1
        + c["sigma_t"] * math.sqrt(1.0 - math.exp(-2.0 * c["h"])) * noise
        + mu * c["c_sd"]
    )
    return x_t, q


def inplace_steps(shape, c):
    """The two steps with folded coefficients and preallocated outputs."""
    a, s_, at, st, ss, r0, h = (c["alpha_s"], c["sigma_s"], c["alpha_t"], c["sigma_t"],
                                c["sigma_s"], c["r0"], c["h"])
    q = torch.empty(shape)
    xt = torch.empty(shape)
    noise = torch.empty(shape)

    def convert(x, mu, eps):
        torch.mul(x, 1.0 / a, out=q)
        q.add_(eps, alpha=-s_ / a)
        q.add_(mu, alpha=-(1 - a) / a)

    def ode(x, mu, eps, prev_q):
        convert(x, mu, eps)
        w = at * c["phi_2"] / r0
        torch.mul(x, st / ss, out=xt)
        xt.add_(q, alpha=-at * c["phi_1"] + w)
        xt.add_(prev_q, alpha=-w)
        xt.add_(mu, alpha=c["c_d"])
        return xt, q

    def sde(x, mu, eps, prev_q):
        convert(x, mu, eps)
        e2 = 1 - math.exp(-2.0 * h)
        w = at * c["psi_2"] / r0
        noise.normal_()
        torch.mul(x, st / ss * math.exp(-h), out=xt)
        xt.add_(q, alpha=at * e2 + w)
        xt.add_(prev_q, alpha=-w)
        xt.add_(noise, alpha=st * math.sqrt(e2))
        xt.add_(mu, alpha=c["c_sd"])
        return xt, q

    return ode, sde


def best_ms(fn, runs, steps=20):
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t) / steps)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4,3,512,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    shape = [int(v) for v in a.shape.split(",")]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(shape)
    mu = torch.rand(shape)
    eps = torch.randn(shape)
    prev_q = torch.rand(shape)
    h = 0.5
    c = dict(alpha_s=0.4, sigma_s=0.18, alpha_t=0.6, sigma_t=0.15, r0=0.9, h=h,
             phi_1=math.expm1(-h), phi_2=math.expm1(-h) / h + 1.0, psi_2=1 - (1 - math.exp(-2 * h)) / (2 * h),
             c_d=0.1, c_sd=0.1)
    times = {}
    with torch.no_grad():
        ode_in, sde_in = inplace_steps(shape, c)
        variants = {"reference": (step_ode2_data, step_sde2_data), "inplace": (ode_in, sde_in)}
        try:
            variants["compile"] = (torch.compile(step_ode2_data), torch.compile(step_sde2_data))
        except Exception as e:  # noqa: BLE001
            print(f"torch.compile unavailable: {e}")
        for name, (ode_f, sde_f) in variants.items():
            try:
                for f in (ode_f, sde_f):
                    f(x, mu, eps, prev_q, c) if name != "inplace" else f(x, mu, eps, prev_q)
                if name == "inplace":
                    ode = best_ms(lambda: ode_f(x, mu, eps, prev_q), a.runs)
                    sde = best_ms(lambda: sde_f(x, mu, eps, prev_q), a.runs)
                else:
                    ode = best_ms(lambda: ode_f(x, mu, eps, prev_q, c), a.runs)
                    sde = best_ms(lambda: sde_f(x, mu, eps, prev_q, c), a.runs)
                times[name] = {"ode2_data_ms_per_step": round(ode, 3),
                               "sde2_data_ms_per_step": round(sde, 3)}
            except Exception as e:  # noqa: BLE001
                times[name] = None
                print(f"{name} failed: {type(e).__name__}: {e}")
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "shape": shape, "dtype": "f32",
                      "threads": a.threads, "variants": times}))


if __name__ == "__main__":
    main()
