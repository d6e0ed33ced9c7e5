//! [`AdaptiveSampler`]: the MR probability-flow ODE with step-size control.
//!
//! Instead of a step count the user gives a tolerance. Each step from `s` to `t` computes two
//! singlestep solutions of neighbouring orders that share their network evaluations (an
//! embedded pair), takes their difference as the local error estimate, and accepts the
//! higher-order one when the scaled error norm is at most 1. The controller that decides
//! (`plan::adaptive`) appends each next attempt to the plan the [`Run`](super::Run) applies.

use std::sync::Arc;

use super::Sampler;
use crate::config::check_data_range;
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::plan::controller::Settings;
use crate::plan::{Plan, check_fit};
use crate::schedule::Schedule;
use crate::tensor::Parallelism;

pub use crate::plan::controller::EmbeddedPair;

/// The MR probability-flow ODE solved to a tolerance: exponential-integrator singlestep pairs
/// (DPM-Solver-12 / -23 style, Lu et al. 2022) with error control, in the μ-shifted frame.
///
/// The error of a step is the root mean square over each sample of
/// `(x_high − x_low) / max(atol, rtol · max(|x_high|, |x_s|))`, maximised over the batch (the
/// step size is shared by the batch). Integration runs in `λ` from the schedule's end `t_max`
/// to the largest finite `λ`; where `σ(t_min) = 0` a last evaluation then returns the data
/// prediction there (the limit step of the fixed grids). [`Stats`](super::Stats) reports the evaluations,
/// the accepted steps (with their times in `timesteps` and orders in `orders`) and the
/// rejected ones.
///
/// The norm is computed on the host (the three tensors are copied there once per attempt),
/// which is small next to a network evaluation on any backend.
///
/// It is a [`Sampler`] like the others: its [`Plan`] holds the first attempt and a controller
/// that appends the next ones as the [`Run`](super::Run) reports each error norm, so the step
/// API, observers, conversions and checks are shared. [`Plan::num_evaluations`] counts only
/// the evaluations planned so far.
///
/// ```
/// use mrsampler::prelude::*;
/// use ndarray::ArrayD;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let sampler = AdaptiveSampler::new(IrSdeSchedule::da_clip())?.with_tolerance(0.05, 0.01)?;
/// let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f32>, mu: &ArrayD<f32>, _t: f64| {
///     Ok((x - mu) * 0.02)
/// });
/// let mu = ArrayD::<f32>::from_elem(vec![1, 3, 8, 8], 0.5);
/// let out = sampler.sample(&mut net, &mu, None, &mut SeededNoise::new(1))?;
/// assert!(out.stats.nfe >= 3);
/// assert_eq!(out.stats.timesteps.len(), out.stats.steps + 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveSampler {
    schedule: Arc<dyn Schedule>,
    pair: EmbeddedPair,
    parameterization: Parameterization,
    rtol: f64,
    atol: f64,
    h_init: f64,
    safety: f64,
    max_nfe: usize,
    prior_correction: bool,
    data_range: Option<(f64, f64)>,
    parallelism: Parallelism,
}

