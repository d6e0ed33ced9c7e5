//! Singlestep exponential-integrator updates for the MR probability-flow ODE, orders 1–3, data
//! and noise forms (the DPM-Solver(++)-2S/3S family, Lu et al. 2022, applied in the μ-shifted
//! frame `y = x − μ` of `docs/math.md` §4.1).
//!
//! A singlestep update of order `p` goes from `s` to `t` with `p` network evaluations: at `s`
//! and at `p − 1` intermediate stages at the λ-fractions `r₁ < r₂` of `h = λ_t − λ_s`. Every
//! stage and the final state are affine in `x_s`, the outputs evaluated so far and `μ`; this
//! module returns those weights, one [`StepCoeffs`] per evaluation, in the history convention
//! of the samplers (`q[0]` the output just evaluated, `q[j]` the one `j` evaluations earlier).
//!
//! All formulas are the Taylor ("heun") forms: the stage outputs enter through finite
//! differences `D1 ≈ h·f'` and `D2 ≈ h²·f''`, weighted by the `φ` functions of the exact
//! integral, so the update is exact for outputs that are polynomials of degree `< p` in λ.

use super::multistep::ode_phis;
use super::{Node, StepCoeffs};
use crate::param::Parameterization;

/// The λ-fractions of the intermediate stages of a singlestep update of `order` (1–3):
/// none, `[½]` (midpoint) and `[⅓, ⅔]`.
pub(crate) fn singlestep_fractions(order: usize) -> &'static [f64] {
    match order {
        2 => &[0.5],
        3 => &[1.0 / 3.0, 2.0 / 3.0],
        _ => &[],
    }
}

/// Weights of `y_t = a·y_s + c₀·m₀ + c₁·D1 + c₂·D2` as `(a, [c₀, c₁, c₂])`, where the exact
/// integral of a model output `m(λ) = m₀ + u·D1/h + u²·D2/(2h²)` (`u = λ − λ_s`) is taken.
fn taylor_weights(param: Parameterization, s: Node, t: Node) -> (f64, [f64; 3]) {
    let h = t.lambda - s.lambda;
    let [p1, p2, p3] = ode_phis(param, h);
    match param {
        Parameterization::Data => (
            t.sigma / s.sigma,
            [-t.alpha * p1, t.alpha * p2, -t.alpha * p3],
        ),
        Parameterization::Noise => (
            t.alpha / s.alpha,
            [-t.sigma * p1, -t.sigma * p2, -t.sigma * p3],
        ),
    }
}

/// Turns `(a, q)` weights in the shifted frame into a full update `x_t = a·x_s + Σ q·m + c_μ·μ`.
///
/// In `y = x − μ` the data form reads `y_t = a·y_s + Σ wᵢ(x̂₀ᵢ − μ)`, so `c_μ = 1 − a − Σ wᵢ`;
/// the noise form has no `μ` inside the outputs, so `c_μ = 1 − a`. Both assume `λ` consistent
/// with `α`, `σ` (exact mode).
fn shifted(param: Parameterization, a: f64, q: [f64; 4]) -> StepCoeffs {
    let mu = match param {
        Parameterization::Data => 1.0 - a - q.iter().sum::<f64>(),
        Parameterization::Noise => 1.0 - a,
    };
    StepCoeffs {
        x: a,
        q,
        mu,
        ..StepCoeffs::ZERO
    }
}

