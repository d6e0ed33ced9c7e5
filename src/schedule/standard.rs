//! Standard diffusion as the `μ = 0` special case of the MR process: variance-preserving
//! (VP / DDPM, `σ∞ = 1`) and variance-exploding (VE, `α = 1`) schedules.
//!
//! In the paper's notation (its Table 1) a linear SDE `dx = f(t)x dt + g(t)dw` has the
//! transition `x_t | x₀ ~ N(m(t), v(t))`:
//!
//! | process | f(t) | g(t)² | m(t) | v(t) |
//! |---|---|---|---|---|
//! | MR | `−θ(t)` (toward μ) | `2σ∞²θ(t)` | `α x₀ + (1 − α)μ` | `σ∞²(1 − α²)` |
//! | VP | `−½β(t)` | `β(t)` | `α x₀` | `1 − α²` |
//! | VE | `0` | `dσ²/dt` | `x₀` | `σ(t)²` |
//!
//! With `μ = 0` the MR Sampler's steps on a VP schedule are DPM-Solver / DPM-Solver++ steps.

use super::{Knots, Schedule};
use crate::error::{Error, Result};

/// The beta schedules of DDPM / diffusers.
#[derive(Debug, Clone, PartialEq)]
pub enum Betas {
    /// `linspace(beta_start, beta_end, T)` (diffusers `linear`).
    Linear {
        /// First β.
        start: f64,
        /// Last β.
        end: f64,
    },
    /// `linspace(√beta_start, √beta_end, T)²` (diffusers `scaled_linear`, Stable Diffusion).
    ScaledLinear {
        /// First β.
        start: f64,
        /// Last β.
        end: f64,
    },
    /// The cosine schedule of Nichol & Dhariwal with β capped at 0.999 (diffusers
    /// `squaredcos_cap_v2`).
    SquaredCosCapV2,
    /// Explicit βs.
    Custom(Vec<f64>),
}

/// A discrete DDPM (variance-preserving) schedule over training steps `0..T`, used as a
/// continuous VP process: `ln ᾱ(t)` is linear between integer steps, and the extra time
/// `t = −1` is the clean end (`ᾱ = 1`, `σ = 0`), so a grid may end at `−1` (diffusers'
/// `final_sigmas_type = "zero"`: the last step returns `x̂₀`) or at `0` (`"sigma_min"`).
///
/// `α(t) = sqrt(ᾱ(t))`, `σ(t) = sqrt(1 − ᾱ(t))`, `σ∞ = 1`; the network is called with the
/// integer (or fractional) step index, as diffusers models are.
#[derive(Debug, Clone, PartialEq)]
pub struct VpSchedule {
    /// `ln ᾱ` at times −1, 0, 1, …, T − 1.
    log_abar: Vec<f64>,
    knots: Knots,
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

impl VpSchedule {
    /// A DDPM schedule with `steps` training steps (typically 1000).
    pub fn ddpm(betas: Betas, steps: usize) -> Result<Self> {
        if steps == 0 || steps > super::irsde::MAX_TRAINING_STEPS {
            return Err(Error::InvalidSchedule {
                param: "T",
                value: steps.to_string(),
                reason: "the number of training steps must lie in 1..=1000000",
            });
        }
        let b: Vec<f64> = match betas {
            Betas::Linear { start, end } => linspace(start, end, steps),
            Betas::ScaledLinear { start, end } => linspace(start.sqrt(), end.sqrt(), steps)
                .iter()
                .map(|v| v * v)
                .collect(),
            Betas::SquaredCosCapV2 => {
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..steps)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999)
                    })
                    .collect()
            }
            Betas::Custom(v) => {
                if v.len() != steps {
                    return Err(Error::InvalidSchedule {
                        param: "betas",
                        value: format!("{} values", v.len()),
                        reason: "a custom beta schedule needs one beta per training step",
                    });
                }
                v
            }
        };
        Self::from_betas(&b)
    }

    /// A schedule from explicit βs, each in `(0, 1)`.
    pub fn from_betas(betas: &[f64]) -> Result<Self> {
        if betas.is_empty() || betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
            return Err(Error::InvalidSchedule {
                param: "betas",
                value: format!("{} values", betas.len()),
                reason: "every beta must lie strictly between 0 and 1",
            });
        }
        let mut log_abar = Vec::with_capacity(betas.len() + 1);
        log_abar.push(0.0);
        let mut acc = 0.0;
        for b in betas {
            acc += (1.0 - b).ln();
            log_abar.push(acc);
        }
        let t: Vec<f64> = (0..log_abar.len()).map(|i| i as f64 - 1.0).collect();
        let alpha: Vec<f64> = log_abar.iter().map(|l| (0.5 * l).exp()).collect();
        let sigma: Vec<f64> = log_abar.iter().map(|l| (-l.exp_m1()).sqrt()).collect();
        let lambda = alpha
            .iter()
            .zip(&sigma)
            .map(|(a, s)| a.ln() - s.ln())
            .collect();
        let mut theta = vec![0.0];
        theta.extend(betas.iter().map(|b| -0.5 * (1.0 - b).ln()));
        let g = theta.iter().map(|th| (2.0 * th).sqrt()).collect();
        Ok(Self {
            knots: Knots {
                t,
                theta,
                theta_cumsum: log_abar.iter().map(|l| -0.5 * l).collect(),
                alpha,
                sigma,
                lambda,
                g,
                dt: 1.0,
            },
            log_abar,
        })
    }

    /// `ln ᾱ(t)`, linear between integer steps, `t` clamped to `[−1, T − 1]`.
    fn log_abar_at(&self, t: f64) -> f64 {
        let n = self.log_abar.len() - 1;
        let u = (t + 1.0).clamp(0.0, n as f64);
        let i = (u.floor() as usize).min(n - 1);
        let frac = u - i as f64;
        self.log_abar[i] + frac * (self.log_abar[i + 1] - self.log_abar[i])
    }

    fn t_of_log_abar(&self, target: f64) -> f64 {
        // ln ᾱ decreases with t.
        let n = self.log_abar.len() - 1;
        let j = self.log_abar[1..]
            .partition_point(|&v| v > target)
            .min(n - 1);
        let (a, b) = (self.log_abar[j], self.log_abar[j + 1]);
        let u = j as f64 + (target - a) / (b - a);
        (u - 1.0).clamp(-1.0, n as f64 - 1.0)
    }
}