impl AdaptiveSampler {
    /// An adaptive sampler over `schedule` with the defaults: [`EmbeddedPair::Orders23`],
    /// data form, `rtol = 0.05`, `atol = 0.0078` (2/255 of an image in `[0, 1]`), first λ-step
    /// 0.5, safety factor 0.9, at most 1000 evaluations, no data range.
    pub fn new(schedule: impl Schedule + 'static) -> Result<Self> {
        Self::from_arc(Arc::new(schedule))
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn from_arc(schedule: Arc<dyn Schedule>) -> Result<Self> {
        crate::schedule::validate(&*schedule)?;
        Ok(Self {
            schedule,
            pair: EmbeddedPair::default(),
            parameterization: Parameterization::Data,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.5,
            safety: 0.9,
            max_nfe: 1000,
            prior_correction: false,
            data_range: None,
            parallelism: Parallelism::default(),
        })
    }

    /// Relative and absolute tolerance of the scaled error norm (both finite, `rtol ≥ 0`,
    /// `atol > 0`).
    pub fn with_tolerance(mut self, rtol: f64, atol: f64) -> Result<Self> {
        if !(rtol >= 0.0 && rtol.is_finite()) {
            return Err(Error::setting("rtol", rtol, "must be finite and >= 0"));
        }
        if !(atol > 0.0 && atol.is_finite()) {
            return Err(Error::setting(
                "atol",
                atol,
                "must be finite and > 0 (it bounds the error scale away from zero)",
            ));
        }
        self.rtol = rtol;
        self.atol = atol;
        self.validate()
    }

    /// The embedded pair (default [`EmbeddedPair::Orders23`]).
    pub fn with_pair(self, pair: EmbeddedPair) -> Result<Self> {
        Self { pair, ..self }.validate()
    }

    /// Solver parameterization (default [`Parameterization::Data`]).
    pub fn with_parameterization(self, parameterization: Parameterization) -> Result<Self> {
        Self {
            parameterization,
            ..self
        }
        .validate()
    }

    /// The first attempted λ-step (default 0.5; finite and > 0). Near the prior the data
    /// prediction changes slowly, so a large first step is usually accepted; `docs/benchmarks.md`
    /// measures 0.05 to 1.
    pub fn with_initial_step(mut self, h: f64) -> Result<Self> {
        if !(h > 0.0 && h.is_finite()) {
            return Err(Error::setting("h_init", h, "must be finite and > 0"));
        }
        self.h_init = h;
        self.validate()
    }

    /// The safety factor of the step-size update (default 0.9; in `(0, 1]`).
    pub fn with_safety(mut self, safety: f64) -> Result<Self> {
        if !(safety > 0.0 && safety <= 1.0) {
            return Err(Error::setting("safety", safety, "must lie in (0, 1]"));
        }
        self.safety = safety;
        self.validate()
    }

    /// The most network evaluations a pass may use (default 1000; ≥ 2). A pass that needs more
    /// fails with [`Error::BudgetExceeded`].
    pub fn with_max_nfe(mut self, max_nfe: usize) -> Result<Self> {
        if max_nfe < 2 {
            return Err(Error::setting(
                "max_nfe",
                max_nfe,
                "at least 2 evaluations are needed",
            ));
        }
        self.max_nfe = max_nfe;
        self.validate()
    }

    /// The prior-mean correction of
    /// [`MrSampler::with_prior_correction`](super::MrSampler::with_prior_correction) (default
    /// off; data form only): the start state gains `α(t_max)(x̂₀ − μ)` from the first
    /// evaluation.
    pub fn with_prior_correction(self, prior_correction: bool) -> Result<Self> {
        Self {
            prior_correction,
            ..self
        }
        .validate()
    }

    /// The range `(lo, hi)` of the data the network was trained on: the returned sample is
    /// clamped to it (default `None`: no clamp).
    pub fn with_data_range(self, range: Option<(f64, f64)>) -> Result<Self> {
        let data_range = check_data_range(range)?;
        Self { data_range, ..self }.validate()
    }

    /// How the tensor kernels may split work across threads (default
    /// [`Parallelism::Rayon(0)`](Parallelism::Rayon)).
    pub fn with_parallelism(self, parallelism: Parallelism) -> Result<Self> {
        Self {
            parallelism,
            ..self
        }
        .validate()
    }

    /// Every rule between settings, run by every constructor and setter.
    fn validate(self) -> Result<Self> {
        if self.prior_correction && self.parameterization != Parameterization::Data {
            return Err(Error::conflict(
                "prior_correction",
                "parameterization = Noise",
                "the correction uses the first output as a data prediction; use the data \
                 parameterization",
            ));
        }
        Ok(self)
    }
}

impl Sampler for AdaptiveSampler {
    fn plan(&self, fit: FitTarget) -> Result<Plan> {
        check_fit(fit, &*self.schedule)?;
        crate::plan::controller::plan(
            Settings {
                schedule: self.schedule.clone(),
                fit,
                param: self.parameterization,
                pair: self.pair,
                rtol: self.rtol,
                atol: self.atol,
                h_init: self.h_init,
                safety: self.safety,
                max_nfe: self.max_nfe,
                prior_correction: self.prior_correction,
            },
            self.data_range,
            self.parallelism,
        )
    }
}
