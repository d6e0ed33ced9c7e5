//! MR Sampler multistep updates: ODE orders 1–3 and SDE orders 1–2, data and noise forms
//! (`docs/math.md` §4.1–§4.3), with the Taylor ("heun") or the midpoint
//! second-order coefficient.
//!
//! In `y = x − μ` the MR process is a VP-type process with the pair `(α_t, σ_t)`, so each
//! update is the DPM-Solver(++) / SDE-DPM-Solver++ "taylor" multistep update applied to `y`,
//! plus the `μ` terms that undo the shift (Li et al., ICLR 2025; Lu et al., 2022).

use super::{StepCoeffs, phi};
use crate::param::Parameterization;

/// Probability-flow ODE or reverse SDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Equation {
    /// Probability-flow ODE: deterministic, orders 1–3.
    Ode,
    /// Reverse-time SDE: a fresh draw per step, orders 1–2.
    Sde,
}

/// The coefficient of the first difference `D1` in a second-order multistep update.
///
/// Both give second order; they differ in the `O(h³)` error constant. The third-order update
/// always uses the Taylor form (as DPM-Solver++(3M) does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecondOrder {
    /// The exact integral of the linear Taylor term, `φ₂`-weighted: the MR Sampler's (and the
    /// reference implementation's) form, diffusers' `solver_type="heun"` (default here).
    #[default]
    Taylor,
    /// Half the first-order weight (the integrand's midpoint value): diffusers'
    /// `solver_type="midpoint"`, its default. Data ODE `−½α_tφ₁·D1`, noise ODE `−½σ_tφ₁·D1`,
    /// data SDE `½α_tψ₁·D1`, noise SDE `−σ_tφ₁·D1`.
    Midpoint,
}

/// The coefficient of the second-difference term `D2` in a third-order multistep ODE update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThirdOrder {
    /// `2φ₃·D2`, the Taylor-consistent term: global order 3 (exact mode's default).
    Taylor,
    /// `φ₃·D2`, half of it, as DPM-Solver++(3M) is implemented by the MR Sampler reference and
    /// by diffusers: only global order 2 (`docs/math.md` §4.2). For parity with them.
    HalfD2,
}

/// The schedule at one grid time, as the solver sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Node {
    /// Mean weight `α`.
    pub alpha: f64,
    /// Marginal std `σ`.
    pub sigma: f64,
    /// Half log-SNR `λ` (in reference mode interpolated separately from `α`, `σ`).
    pub lambda: f64,
}

#[cfg(test)]
impl Node {
    /// The MR node at half log-SNR `lambda` for stationary std `sigma_inf`, with `α`, `σ`
    /// consistent with it (`α = 1/√(1 + e^{−2λ}/σ∞²)`, `σ = α·e^{−λ}`); for tests.
    pub(crate) fn at_lambda(lambda: f64, sigma_inf: f64) -> Node {
        let alpha = 1.0 / (1.0 + (-2.0 * lambda).exp() / (sigma_inf * sigma_inf)).sqrt();
        Node {
            alpha,
            sigma: alpha * (-lambda).exp(),
            lambda,
        }
    }
}

/// The ODE's `φ` weights over a λ-step `h` (`docs/math.md` §4.1): data form
/// `[e^{−h} − 1, h·φ₂(−h), −h·φ₃(−h)]`, noise form `[e^h − 1, h·φ₂(h), h·φ₃(h)]`.
pub(super) fn ode_phis(param: Parameterization, h: f64) -> [f64; 3] {
    match param {
        Parameterization::Data => {
            let [p1, p2, p3] = phi::scaled::<3>(-h);
            [p1, -p2, p3]
        }
        Parameterization::Noise => phi::scaled::<3>(h),
    }
}

