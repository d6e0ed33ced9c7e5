//! The step-level state machine shared by every sampler.
//!
//! A sampler compiles its configuration into a [`Plan`]: the grid and, per step, the `f64`
//! weights of the output conversion and of the update. A [`Run`] then only applies them:
//! ask [`Run::pending`] where to evaluate the network, hand the output to [`Run::advance`],
//! repeat, and [`Run::finish`].

use crate::error::{Error, Result};
use crate::param::Affine;
use crate::plan::{Plan, PlannedStep, Target, Update};
use crate::solver::StepCoeffs;
use crate::tensor::{
    CounterDraw, FusedStep, NoiseSource, Parallelism, SamplerTensor, check_same_shape,
};

/// Statistics of a finished (or running) pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    /// Network evaluations made.
    pub nfe: usize,
    /// Completed steps (Heun's predictor and corrector count as one step each; a singlestep
    /// update counts once, however many stages it has).
    pub steps: usize,
    /// Steps an adaptive solver rejected and retried (0 for fixed grids).
    pub rejected_steps: usize,
    /// Order used by each evaluation's update (0 marks a `denoise_last` evaluation); for the
    /// adaptive sampler, the order of each accepted step.
    pub orders: Vec<usize>,
    /// The sampling grid `τ_0 > … > τ_M` (adaptive sampler: the accepted times).
    pub timesteps: Vec<f64>,
}

/// The result of a sampling pass.
#[derive(Debug, Clone)]
pub struct Sample<T> {
    /// The sample, clamped to the sampler's data range when one is set.
    pub x: T,
    /// The sample before the data-range clamp.
    pub x_unclipped: T,
    /// Evaluation counts and orders.
    pub stats: Stats,
}

/// What a caller must evaluate next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// 1-based index of the evaluation.
    pub step: usize,
    /// Time to call the network at (schedule units).
    pub t: f64,
}

/// A sampling pass in progress, driven one network evaluation at a time.
///
/// ```
/// # use mrsampler::{MrSampler, Sampler, SeededNoise, FitTarget, schedule::IrSdeSchedule};
/// # use ndarray::ArrayD;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 5)?;
/// let mu = ArrayD::<f32>::from_elem(vec![1, 3, 4, 4], 0.5);
/// let mut noise = SeededNoise::new(0);
/// let mut run = sampler.start(FitTarget::Noise, &mu, None, &mut noise)?;
/// while let Some(p) = run.pending() {
///     // A server would batch this call (state, μ, time p.t) with other requests' calls.
///     assert!(p.t >= 0.0);
///     let eps = run.eval_state().mapv(|_| 0.0f32);
///     run.advance(&eps, &mut noise)?;
/// }
/// let sample = run.finish()?;
/// assert_eq!(sample.stats.nfe, 5);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Run<T> {
    plan: Plan,
    mu: T,
    shape: Vec<usize>,
    x: T,
    /// The intermediate stage (Heun's predictor, a singlestep update's stages); buffer kept
    /// across steps.
    stage: Option<T>,
    /// A second stage buffer: a stage computed from the previous stage is written here, then
    /// the two swap.
    spare: Option<T>,
    /// Whether `stage` holds the state the next evaluation is at.
    staged: bool,
    /// Converted outputs, most recent first; at most `plan.history` buffers, recycled.
    history: Vec<T>,
    /// Noise buffer, allocated on the first stochastic step and reused.
    z: Option<T>,
    next: usize,
    /// The time of the state after the last update (of the eval state, after a stage update).
    time: f64,
    stats: Stats,
}

