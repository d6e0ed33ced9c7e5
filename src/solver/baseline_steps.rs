//! Baseline samplers' per-step weights (`docs/math.md` §6). All take the network's noise
//! prediction `ε̂` as `q0`.

use super::StepCoeffs;

/// Euler step of the reverse SDE (`stochastic`) or the probability-flow ODE over a time
/// interval `delta > 0` (in the units `theta` and `g` are given in), with drift rate `theta`,
/// diffusion `g` (`g² = 2σ∞²θ`) and score `−ε̂/sigma`:
/// `x ← x − [θ(μ − x) − c·g²·score]·Δ (− g·sqrt(Δ)·z)`, `c = 1` (SDE) or `½` (ODE).
pub(crate) fn euler_coefficients(
    theta: f64,
    g: f64,
    sigma: f64,
    delta: f64,
    stochastic: bool,
) -> StepCoeffs {
    let c = if stochastic { 1.0 } else { 0.5 };
    StepCoeffs {
        x: 1.0 + theta * delta,
        q: [-c * (g * g) * delta / sigma, 0.0, 0.0, 0.0],
        mu: -theta * delta,
        noise: stochastic.then(|| -g * delta.sqrt()),
        ..StepCoeffs::ZERO
    }
}

/// The process at one end of a Heun step: drift rate `theta`, diffusion `g`, marginal std
/// `sigma` (the score is `−ε̂/σ`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessAt {
    pub theta: f64,
    pub g: f64,
    pub sigma: f64,
}

/// Heun's corrector from `a` to `b = a − delta` (`docs/math.md` §6.3): the trapezoid of the drifts
/// at the start state (history slot 1, the output at `a`) and at the predictor's stage (slot 0,
/// the output at `b`), plus for the SDE `½(g_a + g_b)√Δ` times the predictor's own draw.
pub(crate) fn heun_corrector_coefficients(
    a: ProcessAt,
    b: ProcessAt,
    delta: f64,
    stochastic: bool,
) -> StepCoeffs {
    let c = if stochastic { 1.0 } else { 0.5 };
    StepCoeffs {
        x: 1.0 + 0.5 * delta * a.theta,
        stage: 0.5 * delta * b.theta,
        q: [
            -0.5 * delta * c * b.g * b.g / b.sigma,
            -0.5 * delta * c * a.g * a.g / a.sigma,
            0.0,
            0.0,
        ],
        mu: -0.5 * delta * (a.theta + b.theta),
        noise: stochastic.then(|| -0.5 * (a.g + b.g) * delta.sqrt()),
    }
}

/// Posterior-sampling step with the reference's arithmetic (`docs/math.md` §6.2): `A = e^{−θ_i dt}`,
/// `B = e^{−Θ_i dt}`, `C = e^{−Θ_{i−1} dt}`; `x̂₀ = μ + (x − μ − σ_i ε̂)·e^{Θ_i dt}`; std
/// `exp(½ ln max(var, 1e−20·dt))·σ∞`.
pub(crate) fn posterior_coefficients_reference(
    theta_i: f64,
    cum_i: f64,
    cum_prev: f64,
    dt: f64,
    sigma_i: f64,
    sigma_inf: f64,
) -> StepCoeffs {
    let a = (-theta_i * dt).exp();
    let b = (-cum_i * dt).exp();
    let c = (-cum_prev * dt).exp();
    let term1 = a * (1.0 - c * c) / (1.0 - b * b);
    let term2 = c * (1.0 - a * a) / (1.0 - b * b);
    let var = (1.0 - (-2.0 * theta_i * dt).exp()) * (1.0 - (-2.0 * cum_prev * dt).exp())
        / (1.0 - (-2.0 * cum_i * dt).exp());
    let std = (0.5 * var.max(1e-20 * dt).ln()).exp() * sigma_inf;
    posterior_affine(term1, term2, (cum_i * dt).exp(), sigma_i, std)
}

/// Strided posterior step from `s` to `t < s` (`docs/math.md` §6): `A = α(s)/α(t)`, `B = α(s)`,
/// `C = α(t)`, with `1 − A²`, `1 − B²`, `1 − C²` from `expm1` of the rate integrals
/// (`rate_ts = ∫_t^s θ`, `log_alpha_s = ln α(s)`, `log_alpha_t = ln α(t)`).
pub(crate) fn posterior_coefficients_exact(
    alpha_s: f64,
    alpha_t: f64,
    sigma_s: f64,
    rate_ts: f64,
    log_alpha_s: f64,
    log_alpha_t: f64,
    sigma_inf: f64,
) -> StepCoeffs {
    let a = alpha_s / alpha_t;
    let one_a2 = -(-2.0 * rate_ts).exp_m1();
    let one_b2 = -(2.0 * log_alpha_s).exp_m1();
    let one_c2 = -(2.0 * log_alpha_t).exp_m1();
    let term1 = a * one_c2 / one_b2;
    let term2 = alpha_t * one_a2 / one_b2;
    let std = sigma_inf * (one_a2 * one_c2 / one_b2).sqrt();
    posterior_affine(term1, term2, 1.0 / alpha_s, sigma_s, std)
}

/// `mean = μ + term1(x − μ) + term2(x̂₀ − μ)` with `x̂₀ − μ = (x − μ − σ ε̂)·inv_alpha`,
/// plus `std·z`.
fn posterior_affine(term1: f64, term2: f64, inv_alpha: f64, sigma: f64, std: f64) -> StepCoeffs {
    let w = term2 * inv_alpha;
    StepCoeffs {
        x: term1 + w,
        q: [-w * sigma, 0.0, 0.0, 0.0],
        mu: 1.0 - term1 - w,
        noise: Some(std),
        ..StepCoeffs::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/math.md` §9.12: with `B = A·C` the two forms agree; in the IR-SDE convention the variance
    /// vanishes at the last step and the mean is x̂₀.
    #[test]
    fn posterior_forms_agree_and_last_step_is_deterministic() {
        let (th, cum, dt, si) = (0.02f64, 0.7f64, 0.1f64, 0.2f64);
        let cum_prev = cum - th;
        let (a_s, a_t) = ((-cum * dt).exp(), (-cum_prev * dt).exp());
        let sigma_s = si * (1.0 - a_s * a_s).sqrt();
        let r = posterior_coefficients_reference(th, cum, cum_prev, dt, sigma_s, si);
        let e =
            posterior_coefficients_exact(a_s, a_t, sigma_s, th * dt, -cum * dt, -cum_prev * dt, si);
        for (u, v) in [
            (r.x, e.x),
            (r.q[0], e.q[0]),
            (r.mu, e.mu),
            (r.noise.unwrap(), e.noise.unwrap()),
        ] {
            assert!((u - v).abs() < 1e-12 * (1.0 + u.abs()), "{u} vs {v}");
        }
        // Last step into α = 1: zero variance; mean = x̂₀ = (x − μ − σ ε̂)/α_s + μ.
        let e = posterior_coefficients_exact(a_s, 1.0, sigma_s, cum * dt, -cum * dt, 0.0, si);
        assert_eq!(e.noise, Some(0.0));
        assert!((e.x - 1.0 / a_s).abs() < 1e-12);
        assert!((e.q[0] + sigma_s / a_s).abs() < 1e-12);
    }
}