impl Schedule for VpSchedule {
    fn sigma_inf(&self) -> f64 {
        1.0
    }
    fn t_min(&self) -> f64 {
        -1.0
    }
    fn t_max(&self) -> f64 {
        (self.log_abar.len() - 2) as f64
    }
    fn alpha(&self, t: f64) -> f64 {
        (0.5 * self.log_abar_at(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-self.log_abar_at(t).exp_m1()).sqrt()
    }
    fn log_alpha(&self, t: f64) -> f64 {
        0.5 * self.log_abar_at(t)
    }
    fn theta(&self, t: f64) -> f64 {
        let n = self.log_abar.len() - 1;
        let u = (t + 1.0).clamp(0.0, n as f64);
        let i = (u.ceil() as usize).clamp(1, n);
        -0.5 * (self.log_abar[i] - self.log_abar[i - 1])
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        // ᾱ = 1/(1 + e^{−2λ}) → ln ᾱ = −ln(1 + e^{−2λ}).
        self.t_of_log_abar(-(-2.0 * lambda).exp().ln_1p())
    }
    fn t_of_kappa(&self, kappa: f64) -> f64 {
        self.t_of_log_abar(-(kappa * kappa).ln_1p())
    }
    fn t_lambda_finite(&self) -> f64 {
        0.0
    }
    fn knots(&self) -> Option<&Knots> {
        Some(&self.knots)
    }
}

/// The continuous linear-β VP process of Song et al.: `β(t) = β₀ + t(β₁ − β₀)`,
/// `α(t) = exp(−¼t²(β₁ − β₀) − ½tβ₀)`, sampled on `t ∈ [t_min, 1]` with `t_min = 1e-3` by
/// default (at `t = 0`, `σ = 0` and `λ = +∞`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpLinear {
    beta_min: f64,
    beta_max: f64,
    t_min: f64,
}

impl VpLinear {
    /// `beta_min` (typically 0.1) and `beta_max` (typically 20), `0 < beta_min < beta_max`.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min > 0.0 && beta_max > beta_min && beta_max.is_finite()) {
            return Err(Error::InvalidSchedule {
                param: "beta_min/beta_max",
                value: format!("{beta_min}/{beta_max}"),
                reason: "needs 0 < beta_min < beta_max < inf",
            });
        }
        Ok(Self {
            beta_min,
            beta_max,
            t_min: 1e-3,
        })
    }

    /// The smallest sampling time (default 1e-3), in `(0, 1)`.
    pub fn with_t_min(mut self, t_min: f64) -> Result<Self> {
        if !(t_min > 0.0 && t_min < 1.0) {
            return Err(Error::InvalidSchedule {
                param: "t_min",
                value: t_min.to_string(),
                reason: "must lie strictly between 0 and 1 (typically 1e-3)",
            });
        }
        self.t_min = t_min;
        Ok(self)
    }

    fn half_integral(&self, t: f64) -> f64 {
        0.25 * t * t * (self.beta_max - self.beta_min) + 0.5 * t * self.beta_min
    }
}

