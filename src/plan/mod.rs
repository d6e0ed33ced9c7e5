//! Planning: every sampler's configuration compiled, in pure `f64`, into a [`Plan`] — the
//! grid and, per network evaluation, the weights of the output conversion and of the update.
//! The tensor side ([`Run`](crate::Run)) applies plans and nothing else.
//!
//! * [`multistep`]: the MR Sampler's multistep ODE/SDE (order rules, the UniC corrector).
//! * [`singlestep`]: the MR Sampler's singlestep ODE.
//! * [`baseline`]: Euler–Maruyama, Euler-ODE, posterior sampling and Heun.
//! * [`coupling`]: the weights that put a coarse stochastic pass on a fine pass's Brownian path
//!   (also the calibration search's, whose student steps [`multistep::Stepper`] builds).
//! * [`controller`]: the controller of the adaptive sampler, whose plan grows as steps are
//!   accepted.
//! * [`settings`]: the samplers' settings as the planners read them.
//!
//! The planners build their steps with one [`Frame`], which owns the node, converter,
//! thresholding and limit-step logic.

pub(crate) mod baseline;
pub(crate) mod controller;
pub(crate) mod coupling;
pub(crate) mod multistep;
pub(crate) mod settings;
pub(crate) mod singlestep;

use crate::error::{Error, Result};
use crate::param::{Affine, FitTarget, Parameterization, convert_coefficients};
use crate::schedule::Schedule;
use crate::solver::{Node, StepCoeffs};
use crate::tensor::Parallelism;

/// Where an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The state `x` (the step is complete).
    State,
    /// The intermediate stage (Heun's predictor, a singlestep stage); the next evaluation is
    /// at the stage.
    Stage,
}

/// How a planned step turns the converted output into the next state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Update {
    /// A fused linear combination (see [`StepCoeffs`]). With `reuse_noise` the noise term
    /// reads the previous step's draw instead of a fresh one (stochastic Heun's corrector
    /// shares its predictor's Brownian increment).
    Linear {
        coeffs: StepCoeffs,
        target: Target,
        reuse_noise: bool,
    },
    /// The state becomes a conversion of the network output (`denoise_last`, the limit step
    /// into `σ = 0`), optionally thresholded.
    Replace { convert: Affine, threshold: bool },
    /// The adaptive sampler's embedded pair: the higher- and lower-order solutions from the
    /// state (and, when given, the corrected start state the error is scaled by); the plan's
    /// controller accepts or rejects.
    Embedded {
        high: StepCoeffs,
        low: StepCoeffs,
        prev: Option<StepCoeffs>,
    },
}

impl Update {
    /// A linear update of the state that draws fresh noise if it has a noise term.
    pub(crate) fn state(coeffs: StepCoeffs) -> Self {
        Update::Linear {
            coeffs,
            target: Target::State,
            reuse_noise: false,
        }
    }
}

/// One network evaluation and the update that follows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PlannedStep {
    /// Time at which the network is evaluated.
    pub t_eval: f64,
    /// Time the state has after the update.
    pub t_next: f64,
    /// Network output → the quantity the solver stores (`q`).
    pub convert: Affine,
    /// Network output → data prediction `x̂₀` (for observers).
    pub to_data: Affine,
    /// Whether `q` is dynamically thresholded.
    pub threshold: bool,
    /// The update.
    pub update: Update,
    /// The order recorded in the statistics (0: denoise_last evaluation).
    pub order: usize,
}

/// A compiled sampling pass: the grid, and per network evaluation the `f64` weights of the
/// output conversion and of the update. Made by [`Sampler::plan`](crate::Sampler::plan),
/// applied by a [`Run`](crate::Run). An adaptive plan grows while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub(crate) timesteps: Vec<f64>,
    pub(crate) steps: Vec<PlannedStep>,
    /// Std of the prior `x = μ + prior_std·z` when no start state is given.
    pub(crate) prior_std: f64,
    /// Clamp applied to the returned sample.
    pub(crate) data_range: Option<(f64, f64)>,
    /// Dynamic thresholding of the steps marked for it.
    pub(crate) thresholding: Option<crate::config::Thresholding>,
    /// How many past converted outputs a step reads (the largest order; 2 for Heun).
    pub(crate) history: usize,
    /// Thread split of the tensor kernels.
    pub(crate) parallelism: Parallelism,
    /// The adaptive sampler's controller, which appends steps as it decides.
    pub(crate) controller: Option<Box<controller::Controller>>,
}

impl Plan {
    /// The grid `τ_0 > … > τ_M` of a fixed plan; `None` for an adaptive plan, whose times are
    /// decided while it runs (its [`Run`](crate::Run) reports them).
    pub fn timesteps(&self) -> Option<&[f64]> {
        self.fixed().map(|_| self.timesteps.as_slice())
    }

    /// The network evaluations of a fixed plan; `None` for an adaptive plan (its
    /// [`Run`](crate::Run) counts them).
    pub fn num_evaluations(&self) -> Option<usize> {
        self.fixed().map(|_| self.steps.len())
    }

