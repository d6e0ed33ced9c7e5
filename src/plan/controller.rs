//! The adaptive sampler's controller (`docs/math.md` §4.6): a plan that grows while it runs.
//!
//! Each attempt from `s` to `t` is planned as the evaluations of a singlestep update whose
//! last update is an embedded pair ([`Update::Embedded`]): the run computes both solutions,
//! the scaled error norm, and hands the norm to [`Controller::decide`], which accepts or
//! rejects, chooses the next λ-step `safety·h·E^{−1/p}` (factor clamped to `[0.2, 5]`, at most
//! 1 right after a rejection) and plans the next attempt. A rejected attempt retries from the
//! same state and reuses its first evaluation.

use std::sync::Arc;

use super::{Frame, PlannedStep, Target, Update, node};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::schedule::Schedule;
use crate::solver::{Node, StepCoeffs, singlestep_coefficients};

/// The embedded pair of an adaptive step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EmbeddedPair {
    /// First order against second order (stage at λ-fraction ½): 2 evaluations per step.
    Orders12,
    /// Second order (stage at ⅓) against third order (stages at ⅓, ⅔): 3 evaluations per
    /// step (default).
    #[default]
    Orders23,
}

impl EmbeddedPair {
    /// The order of the accepted (higher-order) solution.
    pub fn order(self) -> usize {
        match self {
            EmbeddedPair::Orders12 => 2,
            EmbeddedPair::Orders23 => 3,
        }
    }
}

/// The controller's settings (validated by the [`AdaptiveSampler`](crate::AdaptiveSampler)).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub schedule: Arc<dyn Schedule>,
    pub fit: FitTarget,
    pub param: Parameterization,
    pub pair: EmbeddedPair,
    pub rtol: f64,
    pub atol: f64,
    pub h_init: f64,
    pub safety: f64,
    pub max_nfe: usize,
    pub prior_correction: bool,
}

/// The adaptive plan: the controller's first attempt, and the controller, which appends the
/// steps it decides on as the run reports its estimates.
pub(crate) fn plan(
    cfg: Settings,
    data_range: Option<(f64, f64)>,
    parallelism: crate::tensor::Parallelism,
) -> Result<super::Plan> {
    let history = cfg.pair.order();
    let schedule = cfg.schedule.clone();
    let (controller, steps) = Controller::start(cfg)?;
    Ok(super::Plan {
        timesteps: vec![controller.t_start()],
        steps,
        prior_std: schedule.sigma(controller.t_start()),
        data_range,
        thresholding: None,
        history,
        parallelism,
        controller: Some(Box::new(controller)),
    })
}

/// What the run does after an embedded step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// Whether the higher-order solution becomes the state.
    pub accept: bool,
    /// With a rejection: the retry's first update, applied at once to the output already
    /// evaluated at the state (no new evaluation).
    pub retry_update: Option<Update>,
    /// The next planned evaluations (empty: the pass is complete).
    pub steps: Vec<PlannedStep>,
}

/// The controller's state between attempts (equal when every field is).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Controller {
    cfg: Settings,
    /// The accepted state's node and time.
    s: Node,
    t_s: f64,
    /// The attempt in progress: its target node and time.
    t: Node,
    t_t: f64,
    /// The next λ-step to try.
    h: f64,
    h_min: f64,
    lambda_end: f64,
    t_end: f64,
    /// Whether a limit step into `σ = 0` ends the pass.
    limit: bool,
    just_rejected: bool,
    /// Whether the start state still needs the prior-mean correction (until the first
    /// acceptance; folded into every attempt's weights).
    correct: bool,
}

/// Settings are equal when they hold the same schedule (the same shared object) and equal
/// values.
impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.schedule, &other.schedule)
            && self.fit == other.fit
            && self.param == other.param
            && self.pair == other.pair
            && self.rtol == other.rtol
            && self.atol == other.atol
            && self.h_init == other.h_init
            && self.safety == other.safety
            && self.max_nfe == other.max_nfe
            && self.prior_correction == other.prior_correction
    }
}