impl Schedule for VpLinear {
    fn sigma_inf(&self) -> f64 {
        1.0
    }
    fn t_min(&self) -> f64 {
        self.t_min
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn alpha(&self, t: f64) -> f64 {
        (-self.half_integral(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(-2.0 * self.half_integral(t)).exp_m1()).sqrt()
    }
    fn log_alpha(&self, t: f64) -> f64 {
        -self.half_integral(t)
    }
    fn theta(&self, t: f64) -> f64 {
        0.5 * (self.beta_min + t * (self.beta_max - self.beta_min))
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        // ½ ln(1 + e^{−2λ}) = ¼t²Δ + ½tβ₀: the positive root of a quadratic.
        let c = 0.5 * (-2.0 * lambda).exp().ln_1p();
        let (a, b) = (0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min);
        ((2.0 * c) / (b + (b * b + 4.0 * a * c).sqrt())).clamp(self.t_min, 1.0)
    }
}

/// A variance-exploding schedule (`α = 1`): geometric `σ(t) = σ_min (σ_max/σ_min)^t` on
/// `t ∈ [0, 1]` (Song et al.), or with [`edm`](VeSchedule::edm) the time *is* σ (Karras et al.):
/// `t ∈ [σ_min, σ_max]`. `σ∞ = ∞`, so velocity fit targets do not apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VeSchedule {
    sigma_min: f64,
    sigma_max: f64,
    edm: bool,
}

impl VeSchedule {
    /// Geometric σ between `sigma_min` and `sigma_max` over `t ∈ [0, 1]`.
    pub fn geometric(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        Self::check(sigma_min, sigma_max)?;
        Ok(Self {
            sigma_min,
            sigma_max,
            edm: false,
        })
    }

    /// The EDM parameterization: `t = σ ∈ [sigma_min, sigma_max]` (networks take σ as time).
    pub fn edm(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        Self::check(sigma_min, sigma_max)?;
        Ok(Self {
            sigma_min,
            sigma_max,
            edm: true,
        })
    }

    fn check(lo: f64, hi: f64) -> Result<()> {
        if !(lo > 0.0 && hi > lo && hi.is_finite()) {
            return Err(Error::InvalidSchedule {
                param: "sigma_min/sigma_max",
                value: format!("{lo}/{hi}"),
                reason: "needs 0 < sigma_min < sigma_max < inf",
            });
        }
        Ok(())
    }
}

impl Schedule for VeSchedule {
    fn sigma_inf(&self) -> f64 {
        f64::INFINITY
    }
    fn t_min(&self) -> f64 {
        if self.edm { self.sigma_min } else { 0.0 }
    }
    fn t_max(&self) -> f64 {
        if self.edm { self.sigma_max } else { 1.0 }
    }
    fn alpha(&self, _: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        if self.edm {
            t
        } else {
            self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
        }
    }
    fn lambda(&self, t: f64) -> f64 {
        -self.sigma(t).ln()
    }
    fn log_alpha(&self, _: f64) -> f64 {
        0.0
    }
    fn theta(&self, _: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        // g² = dσ²/dt.
        let s = self.sigma(t);
        if self.edm {
            2.0 * s
        } else {
            2.0 * s * s * (self.sigma_max / self.sigma_min).ln()
        }
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let s = (-lambda).exp();
        let t = if self.edm {
            s
        } else {
            (s / self.sigma_min).ln() / (self.sigma_max / self.sigma_min).ln()
        };
        t.clamp(self.t_min(), self.t_max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddpm_linear_matches_the_closed_form() {
        let s = VpSchedule::ddpm(
            Betas::Linear {
                start: 1e-4,
                end: 0.02,
            },
            1000,
        )
        .unwrap();
        let mut abar = 1.0;
        for i in 0..1000 {
            abar *= 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0);
            let t = i as f64;
            assert!((s.alpha(t) - abar.sqrt()).abs() < 1e-12 * abar.sqrt().max(1e-3));
            assert!((s.alpha(t).powi(2) + s.sigma(t).powi(2) - 1.0).abs() < 1e-13);
        }
        assert!(s.sigma(-1.0) <= 0.0, "σ(−1) = 0: the clean end");
        for i in 0..200 {
            let t = -0.5 + i as f64 * 4.99;
            assert!((s.t_of_lambda(s.lambda(t)) - t).abs() < 1e-7, "{t}");
        }
    }

    #[test]
    fn continuous_vp_and_ve_invert() {
        let vp = VpLinear::new(0.1, 20.0).unwrap();
        let ve = VeSchedule::geometric(0.01, 50.0).unwrap();
        let edm = VeSchedule::edm(0.002, 80.0).unwrap();
        assert!(VpLinear::new(0.1, 20.0).unwrap().with_t_min(0.0).is_err());
        for i in 1..100 {
            let u = i as f64 / 100.0;
            assert!((vp.t_of_lambda(vp.lambda(u)) - u).abs() < 1e-9);
            assert!((ve.t_of_lambda(ve.lambda(u)) - u).abs() < 1e-9);
            let t = 0.002 + u * 79.0;
            assert!((edm.t_of_lambda(edm.lambda(t)) - t).abs() < 1e-9 * t);
            // f and g² of the VP process: g² = β = 2θ.
            assert!((vp.diffusion_sq(u) - (0.1 + u * 19.9)).abs() < 1e-12);
        }
    }

    #[test]
    fn invalid_parameters() {
        assert!(VpSchedule::from_betas(&[0.5, 1.0]).is_err());
        assert!(VpSchedule::ddpm(Betas::Custom(vec![0.1; 3]), 4).is_err());
        assert!(VpLinear::new(0.0, 20.0).is_err());
        assert!(VeSchedule::geometric(1.0, 0.5).is_err());
    }
}