/// Up to 8 `(coefficient, tensor)` terms on the stack.
struct Terms<'a, T> {
    buf: [(f64, &'a T); 8],
    len: usize,
}

impl<'a, T> Terms<'a, T> {
    fn new(filler: &'a T) -> Self {
        Self {
            buf: [(0.0, filler); 8],
            len: 0,
        }
    }
    /// Adds `c·t` unless `c` is zero.
    fn push(&mut self, c: f64, t: &'a T) {
        if c != 0.0 {
            self.buf[self.len] = (c, t);
            self.len += 1;
        }
    }
    fn as_slice(&self) -> &[(f64, &'a T)] {
        &self.buf[..self.len]
    }
}

impl<T: SamplerTensor> Run<T> {
    /// Starts a pass: validates `mu` and the start state, or draws `μ + prior_std·z`.
    pub(crate) fn new<N: NoiseSource<T>>(
        plan: Plan,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Self> {
        let shape = crate::tensor::shape(mu);
        let t0 = plan.timesteps.first().copied().unwrap_or(f64::NAN);
        let (x, z) = start_state(mu, x_start, plan.prior_std, t0, noise, plan.parallelism)?;
        let stats = Stats {
            timesteps: plan.timesteps.clone(),
            orders: Vec::with_capacity(plan.steps.len()),
            ..Stats::default()
        };
        let history = Vec::with_capacity(plan.history.max(1));
        Ok(Self {
            plan,
            mu: mu.clone(),
            shape,
            x,
            stage: None,
            spare: None,
            staged: false,
            history,
            z,
            next: 0,
            time: t0,
            stats,
        })
    }

    /// The next evaluation, or `None` when the pass is complete.
    pub fn pending(&self) -> Option<Pending> {
        self.plan.steps.get(self.next).map(|s| Pending {
            step: self.next + 1,
            t: s.t_eval,
        })
    }

    /// The state the network must be evaluated at (the current state, or Heun's stage).
    pub fn eval_state(&self) -> &T {
        match (&self.stage, self.staged) {
            (Some(s), true) => s,
            _ => &self.x,
        }
    }

    /// The time reached by the last update (the grid start before the first step; a stage's
    /// time after a stage update).
    pub fn current_time(&self) -> f64 {
        self.time
    }

    /// The current state `x`.
    pub fn state(&self) -> &T {
        &self.x
    }

    /// The mean `μ` the pass was started with.
    pub fn mu(&self) -> &T {
        &self.mu
    }

    /// The most recent converted model output (solver parameterization, after thresholding).
    pub fn last_model_output(&self) -> Option<&T> {
        self.history.first()
    }

    /// Total number of network evaluations of this pass, done and pending (an adaptive pass:
    /// those planned so far).
    pub fn num_evaluations(&self) -> usize {
        self.plan.steps.len()
    }

    /// Statistics so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The data prediction `x̂₀` implied by a raw network output at the pending step.
    pub fn data_prediction(&self, net: &T) -> Result<T> {
        let step = self.plan.steps.get(self.next).ok_or(Error::StepOrder {
            what: "data_prediction called after the last step",
        })?;
        check_same_shape("model output", &self.shape, net)?;
        let mut out = net.clone();
        convert_into(
            &mut out,
            step.to_data,
            net,
            self.eval_state(),
            &self.mu,
            self.plan.parallelism,
        )?;
        Ok(out)
    }

    /// Makes `history[0]` a buffer to write the new converted output into (recycling the
    /// oldest once the history is full; allocating only while it fills up).
    fn rotate_history(&mut self) {
        if self.history.len() < self.plan.history.max(1) {
            self.history.insert(0, self.mu.clone());
        } else {
            self.history.rotate_right(1);
        }
    }

    /// Applies the pending step with the network output `net` (evaluated at
    /// [`eval_state`](Self::eval_state) and the pending time). After the first few steps this
    /// allocates nothing: outputs, noise and the stage live in recycled buffers (an adaptive
    /// pass allocates its two candidate solutions per attempt).
    pub fn advance<N: NoiseSource<T>>(&mut self, net: &T, noise: &mut N) -> Result<()> {
        let k = self.next;
        let step = *self.plan.steps.get(k).ok_or(Error::StepOrder {
            what: "advance called after the last step",
        })?;
        let step_no = k + 1;
        let par = self.plan.parallelism;
        check_same_shape("model output", &self.shape, net)?;
        if !net.all_finite(par)? {
            return Err(Error::NonFinite {
                what: "model output",
                step: step_no,
                time: step.t_eval,
            });
        }
        self.stats.nfe += 1;
        self.rotate_history();
        let produced_state = match step.update {
            Update::Replace { convert, threshold } => {
                self.store_output(&step, net, false)?;
                // The state becomes a conversion of the network output.
                let mut terms = Terms::new(net);
                terms.push(convert.net, net);
                terms.push(convert.mu, &self.mu);
                self.x
                    .linear_combination(Some(convert.x), terms.as_slice(), par)?;
                if let (true, Some(t)) = (threshold, self.plan.thresholding) {
                    self.x
                        .threshold_per_sample(t.ratio(), t.floor(), t.max(), par)?;
                }
                self.staged = false;
                true
            }
            Update::Linear {
                coeffs,
                target,
                reuse_noise,
            } => {
                let fused = target == Target::State && !step.threshold && !self.staged;
                // A counter-based draw is generated inside the fused kernel, unless a later
                // step reuses this draw (then it must exist as a tensor).
                let reused_later = self.plan.steps.get(k + 1).is_some_and(|s| {
                    matches!(
                        s.update,
                        Update::Linear {
                            reuse_noise: true,
                            ..
                        }
                    )
                });
                let fresh = coeffs.noise.is_some() && !(reuse_noise && self.z.is_some());
                let mut stepped = false;
                if fresh
                    && fused
                    && !reused_later
                    && let Some(draw) = noise.counter_draw(&self.shape)?
                {
                    self.fused_step(&step, coeffs, net, Some(draw))?;
                    stepped = true;
                }
                if !stepped {
                    if fresh {
                        let z = self.z.get_or_insert_with(|| self.mu.clone());
                        noise.fill_standard_normal(z, par)?;
                        check_same_shape("noise", &self.shape, &*z)?;
                    }
                    if fused {
                        self.fused_step(&step, coeffs, net, None)?;
                    } else {
                        self.store_output(&step, net, self.staged)?;
                        self.apply(coeffs, target)?;
                    }
                }
                target == Target::State
            }
            Update::Embedded { high, low, prev } => {
                self.store_output(&step, net, true)?;
                self.embedded(high, low, prev)?
            }
        };
        self.record(&step, step_no, produced_state)?;
        self.next += 1;
        Ok(())
    }

    /// Converts `net` into the newest history slot (thresholded when the plan says so); `net`
    /// was evaluated at the stage when `at_stage`.
    fn store_output(&mut self, step: &PlannedStep, net: &T, at_stage: bool) -> Result<()> {
        let par = self.plan.parallelism;
        let eval_x = match (&self.stage, at_stage) {
            (Some(st), true) => st,
            _ => &self.x,
        };
        let (front, _) = self.history.split_first_mut().expect("history has a slot");
        convert_into(front, step.convert, net, eval_x, &self.mu, par)?;
        if let (true, Some(t)) = (step.threshold, self.plan.thresholding) {
            front.threshold_per_sample(t.ratio(), t.floor(), t.max(), par)?;
        }
        Ok(())
    }

    /// The common case in one pass over memory: convert the output and update the state.
    fn fused_step(
        &mut self,
        step: &PlannedStep,
        coeffs: StepCoeffs,
        net: &T,
        draw: Option<CounterDraw<'_>>,
    ) -> Result<()> {
        let conv = step.convert;
        let (front, older) = self.history.split_first_mut().expect("history has a slot");
        let mut terms = Terms::new(&self.mu);
        let z = if draw.is_some() {
            None
        } else {
            self.z.as_ref()
        };
        push_terms(&mut terms, &coeffs, older, &self.mu, z, None);
        let step = FusedStep {
            net,
            mu: &self.mu,
            convert: [conv.net, conv.x, conv.mu],
            keep: coeffs.x,
            q_weight: coeffs.q[0],
            terms: terms.as_slice(),
            noise: draw.and_then(|d| coeffs.noise.map(|w| (w, d))),
        };
        self.x.convert_and_step(front, step, self.plan.parallelism)
    }

    /// Applies a linear update to the stored outputs: into the state, or into a stage buffer
    /// (the spare one when the current stage is still read).
    fn apply(&mut self, coeffs: StepCoeffs, target: Target) -> Result<()> {
        let par = self.plan.parallelism;
        let staged = self.staged;
        let mut stage_out = match target {
            Target::Stage if staged => Some(self.spare.take().unwrap_or_else(|| self.mu.clone())),
            Target::Stage => Some(self.stage.take().unwrap_or_else(|| self.mu.clone())),
            Target::State => None,
        };
        let (front, older) = self.history.split_first().expect("history has a slot");
        let mut all = Terms::new(&self.mu);
        all.push(coeffs.q[0], front);
        let stage = self.stage.as_ref().filter(|_| staged);
        push_terms(&mut all, &coeffs, older, &self.mu, self.z.as_ref(), stage);
        match stage_out.as_mut() {
            Some(out) => {
                all.push(coeffs.x, &self.x);
                out.linear_combination(None, all.as_slice(), par)?;
            }
            None => self
                .x
                .linear_combination(Some(coeffs.x), all.as_slice(), par)?,
        }
        if let Some(out) = stage_out {
            let previous = self.stage.replace(out);
            if staged {
                self.spare = previous;
            }
        }
        self.staged = target == Target::Stage;
        Ok(())
    }

    /// The adaptive sampler's embedded pair: both solutions, the scaled error norm, and the
    /// controller's decision. Returns whether the state advanced.
    fn embedded(
        &mut self,
        high: StepCoeffs,
        low: StepCoeffs,
        prev: Option<StepCoeffs>,
    ) -> Result<bool> {
        let par = self.plan.parallelism;
        let solution = |c: &StepCoeffs| -> Result<T> {
            let (front, older) = self.history.split_first().expect("history has a slot");
            let mut terms = Terms::new(&self.mu);
            terms.push(c.x, &self.x);
            terms.push(c.q[0], front);
            push_terms(&mut terms, c, older, &self.mu, None, None);
            crate::tensor::lincomb(terms.as_slice(), par)
        };
        let x_high = solution(&high)?;
        let x_low = solution(&low)?;
        let time = self.plan.steps[self.next].t_next;
        if !x_high.all_finite(par)? || !x_low.all_finite(par)? {
            return Err(Error::NonFinite {
                what: "state",
                step: self.next + 1,
                time,
            });
        }
        let prev = prev.map(|c| solution(&c)).transpose()?;
        let controller = self.plan.controller.as_mut().expect("an adaptive plan");
        let (rtol, atol) = controller.tolerance();
        // Finite states give a norm in [0, ∞]; ∞ (a tiny atol) is a hard rejection.
        let err = error_norm(
            &x_high,
            &x_low,
            prev.as_ref().unwrap_or(&self.x),
            rtol,
            atol,
        )?;
        let decision = controller.decide(err, self.stats.nfe)?;
        let t_state = controller.accepted_time();
        self.plan.steps.extend(decision.steps);
        self.staged = false;
        if decision.accept {
            self.x = x_high;
        } else {
            self.stats.rejected_steps += 1;
            // The output at the state (the attempt's first, the oldest in the history) moves
            // to the front for the retry.
            let len = self.history.len();
            self.history.rotate_left(len - 1);
            if let Some(Update::Linear { coeffs, target, .. }) = decision.retry_update {
                self.apply(coeffs, target)?;
            }
            self.time = t_state;
        }
        Ok(decision.accept)
    }

    fn record(&mut self, step: &PlannedStep, step_no: usize, state: bool) -> Result<()> {
        let adaptive = self.plan.controller.is_some();
        if !adaptive || state {
            self.stats.orders.push(step.order);
        }
        if !self.eval_state().all_finite(self.plan.parallelism)? {
            return Err(Error::NonFinite {
                what: "state",
                step: step_no,
                time: step.t_next,
            });
        }
        if state {
            self.stats.steps += 1;
            if adaptive {
                self.stats.timesteps.push(step.t_next);
            }
        }
        if state || !matches!(step.update, Update::Embedded { .. }) {
            self.time = step.t_next;
        }
        Ok(())
    }

    /// Whether every planned evaluation has been applied.
    pub fn is_done(&self) -> bool {
        self.next >= self.plan.steps.len()
    }

    /// Ends the pass and returns the sample; errors if evaluations are still pending.
    pub fn finish(self) -> Result<Sample<T>> {
        if !self.is_done() {
            return Err(Error::StepOrder {
                what: "finish called before every pending evaluation was applied",
            });
        }
        let x = match self.plan.data_range {
            Some((lo, hi)) => self.x.clamp(lo, hi)?,
            None => self.x.clone(),
        };
        Ok(Sample {
            x,
            x_unclipped: self.x,
            stats: self.stats,
        })
    }
}

/// Validates `mu` and the start state (shape, finiteness) at time `t0`, or draws
/// `μ + prior_std·z`; returns the state and the draw `z` when one was made.
pub(crate) fn start_state<T: SamplerTensor, N: NoiseSource<T>>(
    mu: &T,
    x_start: Option<T>,
    prior_std: f64,
    t0: f64,
    noise: &mut N,
    par: Parallelism,
) -> Result<(T, Option<T>)> {
    if !mu.all_finite(par)? {
        return Err(Error::NonFinite {
            what: "mu",
            step: 0,
            time: t0,
        });
    }
    if mu.layout().shape.is_empty() {
        return Err(Error::ShapeMismatch {
            what: "mu (a scalar has no batch axis; tensors are (batch, …))",
            expected: vec![1],
            found: vec![],
        });
    }
    match x_start {
        Some(x) => {
            check_input("start state", mu, &x)?;
            if !x.all_finite(par)? {
                return Err(Error::NonFinite {
                    what: "start state",
                    step: 0,
                    time: t0,
                });
            }
            Ok((x, None))
        }
        None => {
            let mut draw = mu.clone();
            noise.fill_standard_normal(&mut draw, par)?;
            check_input("noise", mu, &draw)?;
            let x = crate::tensor::lincomb(&[(1.0, mu), (prior_std, &draw)], par)?;
            Ok((x, Some(draw)))
        }
    }
}

/// Adds the terms of an update other than the state and the newest output: the older
/// outputs, μ, the noise draw and the stage.
fn push_terms<'a, T>(
    terms: &mut Terms<'a, T>,
    coeffs: &StepCoeffs,
    older: &'a [T],
    mu: &'a T,
    z: Option<&'a T>,
    stage: Option<&'a T>,
) {
    for (c, h) in coeffs.q[1..].iter().zip(older) {
        terms.push(*c, h);
    }
    terms.push(coeffs.mu, mu);
    if let (Some(c), Some(z)) = (coeffs.noise, z) {
        terms.push(c, z);
    }
    if let Some(st) = stage {
        terms.push(coeffs.stage, st);
    }
}

/// The adaptive sampler's scaled error norm (`docs/math.md` §4.6): per sample the root mean
/// square of `(high − low) / max(atol, rtol·max(|high|, |prev|))`, maximised over the batch.
/// Computed on the host (three copies per attempt, small next to a network evaluation).
fn error_norm<T: SamplerTensor>(high: &T, low: &T, prev: &T, rtol: f64, atol: f64) -> Result<f64> {
    let (a, b, c) = (high.to_host_f64()?, low.to_host_f64()?, prev.to_host_f64()?);
    let n = a.len();
    let batch = crate::tensor::batch_size(high).max(1);
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

/// Checks that `x` (the start state, a noise draw) has μ's shape and element type.
pub(crate) fn check_input<T: SamplerTensor>(what: &'static str, mu: &T, x: &T) -> Result<()> {
    let (m, l) = (mu.layout(), x.layout());
    if m.dtype != l.dtype {
        return Err(Error::DTypeMismatch {
            what,
            expected: m.dtype,
            found: l.dtype,
        });
    }
    check_same_shape(what, &m.shape, x)
}

/// `out ← a.net·net + a.x·x + a.mu·μ`, skipping zero weights.
fn convert_into<T: SamplerTensor>(
    out: &mut T,
    a: Affine,
    net: &T,
    x: &T,
    mu: &T,
    par: Parallelism,
) -> Result<()> {
    let mut terms = Terms::new(net);
    terms.push(a.net, net);
    terms.push(a.x, x);
    terms.push(a.mu, mu);
    out.linear_combination(None, terms.as_slice(), par)
}
