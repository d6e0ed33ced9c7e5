//! Samplers: the [`Sampler`] trait, the [`MrSampler`], the baselines, and the step-level
//! [`Run`] they all compile to; the [`AdaptiveSampler`], which chooses its steps while it runs.

mod adaptive;
mod baseline;
mod mrs;
mod run;

pub use adaptive::{AdaptiveSampler, EmbeddedPair};
pub use baseline::{Baseline, BaselineSampler};
pub use mrs::{MrSampler, OrderRule, Stepping, Thresholding};
pub use run::{Pending, Run, Sample, Stats};

use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::tensor::{NoiseSource, SamplerTensor};

/// Validates an output clamp `(lo, hi)`.
pub(crate) fn check_clip(clip: Option<(f64, f64)>) -> Result<Option<(f64, f64)>> {
    if let Some((lo, hi)) = clip {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::setting(
                "output_clip",
                format!("({lo}, {hi})"),
                "needs lo <= hi",
            ));
        }
    }
    Ok(clip)
}

/// What an [`Observer`] sees after each evaluation.
#[derive(Debug)]
pub struct StepView<'a, T> {
    /// 1-based evaluation index.
    pub step: usize,
    /// Time the network was evaluated at.
    pub t: f64,
    /// Time of the state after the update.
    pub t_next: f64,
    /// Order of the update (0: `denoise_last` evaluation).
    pub order: usize,
    /// State after the update (Heun's predictor stage for a predictor evaluation).
    pub x: &'a T,
    /// The converted model output (solver parameterization, after any thresholding).
    pub model_output: &'a T,
    /// The network's data prediction `x̂₀` at this evaluation (before thresholding). Only
    /// computed when [`Observer::wants_x0_hat`] is true; otherwise this is `model_output`.
    pub x0_hat: &'a T,
}

/// A hook called after every evaluation of a sampling pass (progress bars, trajectory
/// recording, early diagnostics).
pub trait Observer<T> {
    /// Called once per evaluation, in order.
    fn on_step(&mut self, view: &StepView<'_, T>);

    /// Whether this observer reads [`StepView::x0_hat`]; when `false` the sampler skips
    /// computing it. Default `true`.
    fn wants_x0_hat(&self) -> bool {
        true
    }
}

/// The do-nothing observer.
impl<T> Observer<T> for () {
    fn on_step(&mut self, _: &StepView<'_, T>) {}
    fn wants_x0_hat(&self) -> bool {
        false
    }
}

impl<T, F: FnMut(&StepView<'_, T>)> Observer<T> for F {
    fn on_step(&mut self, view: &StepView<'_, T>) {
        self(view)
    }
}

/// A complete sampling method over tensors `T`.
///
/// [`start`](Self::start) compiles the configuration into a step-level [`Run`];
/// [`sample`](Self::sample) is a thin loop over it.
pub trait Sampler<T: SamplerTensor> {
    /// Starts a pass for a network trained on `fit`, from `x_start` or from the prior drawn
    /// from `noise`.
    fn start<N: NoiseSource<T>>(
        &self,
        fit: FitTarget,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Run<T>>;

    /// Runs a whole pass with `model`.
    fn sample<M: ScoreModel<T>, N: NoiseSource<T>>(
        &self,
        model: &mut M,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Sample<T>> {
        self.sample_observed(model, mu, x_start, noise, &mut ())
    }

    /// Standard (non-mean-reverting) diffusion: runs a whole pass with `μ = 0` from the start
    /// state `x_start` (e.g. `σ(T)·z` for a VP or VE schedule). The model is still called with
    /// a `μ` argument, a zero tensor, which it may ignore.
    fn sample_standard<M: ScoreModel<T>, N: NoiseSource<T>>(
        &self,
        model: &mut M,
        x_start: T,
        noise: &mut N,
    ) -> Result<Sample<T>> {
        let mu = T::lincomb(&[(0.0, &x_start)], crate::tensor::Parallelism::Sequential)?;
        self.sample(model, &mu, Some(x_start), noise)
    }

    /// Runs a whole pass, calling `observer` after each evaluation.
    fn sample_observed<M: ScoreModel<T>, N: NoiseSource<T>, O: Observer<T>>(
        &self,
        model: &mut M,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
        observer: &mut O,
    ) -> Result<Sample<T>> {
        let mut run = self.start(model.fit_target(), mu, x_start, noise)?;
        while let Some(p) = run.pending() {
            let net = model
                .predict(run.eval_state(), run.mu(), p.t)
                .map_err(|source| Error::Model {
                    step: p.step,
                    time: p.t,
                    source,
                })?;
            let x0 = if observer.wants_x0_hat() {
                Some(run.data_prediction(&net)?)
            } else {
                None
            };
            run.advance(&net, noise)?;
            let stats = run.stats();
            let view = StepView {
                step: p.step,
                t: p.t,
                t_next: run.current_time(),
                order: stats.orders.last().copied().unwrap_or(0),
                x: run.eval_state(),
                model_output: run.last_model_output().expect("an output was just pushed"),
                x0_hat: x0
                    .as_ref()
                    .unwrap_or_else(|| run.last_model_output().expect("pushed")),
            };
            observer.on_step(&view);
        }
        run.finish()
    }
}
