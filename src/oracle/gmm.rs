//! Isotropic Gaussian-mixture data `x₀ ~ Σ w_k N(m_k, s_k² I)`.

use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{batch_split, check_finite, express};
use crate::error::{Error, ModelError, Result};
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::schedule::Schedule;
use crate::tensor::SamplerTensor;

/// Data law `Σ_k w_k N(m_k, s_k² I)` over the flattened event, with the exact posterior mean.
///
/// Given component `k`, `x_t ~ N(α m_k + (1 − α)μ, v_k I)` with `v_k = α² s_k² + σ²`, and
/// `E[x₀ | x_t, k] = m_k + (α s_k²/v_k)(x_t − α m_k − (1 − α)μ)`; the responsibilities are
/// the normalised `w_k N(x_t; …)`.
#[derive(Debug, Clone)]
pub struct GmmOracle {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
    schedule: Arc<dyn Schedule>,
    fit: FitTarget,
}

impl GmmOracle {
    /// `weights` (positive, normalised here), component `means` (each of the event size) and
    /// `stds` (≥ 0), evaluated with `schedule`.
    pub fn new(
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        stds: Vec<f64>,
        schedule: Arc<dyn Schedule>,
    ) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || stds.len() != k {
            return Err(Error::ShapeMismatch {
                what: "GMM oracle components (weights, means, stds)",
                expected: vec![k, k, k],
                found: vec![weights.len(), means.len(), stds.len()],
            });
        }
        let d = means[0].len();
        if d == 0 || means.iter().any(|m| m.len() != d) {
            return Err(Error::setting(
                "gmm_oracle.means",
                format!("{} components", k),
                "every component mean needs the same, non-zero length",
            ));
        }
        check_finite("gmm_oracle.weights", &weights)?;
        check_finite("gmm_oracle.stds", &stds)?;
        for m in &means {
            check_finite("gmm_oracle.means", m)?;
        }
        if weights.iter().any(|w| *w <= 0.0) || stds.iter().any(|s| *s < 0.0) {
            return Err(Error::setting(
                "gmm_oracle",
                "weights/stds",
                "weights must be > 0 and stds >= 0",
            ));
        }
        let total: f64 = weights.iter().sum();
        let weights = weights.iter().map(|w| w / total).collect();
        Ok(Self {
            weights,
            means,
            stds,
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

    /// Normalised mixture weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Component means.
    pub fn means(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// Component standard deviations.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// Mean of `x_t` given `μ` (one sample, event size).
    pub fn marginal_mean(&self, mu: &[f64], t: f64) -> Vec<f64> {
        let a = self.schedule.alpha(t);
        (0..mu.len())
            .map(|j| {
                let m: f64 = self
                    .weights
                    .iter()
                    .zip(&self.means)
                    .map(|(w, m)| w * m[j])
                    .sum();
                a * m + (1.0 - a) * mu[j]
            })
            .collect()
    }

    /// Covariance of `x_t` (row-major `d × d`; it does not depend on `μ`):
    /// `α²(Σ w_k (s_k² I + m_k m_kᵀ) − m̄ m̄ᵀ) + σ² I`.
    pub fn marginal_cov(&self, t: f64) -> Vec<f64> {
        let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
        let d = self.event_size();
        let mbar: Vec<f64> = (0..d)
            .map(|j| {
                self.weights
                    .iter()
                    .zip(&self.means)
                    .map(|(w, m)| w * m[j])
                    .sum()
            })
            .collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                let mut second: f64 = 0.0;
                for k in 0..self.weights.len() {
                    let diag = if i == j {
                        self.stds[k] * self.stds[k]
                    } else {
                        0.0
                    };
                    second += self.weights[k] * (diag + self.means[k][i] * self.means[k][j]);
                }
                cov[i * d + j] =
                    a * a * (second - mbar[i] * mbar[j]) + if i == j { s * s } else { 0.0 };
            }
        }
        cov
    }

    /// `n` samples of the data law, row-major `[n, event]`.
    pub fn sample_data<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        let d = self.event_size();
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let u: f64 = rand_distr::StandardUniform.sample(rng);
            let k = self.component_at(u);
            for j in 0..d {
                let z: f64 = StandardNormal.sample(rng);
                out.push(self.means[k][j] + self.stds[k] * z);
            }
        }
        out
    }

    /// Samples of the exact marginal `p_t(x | μ)`, one sample per event-sized row of `mu`.
    pub fn sample_marginal<R: Rng + ?Sized>(&self, mu: &[f64], t: f64, rng: &mut R) -> Vec<f64> {
        let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
        let x0 = self.sample_data(mu.len() / self.event_size(), rng);
        x0.iter()
            .zip(mu)
            .map(|(x, m)| {
                let z: f64 = StandardNormal.sample(rng);
                a * x + (1.0 - a) * m + s * z
            })
            .collect()
    }

    fn component_at(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (k, w) in self.weights.iter().enumerate() {
            acc += w;
            if u < acc {
                return k;
            }
        }
        self.weights.len() - 1
    }

    /// Event size.
    pub fn event_size(&self) -> usize {
        self.means[0].len()
    }

    /// `E[x₀ | x_t = x]` for one sample (`x`, `mu` of the event size), written into `out`.
    pub fn posterior_mean(&self, x: &[f64], mu: &[f64], t: f64, out: &mut [f64]) {
        self.posterior_mean_batch(x, mu, t, out);
    }

    /// `E[x₀ | x_t]` for a batch of samples (row-major `[n, event]` slices).
    pub fn posterior_mean_batch(&self, xs: &[f64], mus: &[f64], t: f64, out: &mut [f64]) {
        let a = self.schedule.alpha(t);
        let s = self.schedule.sigma(t);
        let d = self.event_size();
        let kk = self.weights.len();
        // Per-component constants: variance, log-normaliser, gain.
        let var: Vec<f64> = self.stds.iter().map(|sk| a * a * sk * sk + s * s).collect();
        let log_norm: Vec<f64> = (0..kk)
            .map(|k| {
                self.weights[k].ln() - 0.5 * d as f64 * (2.0 * std::f64::consts::PI * var[k]).ln()
            })
            .collect();
        let gain: Vec<f64> = (0..kk)
            .map(|k| a * self.stds[k] * self.stds[k] / var[k])
            .collect();
        let mut resp = vec![0.0; kk];
        for ((x, mu), o) in xs.chunks(d).zip(mus.chunks(d)).zip(out.chunks_mut(d)) {
            let mut top = f64::NEG_INFINITY;
            for k in 0..kk {
                let r2: f64 = x
                    .iter()
                    .zip(mu)
                    .zip(&self.means[k])
                    .map(|((xv, mv), mk)| {
                        let e = xv - a * mk - (1.0 - a) * mv;
                        e * e
                    })
                    .sum();
                resp[k] = log_norm[k] - 0.5 * r2 / var[k];
                top = top.max(resp[k]);
            }
            let mut norm = 0.0;
            for r in resp.iter_mut() {
                *r = (*r - top).exp();
                norm += *r;
            }
            o.iter_mut().for_each(|v| *v = 0.0);
            for k in 0..kk {
                let w = resp[k] / norm;
                for j in 0..d {
                    let mk = self.means[k][j];
                    o[j] += w * (mk + gain[k] * (x[j] - a * mk - (1.0 - a) * mu[j]));
                }
            }
        }
    }
}

