//! [`AdaptiveSampler`]: the MR probability-flow ODE with step-size control.
//!
//! Instead of a step count the user gives a tolerance. Each step from `s` to `t` computes two
//! singlestep solutions of neighbouring orders that share their network evaluations (an
//! embedded pair), takes their difference as the local error estimate, and accepts the
//! higher-order one when the scaled error norm is at most 1. The next λ-step is
//! `safety · h · E^{−1/p}` (clamped to a factor in `[0.2, 5]`, and to at most 1 right after a
//! rejection), `p` the higher order. A rejected step retries from the same state and reuses its
//! first evaluation.

use std::sync::Arc;

use super::run::{Sample, Stats, start_state};
use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::param::{Affine, Parameterization, convert_coefficients};
use crate::sampler::mrs::check_fit;
use crate::schedule::Schedule;
use crate::solver::{Node, StepCoeffs, singlestep_coefficients};
use crate::tensor::{NoiseSource, Parallelism, SamplerTensor, check_same_shape};

/// The embedded pair of an [`AdaptiveSampler`] step.
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

/// The MR probability-flow ODE solved to a tolerance: exponential-integrator singlestep pairs
/// (DPM-Solver-12 / -23 style, Lu et al. 2022) with error control, in the μ-shifted frame.
///
/// The error of a step is the root mean square over each sample of
/// `(x_high − x_low) / max(atol, rtol · max(|x_high|, |x_s|))`, maximised over the batch (the
/// step size is shared by the batch). Integration runs in `λ` from the schedule's end `t_max`
/// to the largest finite `λ`; where `σ(t_min) = 0` a last evaluation then returns the data
/// prediction there (the limit step of the fixed grids). [`Stats`] reports the evaluations,
/// the accepted steps (with their times in `timesteps` and orders in `orders`) and the
/// rejected ones.
///
/// The norm is computed on the host (the three tensors are copied there once per attempt),
/// which is small next to a network evaluation on any backend.
///
/// This sampler is not a [`Sampler`](super::Sampler): its evaluation points depend on the
/// network's outputs, so it cannot be compiled to a fixed [`Run`](super::Run).
///
/// ```
/// use mrsampler::{AdaptiveSampler, FitTarget, FnModel, SeededNoise};
/// use mrsampler::schedule::IrSdeSchedule;
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
    output_clip: Option<(f64, f64)>,
    parallelism: Parallelism,
}