impl Controller {
    /// The controller at the schedule's end and the first attempt's evaluations.
    pub(crate) fn start(cfg: Settings) -> Result<(Self, Vec<PlannedStep>)> {
        let sch = cfg.schedule.clone();
        let t_max = sch.t_max();
        let t_end = sch.t_lambda_finite();
        let lambda_end = sch.lambda(t_end);
        let s = node(&*sch, t_max);
        let mut c = Self {
            s,
            t_s: t_max,
            t: s,
            t_t: t_max,
            h: cfg.h_init,
            // λ-steps below this are lost in rounding (the stages would coincide): the solve
            // ends within it of λ_end, and a controller asking for less has failed.
            h_min: 1e-8 * lambda_end.abs().max(s.lambda.abs()).max(1.0),
            lambda_end,
            t_end,
            limit: t_end > sch.t_min() && sch.sigma(sch.t_min()) == 0.0,
            just_rejected: false,
            correct: cfg.prior_correction && cfg.param == Parameterization::Data,
            cfg,
        };
        let steps = c.next_steps(0, true)?;
        Ok((c, steps))
    }

    /// The time the pass starts at.
    pub(crate) fn t_start(&self) -> f64 {
        self.t_s
    }

    /// The rtol/atol of the scaled error norm.
    pub(crate) fn tolerance(&self) -> (f64, f64) {
        (self.cfg.rtol, self.cfg.atol)
    }

    /// The time of the accepted state.
    pub(crate) fn accepted_time(&self) -> f64 {
        self.t_s
    }

