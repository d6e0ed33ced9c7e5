//! Gaussian data `x₀ ~ N(m, diag c)`.

use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{batch_split, check_finite, express};
use crate::error::{Error, ModelError, Result};
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::schedule::Schedule;
use crate::tensor::SamplerTensor;

/// Data law `N(m, diag c)` per sample, with the exact posterior mean as its prediction.
///
/// With `y = x − μ`: `x_t | x₀ ~ N(α x₀ + (1 − α)μ, σ²)`, so per coordinate
/// `E[x₀ | x_t] = m + α c ((x_t − μ) − α(m − μ)) / (α² c + σ²)`.
///
/// ```
/// use std::sync::Arc;
/// use mrsampler::oracle::GaussianOracle;
/// use mrsampler::schedule::IrSdeSchedule;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let o = GaussianOracle::new(vec![0.7], vec![0.01], Arc::new(IrSdeSchedule::da_clip()))?;
/// // Far from the data end the posterior mean is close to the prior mean m.
/// let x0 = o.posterior_mean_scalar(0, 0.5, 0.3, 100.0);
/// assert!((x0 - 0.7).abs() < 0.01);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GaussianOracle {
    m: Vec<f64>,
    c: Vec<f64>,
    schedule: Arc<dyn Schedule>,
    fit: FitTarget,
}

impl GaussianOracle {
    /// Mean `m` and variances `c` (same length, the event size, `c ≥ 0`), evaluated with
    /// `schedule`'s `α(t)`, `σ(t)`.
    pub fn new(m: Vec<f64>, c: Vec<f64>, schedule: Arc<dyn Schedule>) -> Result<Self> {
        if m.len() != c.len() || m.is_empty() {
            return Err(Error::ShapeMismatch {
                what: "Gaussian oracle variances",
                expected: vec![m.len()],
                found: vec![c.len()],
            });
        }
        check_finite("gaussian_oracle.m", &m)?;
        check_finite("gaussian_oracle.c", &c)?;
        if let Some(bad) = c.iter().find(|v| **v < 0.0) {
            return Err(Error::setting(
                "gaussian_oracle.c",
                bad,
                "variances must be >= 0",
            ));
        }
        Ok(Self {
            m,
            c,
            schedule,
            fit: FitTarget::Data,
        })
    }

    /// Makes the oracle output the exact noise, velocity or score instead of the data
    /// prediction (default [`FitTarget::Data`]).
    pub fn with_fit_target(mut self, fit: FitTarget) -> Self {
        self.fit = fit;
        self
    }

    /// Means `m`.
    pub fn mean(&self) -> &[f64] {
        &self.m
    }

    /// Variances `c`.
    pub fn variance(&self) -> &[f64] {
        &self.c
    }

    /// The schedule view the oracle evaluates `α`, `σ` with.
    pub fn schedule(&self) -> &Arc<dyn Schedule> {
        &self.schedule
    }

    /// `n` samples of the data law, row-major `[n, event]`.
    pub fn sample_data<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        let d = self.m.len();
        (0..n * d)
            .map(|j| {
                let z: f64 = StandardNormal.sample(rng);
                self.m[j % d] + self.c[j % d].sqrt() * z
            })
            .collect()
    }

    /// Samples of the exact marginal `p_t(x | μ)`, one per element of `mu` (row-major
    /// `[n, event]`).
    pub fn sample_marginal<R: Rng + ?Sized>(&self, mu: &[f64], t: f64, rng: &mut R) -> Vec<f64> {
        let d = self.m.len();
        mu.iter()
            .enumerate()
            .map(|(j, &mv)| {
                let (mean, var) = self.marginal(j % d, mv, t);
                let z: f64 = StandardNormal.sample(rng);
                mean + var.sqrt() * z
            })
            .collect()
    }

    /// Event size (elements per sample).
    pub fn event_size(&self) -> usize {
        self.m.len()
    }

    /// `E[x₀ | x_t = x]` for coordinate `i` of the event.
    pub fn posterior_mean_scalar(&self, i: usize, x: f64, mu: f64, t: f64) -> f64 {
        let a = self.schedule.alpha(t);
        let s = self.schedule.sigma(t);
        let (m, c) = (self.m[i], self.c[i]);
        m + a * c * ((x - mu) - a * (m - mu)) / (a * a * c + s * s)
    }

    /// Mean and variance of `x_t` for coordinate `i` given `μ`.
    pub fn marginal(&self, i: usize, mu: f64, t: f64) -> (f64, f64) {
        let a = self.schedule.alpha(t);
        let s = self.schedule.sigma(t);
        (a * self.m[i] + (1.0 - a) * mu, a * a * self.c[i] + s * s)
    }

    /// The exact probability-flow ODE map of coordinate `i` from time `t1` to `t0`: the
    /// affine map that keeps `(x − mean)/std` fixed.
    pub fn pf_ode_map(&self, i: usize, x: f64, mu: f64, t1: f64, t0: f64) -> f64 {
        let (m1, v1) = self.marginal(i, mu, t1);
        let (m0, v0) = self.marginal(i, mu, t0);
        m0 + (v0 / v1).sqrt() * (x - m1)
    }
}

impl<T: SamplerTensor> ScoreModel<T> for GaussianOracle {
    fn fit_target(&self) -> FitTarget {
        self.fit
    }

    fn predict(&mut self, x: &T, mu: &T, t: f64) -> std::result::Result<T, ModelError> {
        let shape = crate::tensor::shape(x);
        let (_, d) = batch_split(&shape, self.m.len())?;
        let xs = x.to_host_f64()?;
        let ms = mu.to_host_f64()?;
        let out: Vec<f64> = xs
            .iter()
            .zip(&ms)
            .enumerate()
            .map(|(j, (&xv, &mv))| {
                let x0 = self.posterior_mean_scalar(j % d, xv, mv, t);
                if self.fit == FitTarget::Data {
                    return x0;
                }
                let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
                express(self.fit, x0, xv, mv, a, s, self.schedule.sigma_inf())
            })
            .collect();
        Ok(x.new_from_host(&shape, &out)?)
    }
}
