//! The format's toy network.

use crate::ModelError;
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::tensor::SamplerTensor;

/// The conformance toy network: raw output `0.9·tanh(0.7·x) + 0.05·t/T + 0.1·μ` elementwise,
/// read as whatever `fit` says. Not a consistent denoiser: it exists to exercise every code
/// path with non-trivial numbers.
#[derive(Debug, Clone, Copy)]
pub struct ToyModel {
    fit: FitTarget,
    t_max: f64,
}

impl ToyModel {
    /// A toy network declared as `fit`, for a schedule ending at `t_max` (`T`).
    pub fn new(fit: FitTarget, t_max: f64) -> Self {
        Self { fit, t_max }
    }
}

impl<T: SamplerTensor> ScoreModel<T> for ToyModel {
    fn fit_target(&self) -> FitTarget {
        self.fit
    }

    fn predict(&mut self, x: &T, mu: &T, t: f64) -> Result<T, ModelError> {
        let xs = x.to_host_f64()?;
        let ms = mu.to_host_f64()?;
        let shift = 0.05 * t / self.t_max;
        let out: Vec<f64> = xs
            .iter()
            .zip(&ms)
            .map(|(&xv, &mv)| 0.9 * (0.7 * xv).tanh() + shift + 0.1 * mv)
            .collect();
        Ok(x.new_from_host(&crate::tensor::shape(x), &out)?)
    }
}