/// The `order` updates (1–3) of one singlestep step from `s` to `t` with intermediate `stages`
/// (the nodes at [`singlestep_fractions`]`(order)` of the λ-step, in order).
///
/// Update `j` follows evaluation `j` (at `s` for `j = 0`, at `stages[j − 1]` otherwise): for
/// `j < order − 1` it computes the stage `stages[j]`, the last one computes `x_t`. Each reads
/// `x_s` (weight `x`), the `j + 1` outputs so far (`q[0]` the newest, `q[j]` the one at `s`)
/// and `μ`.
///
/// # Panics
/// If `order` is not 1–3 or `stages` does not hold `order − 1` nodes. Callers validate both.
pub(crate) fn singlestep_coefficients(
    param: Parameterization,
    order: usize,
    s: Node,
    stages: &[Node],
    t: Node,
) -> Vec<StepCoeffs> {
    assert!((1..=3).contains(&order) && stages.len() == order - 1);
    let h = t.lambda - s.lambda;
    // Fractions r_j of the stages, from their actual λ (robust to inexact inverses).
    let r: Vec<f64> = stages.iter().map(|n| (n.lambda - s.lambda) / h).collect();
    let first_order_to = |n: Node| {
        let (a, c) = taylor_weights(param, s, n);
        shifted(param, a, [c[0], 0.0, 0.0, 0.0])
    };
    let mut out = Vec::with_capacity(order);
    match order {
        1 => out.push(first_order_to(t)),
        2 => {
            out.push(first_order_to(stages[0]));
            // D1 = (m₁ − m₀)/r₁; history after evaluation 1: [m₁, m₀].
            let (a, c) = taylor_weights(param, s, t);
            let d1 = c[1] / r[0];
            out.push(shifted(param, a, [d1, c[0] - d1, 0.0, 0.0]));
        }
        _ => {
            let (r1, r2) = (r[0], r[1]);
            out.push(first_order_to(stages[0]));
            // Stage 2 at r₂: second order with the stage-1 output at r₁/r₂ of its λ-step.
            let (a, c) = taylor_weights(param, s, stages[1]);
            let d1 = c[1] * r2 / r1;
            out.push(shifted(param, a, [d1, c[0] - d1, 0.0, 0.0]));
            // Final: D1 = (r₂·D1₀ − r₁·D1₁)/(r₂ − r₁), D2 = 2(D1₁ − D1₀)/(r₂ − r₁), with
            // D1₀ = (m₁ − m₀)/r₁ and D1₁ = (m₂ − m₀)/r₂. History: [m₂, m₁, m₀].
            let (a, c) = taylor_weights(param, s, t);
            let dr = r2 - r1;
            // Weights of D1 and D2 on (m₂, m₁, m₀).
            let d1w = [-r1 / (r2 * dr), r2 / (r1 * dr), 0.0];
            let d2w = [2.0 / (r2 * dr), -2.0 / (r1 * dr), 0.0];
            let mut q = [0.0; 4];
            for i in 0..2 {
                q[i] = c[1] * d1w[i] + c[2] * d2w[i];
            }
            // Each difference is taken against m₀, so m₀ gets minus the sum of the others.
            q[2] = c[0] - q[0] - q[1];
            out.push(shifted(param, a, q));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(lambda: f64) -> Node {
        Node::at_lambda(lambda, 0.2)
    }

    /// The exact solution of `dy/dλ`-form MR flow when the model output is a polynomial in λ,
    /// by composite Gauss–Legendre quadrature of the variation-of-constants integral.
    fn exact(param: Parameterization, s: Node, t: Node, ys: f64, f: &dyn Fn(f64) -> f64) -> f64 {
        // Data: y_t = (σ_t/σ_s) y_s + α_t ∫ e^{−(λ_t − λ)} f dλ.
        // Noise: y_t = (α_t/α_s) y_s − σ_t ∫ e^{λ_t − λ} f dλ.
        let (a, kernel): (f64, Box<dyn Fn(f64) -> f64>) = match param {
            Parameterization::Data => (
                t.sigma / s.sigma,
                Box::new(move |l| t.alpha * (l - t.lambda).exp()),
            ),
            Parameterization::Noise => (
                t.alpha / s.alpha,
                Box::new(move |l| -t.sigma * (t.lambda - l).exp()),
            ),
        };
        let (g, w) = (
            [-0.774_596_669_241_483_4, 0.0, 0.774_596_669_241_483_4],
            [5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0],
        );
        let n = 200;
        let dl = (t.lambda - s.lambda) / n as f64;
        let mut integral = 0.0;
        for i in 0..n {
            let mid = s.lambda + (i as f64 + 0.5) * dl;
            for (gi, wi) in g.iter().zip(w) {
                let l = mid + 0.5 * dl * gi;
                integral += 0.5 * dl * wi * kernel(l) * f(l);
            }
        }
        a * ys + integral
    }

    /// An update of order p is exact for outputs that are polynomials of degree < p in λ, in both
    /// forms, including the μ terms.
    #[test]
    fn exact_for_polynomials_below_the_order() {
        let (s, t) = (node(-1.2), node(0.6));
        let mu = 0.3;
        let xs = 0.9;
        for param in [Parameterization::Data, Parameterization::Noise] {
            for order in 1..=3 {
                let stages: Vec<Node> = singlestep_fractions(order)
                    .iter()
                    .map(|r| node(s.lambda + r * (t.lambda - s.lambda)))
                    .collect();
                let coeffs = singlestep_coefficients(param, order, s, &stages, t);
                assert_eq!(coeffs.len(), order);
                for degree in 0..order {
                    // The data form integrates x̂₀ − μ; the noise form ε̂.
                    let f = |l: f64| 0.4 + 0.7 * (l - s.lambda).powi(degree as i32);
                    let m = |l: f64| match param {
                        Parameterization::Data => f(l) + mu,
                        Parameterization::Noise => f(l),
                    };
                    let mut outs = vec![m(s.lambda)];
                    let mut got = f64::NAN;
                    for (j, c) in coeffs.iter().enumerate() {
                        // history newest first
                        let val = c.x * xs
                            + outs.iter().rev().zip(c.q).map(|(o, w)| o * w).sum::<f64>()
                            + c.mu * mu;
                        if j + 1 < order {
                            outs.push(m(stages[j].lambda));
                        } else {
                            got = val;
                        }
                    }
                    let want = exact(param, s, t, xs - mu, &f) + mu;
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{param:?} order {order} degree {degree}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Local error shrinks as h^{p+1} for a smooth non-polynomial output.
    #[test]
    fn local_error_order() {
        let mu = 0.1;
        let f = |l: f64| (0.8 * l).sin();
        for order in 1..=3 {
            let mut errs = Vec::new();
            for h in [0.4, 0.2] {
                let (s, t) = (node(-0.5), node(-0.5 + h));
                let stages: Vec<Node> = singlestep_fractions(order)
                    .iter()
                    .map(|r| node(s.lambda + r * h))
                    .collect();
                let coeffs = singlestep_coefficients(Parameterization::Data, order, s, &stages, t);
                let mut outs = vec![f(s.lambda) + mu];
                let xs = 0.5;
                let mut got = 0.0;
                for (j, c) in coeffs.iter().enumerate() {
                    let val = c.x * xs
                        + outs.iter().rev().zip(c.q).map(|(o, w)| o * w).sum::<f64>()
                        + c.mu * mu;
                    if j + 1 < order {
                        outs.push(f(stages[j].lambda) + mu);
                    } else {
                        got = val;
                    }
                }
                let want = exact(Parameterization::Data, s, t, xs - mu, &f) + mu;
                errs.push((got - want).abs());
            }
            let rate = (errs[0] / errs[1]).log2();
            assert!(
                rate > order as f64 + 0.7,
                "order {order}: local rate {rate} ({errs:?})"
            );
        }
    }
}