impl AdaptiveSampler {
    /// An adaptive sampler over `schedule` with the defaults: [`EmbeddedPair::Orders23`],
    /// data form, `rtol = 0.05`, `atol = 0.0078` (2/255 of an image in `[0, 1]`), first λ-step
    /// 0.5, safety factor 0.9, at most 1000 evaluations, output clamped to `[0, 1]`.
    pub fn new(schedule: impl Schedule + 'static) -> Result<Self> {
        Self::with_schedule(Arc::new(schedule))
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn with_schedule(schedule: Arc<dyn Schedule>) -> Result<Self> {
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
            output_clip: Some((0.0, 1.0)),
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
        Ok(self)
    }

    /// The embedded pair (default [`EmbeddedPair::Orders23`]).
    pub fn with_pair(mut self, pair: EmbeddedPair) -> Self {
        self.pair = pair;
        self
    }

    /// Solver parameterization (default [`Parameterization::Data`]).
    pub fn with_parameterization(mut self, p: Parameterization) -> Self {
        self.parameterization = p;
        self
    }

    /// The first attempted λ-step (default 0.5; finite and > 0). Near the prior the data
    /// prediction changes slowly, so a large first step is usually accepted; `docs/benchmarks.md`
    /// measures 0.05 to 1.
    pub fn with_initial_step(mut self, h: f64) -> Result<Self> {
        if !(h > 0.0 && h.is_finite()) {
            return Err(Error::setting("h_init", h, "must be finite and > 0"));
        }
        self.h_init = h;
        Ok(self)
    }

    /// The safety factor of the step-size update (default 0.9; in `(0, 1]`).
    pub fn with_safety(mut self, safety: f64) -> Result<Self> {
        if !(safety > 0.0 && safety <= 1.0) {
            return Err(Error::setting("safety", safety, "must lie in (0, 1]"));
        }
        self.safety = safety;
        Ok(self)
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
        Ok(self)
    }

    /// The prior-mean correction of
    /// [`MrSampler::with_prior_correction`](super::MrSampler::with_prior_correction) (default
    /// off; data form only): the start state gains `α(t_max)(x̂₀ − μ)` from the first
    /// evaluation.
    pub fn with_prior_correction(mut self, on: bool) -> Self {
        self.prior_correction = on;
        self
    }

    /// Clamp applied to the returned sample (default `Some((0, 1))`).
    pub fn with_output_clip(mut self, clip: Option<(f64, f64)>) -> Result<Self> {
        self.output_clip = super::check_clip(clip)?;
        Ok(self)
    }

    /// How the tensor kernels may split work across threads (default
    /// [`Parallelism::Rayon(0)`](Parallelism::Rayon)).
    pub fn with_parallelism(mut self, par: Parallelism) -> Self {
        self.parallelism = par;
        self
    }

    fn node(&self, t: f64) -> Node {
        let s = &self.schedule;
        Node {
            alpha: s.alpha(t),
            sigma: s.sigma(t),
            lambda: s.lambda(t),
        }
    }

    /// Solves from `x_start`, or from a prior draw `μ + σ(t_max)·z` taken from `noise`, with
    /// `model`.
    pub fn sample<T: SamplerTensor, M: ScoreModel<T>, N: NoiseSource<T>>(
        &self,
        model: &mut M,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Sample<T>> {
        let fit = model.fit_target();
        check_fit(fit, &*self.schedule)?;
        let par = self.parallelism;
        let sch = &self.schedule;
        let (t_max, t_min) = (sch.t_max(), sch.t_min());
        let (mut x, _) = start_state(mu, x_start, sch.sigma(t_max), t_max, noise, par)?;
        let param = self.parameterization;
        let t_end = sch.t_lambda_finite();
        let lambda_end = sch.lambda(t_end);
        let limit = t_end > t_min && sch.sigma(t_min) == 0.0;
        let mut stats = Stats {
            timesteps: vec![t_max],
            ..Stats::default()
        };
        let mut eval = Evaluator {
            model,
            mu,
            shape: mu.shape(),
            fit,
            param,
            schedule: &**sch,
            par,
            max_nfe: self.max_nfe,
            nfe: 0,
        };

        let order = self.pair.order();
        let mut s = self.node(t_max);
        let mut t_s = t_max;
        let mut h = self.h_init;
        // m₀ at the current state, kept across a rejection.
        let mut m0: Option<T> = None;
        let mut first = true;
        let mut just_rejected = false;
        // λ-steps below this are lost in rounding (the stages would coincide): the solve ends
        // within it of λ_end, and a controller asking for less has failed.
        let h_min = 1e-8 * lambda_end.abs().max(s.lambda.abs()).max(1.0);
        while lambda_end - s.lambda > h_min {
            let m_s = match m0.take() {
                Some(m) => m,
                None => eval.eval(&x, t_s)?,
            };
            if first {
                first = false;
                if self.prior_correction && param == Parameterization::Data {
                    // x ← x + α_s(x̂₀ − μ), keeping x̂₀ as the output at the corrected state.
                    x = T::lincomb(&[(1.0, &x), (s.alpha, &m_s), (-s.alpha, mu)], par)?;
                }
            }
            if h < h_min {
                // The error estimate stays above the tolerance however small the step.
                return Err(Error::StepSizeUnderflow { time: t_s });
            }
            let h_try = h.min(lambda_end - s.lambda);
            let last = h_try >= lambda_end - s.lambda;
            let t_t = if last {
                t_end
            } else {
                sch.t_of_lambda(s.lambda + h_try)
            };
            let t = self.node(t_t);
            if t.lambda.partial_cmp(&s.lambda) != Some(std::cmp::Ordering::Greater) {
                // The schedule's inverse did not resolve the step.
                return Err(Error::StepSizeUnderflow { time: t_s });
            }
            let (x_high, x_low) = self.attempt(&mut eval, &x, &m_s, s, t)?;
            if !x_high.all_finite(par)? || !x_low.all_finite(par)? {
                return Err(Error::NonFinite {
                    what: "state",
                    step: eval.nfe,
                    time: t_t,
                });
            }
            // Finite states give a norm in [0, ∞]; ∞ (a tiny atol) is a hard rejection.
            let err = error_norm(&x_high, &x_low, &x, self.rtol, self.atol)?;
            // No growth right after a rejection (the error was just found to rise here).
            let max_growth = if just_rejected { 1.0 } else { 5.0 };
            let factor = if err == 0.0 {
                max_growth
            } else {
                (self.safety * err.powf(-1.0 / order as f64)).clamp(0.2, max_growth)
            };
            just_rejected = err > 1.0;
            if err <= 1.0 {
                x = x_high;
                s = t;
                t_s = t_t;
                stats.steps += 1;
                stats.orders.push(order);
                stats.timesteps.push(t_t);
            } else {
                stats.rejected_steps += 1;
                m0 = Some(m_s);
            }
            h = h_try * factor;
        }
        if limit {
            // The limit step into σ = 0: the data prediction at the last finite λ.
            x = eval.eval_as(&x, t_end, Parameterization::Data)?;
            stats.steps += 1;
            stats.orders.push(1);
            stats.timesteps.push(t_min);
        }
        if !x.all_finite(par)? {
            return Err(Error::NonFinite {
                what: "state",
                step: eval.nfe,
                time: *stats.timesteps.last().unwrap_or(&t_min),
            });
        }
        stats.nfe = eval.nfe;
        let clipped = match self.output_clip {
            Some((lo, hi)) => x.clamp(lo, hi)?,
            None => x.clone(),
        };
        Ok(Sample {
            x: clipped,
            x_unclipped: x,
            stats,
        })
    }

    /// One attempt from `s` to `t`: the higher- and lower-order solutions of the pair.
    fn attempt<T: SamplerTensor, M: ScoreModel<T>>(
        &self,
        eval: &mut Evaluator<'_, T, M>,
        x: &T,
        m_s: &T,
        s: Node,
        t: Node,
    ) -> Result<(T, T)> {
        let param = self.parameterization;
        let h = t.lambda - s.lambda;
        let sch = &self.schedule;
        let par = self.parallelism;
        let stage_at = |r: f64| {
            let u = sch.t_of_lambda(s.lambda + r * h);
            (u, self.node(u))
        };
        match self.pair {
            EmbeddedPair::Orders12 => {
                let (u1, n1) = stage_at(0.5);
                let low = singlestep_coefficients(param, 1, s, &[], t);
                let high = singlestep_coefficients(param, 2, s, &[n1], t);
                let x1 = apply(&high[0], x, &[m_s], eval.mu, par)?;
                let m1 = eval.eval(&x1, u1)?;
                Ok((
                    apply(&high[1], x, &[&m1, m_s], eval.mu, par)?,
                    apply(&low[0], x, &[m_s], eval.mu, par)?,
                ))
            }
            EmbeddedPair::Orders23 => {
                let (u1, n1) = stage_at(1.0 / 3.0);
                let (u2, n2) = stage_at(2.0 / 3.0);
                let low = singlestep_coefficients(param, 2, s, &[n1], t);
                let high = singlestep_coefficients(param, 3, s, &[n1, n2], t);
                let x1 = apply(&high[0], x, &[m_s], eval.mu, par)?;
                let m1 = eval.eval(&x1, u1)?;
                let x2 = apply(&high[1], x, &[&m1, m_s], eval.mu, par)?;
                let m2 = eval.eval(&x2, u2)?;
                Ok((
                    apply(&high[2], x, &[&m2, &m1, m_s], eval.mu, par)?,
                    apply(&low[1], x, &[&m1, m_s], eval.mu, par)?,
                ))
            }
        }
    }
}

/// `c.x·x + Σ c.q[i]·outs[i] + c.mu·μ`.
fn apply<T: SamplerTensor>(
    c: &StepCoeffs,
    x: &T,
    outs: &[&T],
    mu: &T,
    par: Parallelism,
) -> Result<T> {
    let mut terms: Vec<(f64, &T)> = Vec::with_capacity(outs.len() + 2);
    terms.push((c.x, x));
    terms.extend(c.q.iter().zip(outs).map(|(w, o)| (*w, *o)));
    terms.push((c.mu, mu));
    T::lincomb(&terms, par)
}

/// The network, its conversion to the solver's parameterization, and the evaluation count.
struct Evaluator<'a, T, M> {
    model: &'a mut M,
    mu: &'a T,
    shape: Vec<usize>,
    fit: crate::param::FitTarget,
    param: Parameterization,
    schedule: &'a dyn Schedule,
    par: Parallelism,
    max_nfe: usize,
    nfe: usize,
}

impl<T: SamplerTensor, M: ScoreModel<T>> Evaluator<'_, T, M> {
    /// The output at `(x, t)`, converted to the solver's parameterization.
    fn eval(&mut self, x: &T, t: f64) -> Result<T> {
        self.eval_as(x, t, self.param)
    }