    /// The times a fixed plan evaluates the network at, in order; `None` for an adaptive plan.
    pub fn evaluation_times(&self) -> Option<impl Iterator<Item = f64> + '_> {
        self.fixed().map(|_| self.steps.iter().map(|s| s.t_eval))
    }

    /// The order of each of a fixed plan's updates (0: a `denoise_last` evaluation); `None` for
    /// an adaptive plan.
    pub fn orders(&self) -> Option<impl Iterator<Item = usize> + '_> {
        self.fixed().map(|_| self.steps.iter().map(|s| s.order))
    }

    /// The time the pass starts from, `τ_0` (fixed and adaptive plans).
    pub fn start_time(&self) -> f64 {
        self.timesteps[0]
    }

    /// The std `σ_prior` of the prior draw `μ + σ_prior·z`.
    pub fn prior_std(&self) -> f64 {
        self.prior_std
    }

    /// Whether the plan grows while it runs (the adaptive sampler).
    pub fn is_adaptive(&self) -> bool {
        self.controller.is_some()
    }

    /// `Some(())` for a fixed plan.
    fn fixed(&self) -> Option<()> {
        (!self.is_adaptive()).then_some(())
    }
}

/// What every planned step needs: the schedule as the solver sees it, the network's fit
/// target, the solver's parameterization and which outputs are thresholded.
pub(crate) struct Frame<'a> {
    pub view: &'a dyn Schedule,
    pub fit: FitTarget,
    pub param: Parameterization,
    /// Whether the stored output `q` is thresholded.
    pub threshold_q: bool,
    /// Whether a data prediction that replaces the state is thresholded.
    pub threshold_x0: bool,
}

/// The schedule `view` at `t`, as the solvers read it.
pub(crate) fn node(view: &dyn Schedule, t: f64) -> Node {
    Node {
        alpha: view.alpha(t),
        sigma: view.sigma(t),
        lambda: view.lambda(t),
    }
}

impl Frame<'_> {
    /// The schedule at `t`.
    pub(crate) fn node(&self, t: f64) -> Node {
        node(self.view, t)
    }

    /// An evaluation at `t_eval` (where the schedule is `at`) followed by `update`.
    pub(crate) fn step_at(
        &self,
        at: Node,
        (t_eval, t_next): (f64, f64),
        update: Update,
        order: usize,
    ) -> PlannedStep {
        let si = self.view.sigma_inf();
        PlannedStep {
            t_eval,
            t_next,
            convert: convert_coefficients(self.fit, self.param, at.alpha, at.sigma, si),
            to_data: convert_coefficients(self.fit, Parameterization::Data, at.alpha, at.sigma, si),
            threshold: self.threshold_q,
            update,
            order,
        }
    }

    /// An evaluation at `t_eval` followed by `update`.
    pub(crate) fn step(&self, times: (f64, f64), update: Update, order: usize) -> PlannedStep {
        self.step_at(self.node(times.0), times, update, order)
    }

    /// An evaluation at `t_eval` whose data prediction becomes the state: the limit step into
    /// `σ = 0` (order 1) and exact mode's `denoise_last` (order 0).
    pub(crate) fn to_data(&self, times: (f64, f64), order: usize) -> PlannedStep {
        self.replacing(times, order, true)
    }

    /// An evaluation at `t_eval` whose converted output, in the solver's parameterization,
    /// becomes the state: reference mode's `denoise_last`.
    pub(crate) fn to_solver_output(&self, times: (f64, f64), order: usize) -> PlannedStep {
        self.replacing(times, order, false)
    }

    fn replacing(&self, times: (f64, f64), order: usize, data: bool) -> PlannedStep {
        let mut step = self.step(times, Update::state(StepCoeffs::ZERO), order);
        step.update = if data {
            Update::Replace {
                convert: step.to_data,
                threshold: self.threshold_x0,
            }
        } else {
            Update::Replace {
                convert: step.convert,
                threshold: self.threshold_q,
            }
        };
        step
    }
}

/// The prior-mean correction (`docs/math.md` §5.5): substitutes the corrected start state
/// `x + α₀(q₀ − μ)` (with `q₀ = x̂₀`, the first converted output) into the weights of the
/// updates that read the start state: `updates[j]` follows the `j + 1`-th evaluation, so the
/// first output sits in its history slot `j`.
pub(crate) fn correct_prior(updates: &mut [PlannedStep], alpha0: f64) {
    for (j, u) in updates.iter_mut().enumerate() {
        // A first step straight to the data prediction does not read the state.
        if let Update::Linear { coeffs, .. } = &mut u.update {
            coeffs.q[j] += coeffs.x * alpha0;
            coeffs.mu -= coeffs.x * alpha0;
        }
    }
}

/// Velocity targets need a finite `σ∞` (variance-exploding schedules have none).
pub(crate) fn check_fit(fit: FitTarget, schedule: &dyn Schedule) -> Result<()> {
    if fit == FitTarget::Velocity && !schedule.sigma_inf().is_finite() {
        return Err(Error::ScheduleMismatch {
            needs: "a finite stationary std σ∞ (velocity fit targets are defined through it)",
            fix: "this schedule is variance-exploding (σ∞ = ∞): use a noise, data or score network",
        });
    }
    Ok(())
}