impl<T: SamplerTensor> ScoreModel<T> for GmmOracle {
    fn fit_target(&self) -> FitTarget {
        self.fit
    }

    fn predict(&mut self, x: &T, mu: &T, t: f64) -> std::result::Result<T, ModelError> {
        let shape = crate::tensor::shape(x);
        let (b, d) = batch_split(&shape, self.event_size())?;
        let xs = x.to_host_f64()?;
        let ms = mu.to_host_f64()?;
        let mut out = vec![0.0; b * d];
        self.posterior_mean_batch(&xs, &ms, t, &mut out);
        if self.fit != FitTarget::Data {
            let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
            let si = self.schedule.sigma_inf();
            for ((o, x), m) in out.iter_mut().zip(&xs).zip(&ms) {
                *o = express(self.fit, *o, *x, *m, a, s, si);
            }
        }
        Ok(x.new_from_host(&shape, &out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::GaussianOracle;
    use crate::schedule::IrSdeSchedule;

    /// A one-component mixture is the isotropic Gaussian oracle.
    #[test]
    fn single_component_matches_gaussian() {
        let sch: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
        let g = GmmOracle::new(vec![2.0], vec![vec![0.2, 0.6]], vec![0.1], sch.clone()).unwrap();
        let o = GaussianOracle::new(vec![0.2, 0.6], vec![0.01, 0.01], sch).unwrap();
        let mut out = [0.0; 2];
        for t in [0.0, 13.5, 50.0, 100.0] {
            g.posterior_mean(&[0.4, 0.1], &[0.3, 0.3], t, &mut out);
            assert!((out[0] - o.posterior_mean_scalar(0, 0.4, 0.3, t)).abs() < 1e-14);
            assert!((out[1] - o.posterior_mean_scalar(1, 0.1, 0.3, t)).abs() < 1e-14);
        }
    }

    #[test]
    fn rejects_inconsistent_components() {
        let sch: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
        assert!(
            GmmOracle::new(vec![1.0, 1.0], vec![vec![0.0]], vec![0.1, 0.1], sch.clone()).is_err()
        );
        assert!(GmmOracle::new(vec![1.0], vec![vec![0.0]], vec![-0.1], sch.clone()).is_err());
        assert!(GmmOracle::new(vec![0.0], vec![vec![0.0]], vec![0.1], sch).is_err());
    }
}
