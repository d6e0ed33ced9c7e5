//! Samplers: their configurations ([`MrSampler`], [`BaselineSampler`], [`AdaptiveSampler`]
//! and their vocabulary, exported from the crate root: [`Mode`](crate::Mode), [`Solver`](crate::Solver),
//! [`OrderRule`](crate::OrderRule), [`Thresholding`](crate::Thresholding)), the
//! [`Sampler`] trait, and the step-level [`Run`] that applies every sampler's [`Plan`].
//!
//! A sampler's [`plan`](Sampler::plan) is pure `f64` (made in the private `plan` module); [`Run`] is the
//! only code that touches tensors.

mod adaptive;
mod baseline;
mod coupled;
mod mrs;
mod run;

pub use adaptive::{AdaptiveSampler, EmbeddedPair};
pub use baseline::{Baseline, BaselineSampler};
pub use coupled::CoupledNoise;
pub use mrs::MrSampler;
pub use run::{Pending, Run, Sample, Stats};

pub use crate::plan::Plan;
pub use crate::solver::{SecondOrder, ThirdOrder};

use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::tensor::{NoiseSource, SamplerTensor};

/// Validates a step count.
pub(crate) fn check_steps(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::setting(
            "num_steps",
            0,
            "at least one step (network evaluation) is needed",
        ));
    }
    if n > crate::schedule::MAX_STEPS {
        return Err(Error::setting(
            "num_steps",
            n,
            format!("at most {} steps are supported", crate::schedule::MAX_STEPS),
        ));
    }
    Ok(())
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

/// A closure as an [`Observer`], with its argument's type inferred: `observe(|step| …)` needs
/// no `&StepView<'_, T>` annotation (a bare closure passed where `impl Observer<T>` is
/// expected does, because Rust infers a closure's signature only from an `Fn*` bound).
///
/// ```
/// use mrsampler::prelude::*;
///
/// let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 5)?;
/// let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, mu: &ArrayD<f64>, _t: f64| {
///     Ok(x - mu)
/// });
/// let mu = ArrayD::<f64>::zeros(IxDyn(&[1, 4]));
/// let mut times = Vec::new();
/// sampler.sample_observed(
///     &mut net,
///     &mu,
///     None,
///     &mut SeededNoise::new(0),
///     &mut observe(|step| times.push(step.t)),
/// )?;
/// assert_eq!(times.len(), 5);
/// # Ok::<(), mrsampler::Error>(())
/// ```
pub fn observe<T, F: FnMut(&StepView<'_, T>)>(f: F) -> F {
    f
}

/// A complete sampling method: a configuration that compiles into a [`Plan`].
///
/// One method is required, [`plan`](Self::plan); the others are provided. The trait is
/// object-safe: `Box<dyn Sampler>` and `&dyn Sampler` are samplers themselves, so a sampler
/// chosen at run time needs no enum over the kinds:
///
/// ```
/// use mrsampler::schedule::IrSdeSchedule;
/// use mrsampler::{Baseline, BaselineSampler, MrSampler, NoNoise, Sampler};
/// use mrsampler::oracle::GaussianOracle;
///
/// let pick = |name: &str| -> Result<Box<dyn Sampler>, mrsampler::Error> {
///     Ok(match name {
///         "mrs" => Box::new(MrSampler::new(IrSdeSchedule::da_clip(), 10)?),
///         _ => Box::new(BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::Posterior, 100)?),
///     })
/// };
/// let sampler = pick("mrs")?;
/// let schedule = std::sync::Arc::new(IrSdeSchedule::da_clip());
/// let mut oracle = GaussianOracle::new(vec![0.5], vec![0.01], schedule)?;
/// let mu = ndarray::ArrayD::<f64>::from_elem(vec![2, 1], 0.4);
/// let out = sampler.sample(&mut oracle, &mu, Some(mu.clone()), &mut NoNoise)?;
/// assert_eq!(out.stats.nfe, 10);
/// # Ok::<(), mrsampler::Error>(())
/// ```
///
/// [`start`](Self::start) begins a step-level [`Run`] from the plan; [`sample`](Self::sample)
/// is a thin loop over it.
///
/// **Shapes.** `μ` (and the start state, the noise and every network output) has the batch
/// axis first: `(batch, …)`, rank ≥ 1; [`ScoreModel::predict`] is called with tensors of that
/// shape. **Noise.** A pass draws from the noise source once for the prior when no start
/// state is given (a supplied start state consumes no draw), then once per stochastic step;
/// ODE samplers with a start state draw nothing, so [`NoNoise`](crate::tensor::NoNoise) will
/// do.
pub trait Sampler: std::fmt::Debug {
    /// Compiles the configuration for a network trained on `fit` (pure `f64`; no tensor is
    /// touched).
    fn plan(&self, fit: FitTarget) -> Result<Plan>;

