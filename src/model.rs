//! The user's network: [`ScoreModel`], a closure adapter and an evaluation counter.

use crate::error::ModelError;
use crate::param::FitTarget;

/// A trained MR diffusion network.
///
/// It is called with the current state `x_t`, the mean `μ` (the degraded image) and the time
/// `t` in the schedule's own units: for an [`IrSdeSchedule`](crate::schedule::IrSdeSchedule)
/// that is the (possibly fractional) index, exactly what IR-SDE / DA-CLIP networks take. It
/// returns the quantity it was trained on, declared by [`fit_target`](Self::fit_target).
///
/// **Shapes.** `x` and `μ` have the same shape, batch axis first, e.g.
/// `(batch, channels, height, width)` for an image network, and the output has it too (the
/// samplers check that). A network that only takes one rank says so with
/// [`input_rank`](Self::input_rank), and the samplers then refuse a μ of another rank before
/// the first evaluation (a `(3, H, W)` image without its batch axis, say).
///
/// Extra conditioning (text or image embeddings) lives in the implementing type.
pub trait ScoreModel<T> {
    /// What the network predicts.
    fn fit_target(&self) -> FitTarget;

    /// One network evaluation.
    fn predict(&mut self, x: &T, mu: &T, t: f64) -> Result<T, ModelError>;

    /// One network evaluation with a time per sample: `t[i]` for sample `i` of the batch axis
    /// (`t.len()` is the batch size). This is what lets a server put the pending evaluations
    /// of runs at different steps into one call ([`Run`](crate::Run)'s step API). Networks
    /// whose time embedding is per sample override it; the default calls
    /// [`predict`](Self::predict) when every time is the same and refuses different times.
    fn predict_per_sample(&mut self, x: &T, mu: &T, t: &[f64]) -> Result<T, ModelError> {
        match t.split_first() {
            #[allow(clippy::float_cmp)] // the same time, not a near one
            Some((&first, rest)) if rest.iter().all(|&u| u == first) => self.predict(x, mu, first),
            Some(_) => Err(ModelError::msg(
                "this network takes one time per call: evaluate samples at different times in \
                 separate calls (or implement ScoreModel::predict_per_sample)",
            )),
            None => Err(ModelError::msg(
                "predict_per_sample needs one time per sample",
            )),
        }
    }

    /// The rank of the tensors the network takes, when it takes only one (4 for an image
    /// network). Default `None`: any rank.
    fn input_rank(&self) -> Option<usize> {
        None
    }
}

impl<T, M: ScoreModel<T> + ?Sized> ScoreModel<T> for &mut M {
    fn fit_target(&self) -> FitTarget {
        (**self).fit_target()
    }
    fn predict(&mut self, x: &T, mu: &T, t: f64) -> Result<T, ModelError> {
        (**self).predict(x, mu, t)
    }
    fn predict_per_sample(&mut self, x: &T, mu: &T, t: &[f64]) -> Result<T, ModelError> {
        (**self).predict_per_sample(x, mu, t)
    }
    fn input_rank(&self) -> Option<usize> {
        (**self).input_rank()
    }
}

/// Adapts a closure `FnMut(&T, &T, f64) -> Result<T, ModelError>` into a [`ScoreModel`].
///
/// ```
/// use mrsampler::{FitTarget, FnModel, ScoreModel};
/// use ndarray::ArrayD;
/// let mut m = FnModel::new(FitTarget::Noise, |x: &ArrayD<f32>, _mu: &ArrayD<f32>, _t: f64| {
///     Ok(x.mapv(|v| 0.1 * v))
/// });
/// let x = ArrayD::<f32>::ones(vec![1, 2]);
/// let eps = m.predict(&x, &x, 50.0).unwrap();
/// assert_eq!(eps[[0, 1]], 0.1);
/// assert_eq!(ScoreModel::<ArrayD<f32>>::fit_target(&m), FitTarget::Noise);
/// ```
pub struct FnModel<F> {
    fit: FitTarget,
    f: F,
}

impl<F> FnModel<F> {
    /// Wraps `f`, which predicts `fit`.
    pub fn new(fit: FitTarget, f: F) -> Self {
        Self { fit, f }
    }
}

impl<F> std::fmt::Debug for FnModel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnModel")
            .field("fit", &self.fit)
            .finish_non_exhaustive()
    }
}

impl<T, F> ScoreModel<T> for FnModel<F>
where
    F: FnMut(&T, &T, f64) -> Result<T, ModelError>,
{
    fn fit_target(&self) -> FitTarget {
        self.fit
    }
    fn predict(&mut self, x: &T, mu: &T, t: f64) -> Result<T, ModelError> {
        (self.f)(x, mu, t)
    }
}

/// Counts the evaluations of the model it wraps and records the times it was called at.
#[derive(Debug, Clone)]
pub struct CountingModel<M> {
    inner: M,
    times: Vec<f64>,
}

impl<M> CountingModel<M> {
    /// Wraps `inner` with a zero count.
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            times: Vec::new(),
        }
    }
    /// Number of evaluations so far.
    pub fn calls(&self) -> usize {
        self.times.len()
    }
    /// The times of all evaluations so far, in call order.
    pub fn times(&self) -> &[f64] {
        &self.times
    }
    /// The wrapped model.
    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<T, M: ScoreModel<T>> ScoreModel<T> for CountingModel<M> {
    fn fit_target(&self) -> FitTarget {
        self.inner.fit_target()
    }
    fn predict(&mut self, x: &T, mu: &T, t: f64) -> Result<T, ModelError> {
        self.times.push(t);
        self.inner.predict(x, mu, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn per_sample_times_default_to_one_call_or_refuse() {
        let mut m = FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, _: &ArrayD<f64>, t| {
            Ok(x.mapv(|v| v + t))
        });
        let x = ArrayD::<f64>::zeros(vec![2, 1]);
        let same = m.predict_per_sample(&x, &x, &[4.0, 4.0]).unwrap();
        assert_eq!(same, x.mapv(|_| 4.0));
        let err = m.predict_per_sample(&x, &x, &[4.0, 5.0]).unwrap_err();
        assert!(err.to_string().contains("one time per call"), "{err}");
        assert!(m.predict_per_sample(&x, &x, &[]).is_err());
    }
}
