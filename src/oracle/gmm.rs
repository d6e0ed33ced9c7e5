//! Isotropic Gaussian-mixture data `x₀ ~ Σ w_k N(m_k, s_k² I)`.

use std::sync::Arc;

use super::{batch_split, check_finite};
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
        })
    }

    /// Event size.
    pub fn event_size(&self) -> usize {
        self.means[0].len()
    }

    /// `E[x₀ | x_t = x]` for one sample (`x`, `mu` of the event size), written into `out`.
    pub fn posterior_mean(&self, x: &[f64], mu: &[f64], t: f64, out: &mut [f64]) {
        let a = self.schedule.alpha(t);
        let s = self.schedule.sigma(t);
        let d = x.len() as f64;
        let logs: Vec<f64> = (0..self.weights.len())
            .map(|k| {
                let v = a * a * self.stds[k] * self.stds[k] + s * s;
                let r2: f64 = x
                    .iter()
                    .zip(mu)
                    .zip(&self.means[k])
                    .map(|((xv, mv), mk)| {
                        let e = xv - a * mk - (1.0 - a) * mv;
                        e * e
                    })
                    .sum();
                self.weights[k].ln()
                    - 0.5 * d * (2.0 * std::f64::consts::PI * v).ln()
                    - 0.5 * r2 / v
            })
            .collect();
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let resp: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
        let norm: f64 = resp.iter().sum();
        out.iter_mut().for_each(|o| *o = 0.0);
        for (k, r) in resp.iter().enumerate() {
            let w = r / norm;
            let v = a * a * self.stds[k] * self.stds[k] + s * s;
            let gain = a * self.stds[k] * self.stds[k] / v;
            for j in 0..x.len() {
                let mk = self.means[k][j];
                out[j] += w * (mk + gain * (x[j] - a * mk - (1.0 - a) * mu[j]));
            }
        }
    }
}

impl<T: SamplerTensor> ScoreModel<T> for GmmOracle {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Data
    }

    fn predict(&mut self, x: &T, mu: &T, t: f64) -> std::result::Result<T, ModelError> {
        let shape = x.shape();
        let (b, d) = batch_split(&shape, self.event_size())?;
        let xs = x.to_host_f64()?;
        let ms = mu.to_host_f64()?;
        let mut out = vec![0.0; b * d];
        for i in 0..b {
            let r = i * d..(i + 1) * d;
            self.posterior_mean(&xs[r.clone()], &ms[r.clone()], t, &mut out[r]);
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