    /// Starts a pass for a network trained on `fit`, from `x_start` or from the prior drawn
    /// from `noise`.
    fn start<T: SamplerTensor, N: NoiseSource<T>>(
        &self,
        fit: FitTarget,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Run<T>>
    where
        Self: Sized,
    {
        Run::new(self.plan(fit)?, mu, x_start, noise)
    }

    /// The start state `x_T = μ + σ_prior·z` this sampler draws from a standard-normal `z`:
    /// `σ_prior = σ(τ₀)` in exact mode, `σ∞` in reference mode. Passing it as `x_start` gives
    /// the same pass as letting the sampler draw `z`.
    fn prior_state<T: SamplerTensor>(&self, mu: &T, z: &T) -> Result<T>
    where
        Self: Sized,
    {
        let plan = self.plan(FitTarget::Data)?;
        crate::sampler::run::check_input("noise", mu, z)?;
        crate::tensor::lincomb(&[(1.0, mu), (plan.prior_std, z)], plan.parallelism)
    }

    /// Runs a whole pass with `model`.
    fn sample<T: SamplerTensor, M: ScoreModel<T>, N: NoiseSource<T>>(
        &self,
        model: &mut M,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Sample<T>>
    where
        Self: Sized,
    {
        self.sample_observed(model, mu, x_start, noise, &mut ())
    }

    /// Standard (non-mean-reverting) diffusion: runs a whole pass with `μ = 0` from the start
    /// state `x_start` (e.g. `σ(T)·z` for a VP or VE schedule). The model is still called with
    /// a `μ` argument, a zero tensor, which it may ignore.
    fn sample_standard<T: SamplerTensor, M: ScoreModel<T>, N: NoiseSource<T>>(
        &self,
        model: &mut M,
        x_start: T,
        noise: &mut N,
    ) -> Result<Sample<T>>
    where
        Self: Sized,
    {
        let mu =
            crate::tensor::lincomb(&[(0.0, &x_start)], crate::tensor::Parallelism::Sequential)?;
        self.sample(model, &mu, Some(x_start), noise)
    }

    /// Runs a whole pass, calling `observer` after each evaluation.
    fn sample_observed<T: SamplerTensor, M: ScoreModel<T>, N: NoiseSource<T>, O: Observer<T>>(
        &self,
        model: &mut M,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
        observer: &mut O,
    ) -> Result<Sample<T>>
    where
        Self: Sized,
    {
        if let Some(rank) = model.input_rank() {
            let found = crate::tensor::shape(mu);
            if found.len() != rank {
                return Err(Error::RankMismatch {
                    expected: rank,
                    found,
                });
            }
        }
        let mut run = self.start(model.fit_target(), mu, x_start, noise)?;
        while let Some(p) = run.pending() {
            let net = model
                .predict(run.eval_state(), run.mu(), p.t)
                .map_err(|source| Error::Model {
                    step: p.step,
                    time: p.t,
                    source: source.into_inner(),
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

/// A boxed sampler (e.g. `Box<dyn Sampler>`, chosen at run time) is a sampler.
impl<S: Sampler + ?Sized> Sampler for Box<S> {
    fn plan(&self, fit: FitTarget) -> Result<Plan> {
        (**self).plan(fit)
    }
}

/// A shared sampler (e.g. `Arc<dyn Sampler>`) is a sampler.
impl<S: Sampler + ?Sized> Sampler for std::sync::Arc<S> {
    fn plan(&self, fit: FitTarget) -> Result<Plan> {
        (**self).plan(fit)
    }
}

/// A borrowed sampler (e.g. `&dyn Sampler`) is a sampler.
impl<S: Sampler + ?Sized> Sampler for &S {
    fn plan(&self, fit: FitTarget) -> Result<Plan> {
        (**self).plan(fit)
    }
}