/// Weights of one multistep update from `nodes[0]` (time `s = τ_{k−1}`) to `target`
/// (`t = τ_k`), using `order` model outputs taken at `nodes[0], nodes[1], nodes[2]`
/// (`τ_{k−1}, τ_{k−2}, τ_{k−3}`; only the first `order` are read).
///
/// `third` picks the second-difference term of the order-3 update ([`ThirdOrder`]), `second`
/// the order-2 update's coefficient ([`SecondOrder`]).
///
/// # Panics
/// If `order` is not 1–3 (or 1–2 for the SDE), or `nodes` holds fewer than `order` entries.
/// Callers validate both.
pub(crate) fn multistep_coefficients(
    solver: Equation,
    param: Parameterization,
    order: usize,
    target: Node,
    nodes: &[Node],
    third: ThirdOrder,
    second: SecondOrder,
) -> StepCoeffs {
    assert!((1..=3).contains(&order) && nodes.len() >= order);
    assert!(!(solver == Equation::Sde && order == 3));
    let s = nodes[0];
    let t = target;
    let h = t.lambda - s.lambda;

    // Finite differences as weights on (q0, q1, q2): D1 and D2 (`docs/math.md` §4.2).
    let mut d1 = [0.0; 3];
    let mut d2 = [0.0; 3];
    if order >= 2 {
        let r0 = (s.lambda - nodes[1].lambda) / h;
        let d10 = [1.0 / r0, -1.0 / r0, 0.0];
        if order == 2 {
            d1 = d10;
        } else {
            let r1 = (nodes[1].lambda - nodes[2].lambda) / h;
            let d11 = [0.0, 1.0 / r1, -1.0 / r1];
            let w = r0 / (r0 + r1);
            for i in 0..3 {
                d1[i] = d10[i] + (d10[i] - d11[i]) * w;
                d2[i] = (d10[i] - d11[i]) / (r0 + r1);
            }
        }
    }
    let third = match third {
        ThirdOrder::Taylor => 2.0,
        ThirdOrder::HalfD2 => 1.0,
    };
    let midpoint = order == 2 && second == SecondOrder::Midpoint;
    // q-weights from the coefficients (c0, c1, c2) of q0, D1, D2.
    let combine = |c0: f64, c1: f64, c2: f64| -> [f64; 4] {
        let mut q = [0.0; 4];
        for i in 0..3 {
            q[i] = c1 * d1[i] + c2 * d2[i];
        }
        q[0] += c0;
        q
    };

    match (solver, param) {
        (Equation::Ode, Parameterization::Data) => {
            let [phi1, phi2, phi3] = ode_phis(param, h);
            let ratio = t.sigma / s.sigma;
            StepCoeffs {
                x: ratio,
                q: if midpoint {
                    combine(-t.alpha * phi1, -0.5 * t.alpha * phi1, 0.0)
                } else {
                    combine(-t.alpha * phi1, t.alpha * phi2, -third * t.alpha * phi3)
                },
                mu: 1.0 - ratio + ratio * s.alpha - t.alpha,
                ..StepCoeffs::ZERO
            }
        }
        (Equation::Ode, Parameterization::Noise) => {
            let [phi1, phi2, phi3] = ode_phis(param, h);
            let ratio = t.alpha / s.alpha;
            StepCoeffs {
                x: ratio,
                q: if midpoint {
                    combine(-t.sigma * phi1, -0.5 * t.sigma * phi1, 0.0)
                } else {
                    combine(-t.sigma * phi1, -t.sigma * phi2, -third * t.sigma * phi3)
                },
                mu: 1.0 - ratio,
                ..StepCoeffs::ZERO
            }
        }
        (Equation::Sde, Parameterization::Data) => {
            let e2 = (-2.0 * h).exp();
            // ψ₁ = 1 − e^{−2h}, ψ₂ = 1 − ψ₁/(2h): −z·φ₁(z) and −z·φ₂(z) at z = −2h.
            let [m1, m2] = phi::scaled::<2>(-2.0 * h);
            let (psi1, psi2) = (-m1, -m2);
            StepCoeffs {
                x: t.sigma / s.sigma * (-h).exp(),
                q: if midpoint {
                    combine(t.alpha * psi1, 0.5 * t.alpha * psi1, 0.0)
                } else {
                    combine(t.alpha * psi1, t.alpha * psi2, 0.0)
                },
                mu: 1.0 - t.alpha / s.alpha * e2 - t.alpha * (1.0 - e2),
                noise: Some(t.sigma * psi1.sqrt()),
                ..StepCoeffs::ZERO
            }
        }
        (Equation::Sde, Parameterization::Noise) => {
            let [phi1, phi2] = phi::scaled::<2>(h);
            let ratio = t.alpha / s.alpha;
            StepCoeffs {
                x: ratio,
                q: if midpoint {
                    combine(-2.0 * t.sigma * phi1, -t.sigma * phi1, 0.0)
                } else {
                    combine(-2.0 * t.sigma * phi1, -2.0 * t.sigma * phi2, 0.0)
                },
                mu: 1.0 - ratio,
                noise: Some(t.sigma * (2.0 * h).exp_m1().sqrt()),
                ..StepCoeffs::ZERO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// `docs/math.md` §9.8: single steps with injected noise.
    #[test]
    fn golden_single_steps() {
        let s = Node {
            alpha: 0.005,
            sigma: 0.19607598037683804,
            lambda: -3.6690643266615037,
        };
        let t = Node {
            alpha: 0.0133124785,
            sigma: 0.1960610109,
            lambda: -2.691014377,
        };
        assert_relative_eq!(
            t.lambda - s.lambda,
            0.9780499496615036,
            max_relative = 1e-12
        );
        let (xs, mu, x0, eps, z) = (0.5, 0.3, 0.7, 0.25, 0.25);
        let apply =
            |c: StepCoeffs, q: f64| c.x * xs + c.q[0] * q + c.mu * mu + c.noise.unwrap_or(0.0) * z;
        let cases = [
            (
                Equation::Ode,
                Parameterization::Data,
                x0,
                0.5033053563625651,
            ),
            (
                Equation::Ode,
                Parameterization::Noise,
                eps,
                0.7511698231157938,
            ),
            (Equation::Sde, Parameterization::Data, x0, 0.42504696707017),
            (
                Equation::Sde,
                Parameterization::Noise,
                eps,
                0.7906180365379883,
            ),
        ];
        for (solver, param, q, want) in cases {
            let c = multistep_coefficients(
                solver,
                param,
                1,
                t,
                &[s],
                ThirdOrder::HalfD2,
                SecondOrder::Taylor,
            );
            assert_relative_eq!(apply(c, q), want, max_relative = 1e-12);
        }
    }

    fn node(lambda: f64, sigma_inf: f64) -> Node {
        Node::at_lambda(lambda, sigma_inf)
    }

    /// With consistent λ and a constant data prediction, every ODE order is the exact flow
    /// (point-mass exactness, `docs/math.md` §9.3), and data/noise order 1 agree (`docs/math.md` §9.4).
    #[test]
    fn point_mass_is_exact_for_every_order() {
        let si = 0.2;
        let (mu, x0, z0) = (0.3, 0.8, 0.37);
        let lams = [-2.0, -1.3, -0.4, 0.9];
        let nodes: Vec<Node> = lams.iter().map(|&l| node(l, si)).collect();
        let exact = |n: Node| n.alpha * x0 + (1.0 - n.alpha) * mu + n.sigma * z0;
        for order in 1..=3 {
            for third in [ThirdOrder::HalfD2, ThirdOrder::Taylor] {
                let hist: Vec<Node> = nodes[..3].iter().rev().copied().collect();
                let target = nodes[3];
                let xs = exact(hist[0]);
                let c = multistep_coefficients(
                    Equation::Ode,
                    Parameterization::Data,
                    order,
                    target,
                    &hist,
                    third,
                    SecondOrder::Taylor,
                );
                let got = c.x * xs + (c.q[0] + c.q[1] + c.q[2]) * x0 + c.mu * mu;
                assert!((got - exact(target)).abs() < 1e-14, "data order {order}");
                let c = multistep_coefficients(
                    Equation::Ode,
                    Parameterization::Noise,
                    order,
                    target,
                    &hist,
                    third,
                    SecondOrder::Taylor,
                );
                let got = c.x * xs + (c.q[0] + c.q[1] + c.q[2]) * z0 + c.mu * mu;
                assert!((got - exact(target)).abs() < 1e-14, "noise order {order}");
            }
        }
        let (s, t) = (nodes[0], nodes[1]);
        let xs = 0.41;
        let cd = multistep_coefficients(
            Equation::Ode,
            Parameterization::Data,
            1,
            t,
            &[s],
            ThirdOrder::HalfD2,
            SecondOrder::Taylor,
        );
        let cn = multistep_coefficients(
            Equation::Ode,
            Parameterization::Noise,
            1,
            t,
            &[s],
            ThirdOrder::HalfD2,
            SecondOrder::Taylor,
        );
        // ε̂ consistent with x̂₀ at s.
        let eps = (xs - mu - s.alpha * (x0 - mu)) / s.sigma;
        let a = cd.x * xs + cd.q[0] * x0 + cd.mu * mu;
        let b = cn.x * xs + cn.q[0] * eps + cn.mu * mu;
        assert!((a - b).abs() < 1e-14);
    }

    /// The deterministic part of the SDE updates of order p integrates outputs that are
    /// polynomials of degree < p in λ exactly (checked against Gauss–Legendre quadrature of the
    /// variation-of-constants integrals of `docs/math.md` §4.1), for the ODE and the SDE in both forms.
    /// The midpoint form is exact for constants only (its `D1` weight is a second-order
    /// approximation of the Taylor one; `tests/it/diffusers.rs` checks it against diffusers).
    #[test]
    fn updates_are_exact_for_polynomials() {
        let si = 0.2;
        let lams = [-0.1, -0.7, -1.6];
        let hist: Vec<Node> = lams.iter().map(|&l| node(l, si)).collect();
        let t = node(0.8, si);
        let s = hist[0];
        let quad = |kernel: &dyn Fn(f64) -> f64, f: &dyn Fn(f64) -> f64| {
            let (g, w) = (
                [-0.774_596_669_241_483_4, 0.0, 0.774_596_669_241_483_4],
                [5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0],
            );
            let n = 400;
            let dl = (t.lambda - s.lambda) / n as f64;
            (0..n)
                .map(|i| {
                    let mid = s.lambda + (i as f64 + 0.5) * dl;
                    g.iter()
                        .zip(w)
                        .map(|(gi, wi)| {
                            let l = mid + 0.5 * dl * gi;
                            0.5 * dl * wi * kernel(l) * f(l)
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
        };
        for solver in [Equation::Ode, Equation::Sde] {
            for second in [SecondOrder::Taylor, SecondOrder::Midpoint] {
                for order in 1..=2 {
                    let exact_degrees = match second {
                        SecondOrder::Taylor => order,
                        SecondOrder::Midpoint => 1,
                    };
                    for degree in 0..exact_degrees {
                        let f = |l: f64| 0.3 - 0.9 * (l - s.lambda).powi(degree as i32);
                        for param in [Parameterization::Data, Parameterization::Noise] {
                            let c = multistep_coefficients(
                                solver,
                                param,
                                order,
                                t,
                                &hist,
                                ThirdOrder::Taylor,
                                second,
                            );
                            let got: f64 = (0..3).map(|i| c.q[i] * f(lams[i])).sum();
                            let kernel: Box<dyn Fn(f64) -> f64> = match (solver, param) {
                                // α_t ∫ e^{−(λ_t−λ)} f dλ
                                (Equation::Ode, Parameterization::Data) => {
                                    Box::new(|l| t.alpha * (l - t.lambda).exp())
                                }
                                // −σ_t ∫ e^{λ_t−λ} f dλ
                                (Equation::Ode, Parameterization::Noise) => {
                                    Box::new(|l| -t.sigma * (t.lambda - l).exp())
                                }
                                // 2α_t ∫ e^{−2(λ_t−λ)} f dλ
                                (Equation::Sde, Parameterization::Data) => {
                                    Box::new(|l| 2.0 * t.alpha * (-2.0 * (t.lambda - l)).exp())
                                }
                                // −2σ_t ∫ e^{λ_t−λ} f dλ
                                (Equation::Sde, Parameterization::Noise) => {
                                    Box::new(|l| -2.0 * t.sigma * (t.lambda - l).exp())
                                }
                            };
                            let want = quad(&*kernel, &f);
                            assert!(
                                (got - want).abs() < 1e-11,
                                "{solver:?} {param:?} {second:?} order {order} degree {degree}: \
                                 {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The finite-difference weights reproduce the Taylor terms on a quadratic in λ.
    #[test]
    fn third_order_differences_match_derivatives() {
        let si = 0.2;
        let lams = [0.0, -0.3, -0.75];
        let f = |l: f64| 1.0 + 2.0 * l + 3.0 * l * l;
        let hist: Vec<Node> = lams.iter().map(|&l| node(l, si)).collect();
        let target = node(0.5, si);
        let h: f64 = 0.5;
        // Data form, q = f(λ) with f' = 2, f'' = 6 at λ_s = 0; the weights of D1, D2 recover
        // h f' and h² f''/2 exactly for a quadratic.
        let c = multistep_coefficients(
            Equation::Ode,
            Parameterization::Data,
            3,
            target,
            &hist,
            ThirdOrder::Taylor,
            SecondOrder::Taylor,
        );
        let phi1 = (-h).exp_m1();
        let phi2 = phi1 / h + 1.0;
        let phi3 = phi2 / h - 0.5;
        let a = target.alpha;
        let want = -a * phi1 * f(0.0) + a * phi2 * (h * 2.0) - 2.0 * a * phi3 * (h * h * 3.0);
        let got: f64 = (0..3).map(|i| c.q[i] * f(lams[i])).sum();
        assert!((got - want).abs() < 1e-13, "{got} vs {want}");
    }
}