    /// The output at `(x, t)`, converted to `param`.
    fn eval_as(&mut self, x: &T, t: f64, param: Parameterization) -> Result<T> {
        if self.nfe >= self.max_nfe {
            return Err(Error::BudgetExceeded {
                max_nfe: self.max_nfe,
                time: t,
            });
        }
        self.nfe += 1;
        let step = self.nfe;
        let net = self
            .model
            .predict(x, self.mu, t)
            .map_err(|source| Error::Model {
                step,
                time: t,
                source,
            })?;
        check_same_shape("model output", &self.shape, &net)?;
        if !net.all_finite(self.par)? {
            return Err(Error::NonFinite {
                what: "model output",
                step,
                time: t,
            });
        }
        let sch = self.schedule;
        let c: Affine =
            convert_coefficients(self.fit, param, sch.alpha(t), sch.sigma(t), sch.sigma_inf());
        T::lincomb(&[(c.net, &net), (c.x, x), (c.mu, self.mu)], self.par)
    }
}

/// The scaled error norm: per sample the root mean square of
/// `(high − low) / max(atol, rtol·max(|high|, |prev|))`, maximised over the batch.
fn error_norm<T: SamplerTensor>(high: &T, low: &T, prev: &T, rtol: f64, atol: f64) -> Result<f64> {
    let (a, b, c) = (high.to_host_f64()?, low.to_host_f64()?, prev.to_host_f64()?);
    let n = a.len();
    let batch = high.batch_size().max(1);
    let per = (n / batch).max(1);
    let mut worst: f64 = 0.0;
    for k in 0..batch {
        let range = k * per..((k + 1) * per).min(n);
        let len = range.len().max(1) as f64;
        let ratio = |i: usize| (a[i] - b[i]).abs() / atol.max(rtol * a[i].abs().max(c[i].abs()));
        // RMS scaled by the largest ratio, so that squares cannot overflow.
        let top = range.clone().map(ratio).fold(0.0, f64::max);
        let rms = if top == 0.0 || top.is_infinite() {
            top
        } else {
            top * (range.map(|i| (ratio(i) / top).powi(2)).sum::<f64>() / len).sqrt()
        };
        worst = worst.max(rms);
    }
    Ok(worst)
}