    fn frame(&self) -> Frame<'_> {
        Frame {
            view: &*self.cfg.schedule,
            fit: self.cfg.fit,
            param: self.cfg.param,
            threshold_q: false,
            threshold_x0: false,
        }
    }

    /// Plans what follows the accepted state: the next attempt (whose first evaluation is
    /// made only when `evaluate_first`), the limit step, or nothing. `nfe` evaluations have
    /// been made.
    fn next_steps(&mut self, nfe: usize, evaluate_first: bool) -> Result<Vec<PlannedStep>> {
        let s = self.s;
        if self.lambda_end - s.lambda <= self.h_min {
            if !self.limit {
                return Ok(Vec::new());
            }
            self.budget(nfe, 1, self.t_end)?;
            // The limit step into σ = 0: the data prediction at the last finite λ.
            let t_min = self.cfg.schedule.t_min();
            self.t_t = t_min;
            return Ok(vec![self.frame().to_data((self.t_end, t_min), 1)]);
        }
        if self.h < self.h_min {
            // The error estimate stays above the tolerance however small the step.
            return Err(Error::StepSizeUnderflow { time: self.t_s });
        }
        let h_try = self.h.min(self.lambda_end - s.lambda);
        let last = h_try >= self.lambda_end - s.lambda;
        let sch = &*self.cfg.schedule;
        let t_t = if last {
            self.t_end
        } else {
            sch.t_of_lambda(s.lambda + h_try)
        };
        let t = node(sch, t_t);
        if t.lambda.partial_cmp(&s.lambda) != Some(std::cmp::Ordering::Greater) {
            // The schedule's inverse did not resolve the step.
            return Err(Error::StepSizeUnderflow { time: self.t_s });
        }
        self.h = h_try;
        self.t = t;
        self.t_t = t_t;
        let (times, mut updates) = self.attempt();
        if self.correct {
            // x ← x + α_s(x̂₀ − μ) with x̂₀ the output at s, history slot `len − 1` at the
            // embedded step (slot `j` after the `j + 1`-th evaluation).
            for (j, u) in updates.iter_mut().enumerate() {
                fold_correction(u, j, s.alpha);
            }
        }
        let first = usize::from(!evaluate_first);
        self.budget(nfe, times.len() - first, times[first])?;
        let frame = self.frame();
        let n = times.len();
        let mut steps = Vec::with_capacity(n);
        for (j, (&u, update)) in times.iter().zip(updates).enumerate() {
            let t_next = times.get(j + 1).copied().unwrap_or(t_t);
            steps.push(frame.step((u, t_next), update, self.cfg.pair.order()));
        }
        Ok(steps)
    }

    /// Errors when `more` evaluations from time `time` on would exceed the budget.
    fn budget(&self, nfe: usize, more: usize, time: f64) -> Result<()> {
        if nfe + more > self.cfg.max_nfe {
            return Err(Error::BudgetExceeded {
                max_nfe: self.cfg.max_nfe,
                time,
            });
        }
        Ok(())
    }

    /// The evaluation times of the attempt from `s` to `t` and the update after each.
    fn attempt(&self) -> (Vec<f64>, Vec<Update>) {
        let (s, t) = (self.s, self.t);
        let param = self.cfg.param;
        let sch = &*self.cfg.schedule;
        let h = t.lambda - s.lambda;
        let stage_at = |r: f64| {
            let u = sch.t_of_lambda(s.lambda + r * h);
            (u, node(sch, u))
        };
        // The lower-order solution does not read the newest output: its weights move one
        // history slot back.
        let older = |mut c: StepCoeffs| {
            c.q = [0.0, c.q[0], c.q[1], c.q[2]];
            c
        };
        let stage = |coeffs: StepCoeffs| Update::Linear {
            coeffs,
            target: Target::Stage,
            reuse_noise: false,
        };
        match self.cfg.pair {
            EmbeddedPair::Orders12 => {
                let (u1, n1) = stage_at(0.5);
                let low = singlestep_coefficients(param, 1, s, &[], t);
                let high = singlestep_coefficients(param, 2, s, &[n1], t);
                let embedded = Update::Embedded {
                    high: high[1],
                    low: older(low[0]),
                    prev: None,
                };
                (vec![self.t_s, u1], vec![stage(high[0]), embedded])
            }
            EmbeddedPair::Orders23 => {
                let (u1, n1) = stage_at(1.0 / 3.0);
                let (u2, n2) = stage_at(2.0 / 3.0);
                let low = singlestep_coefficients(param, 2, s, &[n1], t);
                let high = singlestep_coefficients(param, 3, s, &[n1, n2], t);
                let embedded = Update::Embedded {
                    high: high[2],
                    low: older(low[1]),
                    prev: None,
                };
                (
                    vec![self.t_s, u1, u2],
                    vec![stage(high[0]), stage(high[1]), embedded],
                )
            }
        }
    }

    /// Decides on the attempt whose embedded pair has the scaled error norm `err`, after
    /// `nfe` evaluations, and plans what follows.
    pub(crate) fn decide(&mut self, err: f64, nfe: usize) -> Result<Decision> {
        let order = self.cfg.pair.order();
        // No growth right after a rejection (the error was just found to rise here).
        let max_growth = if self.just_rejected { 1.0 } else { 5.0 };
        let factor = if err == 0.0 {
            max_growth
        } else {
            (self.cfg.safety * err.powf(-1.0 / order as f64)).clamp(0.2, max_growth)
        };
        let accept = err <= 1.0;
        self.just_rejected = !accept;
        self.h *= factor;
        if accept {
            self.s = self.t;
            self.t_s = self.t_t;
            self.correct = false;
            let steps = self.next_steps(nfe, true)?;
            return Ok(Decision {
                accept,
                retry_update: None,
                steps,
            });
        }
        // Retry from the same state with the output already evaluated there.
        let mut steps = self.next_steps(nfe, false)?;
        let retry_update = Some(steps.remove(0).update);
        Ok(Decision {
            accept,
            retry_update,
            steps,
        })
    }
}

/// Folds the prior-mean correction into an update that reads the start state, with the
/// first output in history slot `slot`.
fn fold_correction(update: &mut Update, slot: usize, alpha0: f64) {
    let fold = |c: &mut StepCoeffs| {
        c.q[slot] += c.x * alpha0;
        c.mu -= c.x * alpha0;
    };
    match update {
        Update::Linear { coeffs, .. } => fold(coeffs),
        Update::Embedded { high, low, prev } => {
            fold(high);
            fold(low);
            // The error scale reads the corrected start state.
            let mut p = StepCoeffs {
                x: 1.0,
                ..StepCoeffs::ZERO
            };
            fold(&mut p);
            *prev = Some(p);
        }
        Update::Replace { .. } => {}
    }
}
