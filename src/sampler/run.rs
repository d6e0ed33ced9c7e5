//! The step-level state machine shared by every sampler.
//!
//! A sampler compiles its configuration into a [`Plan`]: the grid and, per step, the `f64`
//! weights of the output conversion and of the update. A [`Run`] then only applies them:
//! ask [`Run::pending`] where to evaluate the network, hand the output to [`Run::advance`],
//! repeat, and [`Run::finish`].

use crate::error::{Error, Result};
use crate::param::Affine;
use crate::solver::StepCoeffs;
use crate::tensor::{NoiseSource, Parallelism, SamplerTensor, check_same_shape};

/// Where an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The state `x` (the step is complete).
    State,
    /// The intermediate stage (Heun's predictor); the next evaluation is at the stage.
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

/// A compiled sampling pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub timesteps: Vec<f64>,
    pub steps: Vec<PlannedStep>,
    /// Std of the prior `x = μ + prior_std·z` when no start state is given.
    pub prior_std: f64,
    /// Clamp applied to the returned sample.
    pub output_clip: Option<(f64, f64)>,
    /// `(ratio, floor, max)` of dynamic thresholding.
    pub thresholding: (f64, f64, f64),
    /// How many past converted outputs a step reads (the largest order; 2 for Heun).
    pub history: usize,
    /// Thread split of the tensor kernels.
    pub parallelism: Parallelism,
}

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
    /// Order used by each evaluation's update (0 marks a `denoise_last` evaluation).
    pub orders: Vec<usize>,
    /// The sampling grid `τ_0 > … > τ_M`.
    pub timesteps: Vec<f64>,
}

/// The result of a sampling pass.
#[derive(Debug, Clone)]
pub struct Sample<T> {
    /// The sample after the configured output clamp (`[0, 1]` for the MR Sampler by default).
    pub x: T,
    /// The sample before the clamp.
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
        let shape = mu.shape();
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

    /// The time of the current state (the grid start before the first step).
    pub fn current_time(&self) -> f64 {
        match self.next {
            0 => self.plan.timesteps.first().copied().unwrap_or(f64::NAN),
            k => self.plan.steps[k - 1].t_next,
        }
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

    /// Total number of network evaluations of this pass (done and pending).
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
    /// allocates nothing: outputs, noise and the stage live in recycled buffers.
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
        let (ratio, floor, max) = self.plan.thresholding;
        self.rotate_history();
        let conv = step.convert;
        let produced_state = match step.update {
            Update::Replace { convert, threshold } => {
                // The recorded output, then the state becomes a conversion of the network output.
                let (front, _) = self.history.split_first_mut().expect("history has a slot");
                convert_into(front, conv, net, &self.x, &self.mu, par)?;
                if step.threshold {
                    front.threshold_per_sample(ratio, floor, max, par)?;
                }
                let mut terms = Terms::new(net);
                terms.push(convert.net, net);
                terms.push(convert.mu, &self.mu);
                self.x.lincomb_assign(convert.x, terms.as_slice(), par)?;
                if threshold {
                    self.x.threshold_per_sample(ratio, floor, max, par)?;
                }
                self.staged = false;
                true
            }
            Update::Linear {
                coeffs,
                target,
                reuse_noise,
            } => {
                if coeffs.noise.is_some() && !(reuse_noise && self.z.is_some()) {
                    let z = self.z.get_or_insert_with(|| self.mu.clone());
                    noise.fill_standard_normal(z, par)?;
                    check_same_shape("noise", &self.shape, &*z)?;
                }
                let staged = self.staged;
                // A stage update writes a stage buffer, taken out while it is written: the spare
                // one when the network was evaluated at the current stage (which is still read).
                let mut stage_out = match target {
                    Target::Stage if staged => {
                        Some(self.spare.take().unwrap_or_else(|| self.mu.clone()))
                    }
                    Target::Stage => Some(self.stage.take().unwrap_or_else(|| self.mu.clone())),
                    Target::State => None,
                };
                let (front, older) = self.history.split_first_mut().expect("history has a slot");
                let mut terms = Terms::new(&self.mu);
                for (c, h) in coeffs.q[1..].iter().zip(older.iter()) {
                    terms.push(*c, h);
                }
                terms.push(coeffs.mu, &self.mu);
                if let (Some(c), Some(z)) = (coeffs.noise, self.z.as_ref()) {
                    terms.push(c, z);
                }
                let eval_x = match (&self.stage, staged) {
                    (Some(st), true) => {
                        terms.push(coeffs.stage, st);
                        st
                    }
                    _ => &self.x,
                };
                if target == Target::State && !step.threshold && !staged {
                    T::convert_and_step(
                        &mut self.x,
                        front,
                        net,
                        &self.mu,
                        [conv.net, conv.x, conv.mu],
                        coeffs.x,
                        coeffs.q[0],
                        terms.as_slice(),
                        par,
                    )?;
                } else {
                    convert_into(front, conv, net, eval_x, &self.mu, par)?;
                    if step.threshold {
                        front.threshold_per_sample(ratio, floor, max, par)?;
                    }
                    let mut all = Terms::new(&self.mu);
                    all.push(coeffs.q[0], &*front);
                    for &(c, t) in terms.as_slice() {
                        all.push(c, t);
                    }
                    match stage_out.as_mut() {
                        Some(out) => {
                            all.push(coeffs.x, &self.x);
                            out.lincomb_into(all.as_slice(), par)?;
                        }
                        None => self.x.lincomb_assign(coeffs.x, all.as_slice(), par)?,
                    }
                }
                if let Some(out) = stage_out {
                    let previous = self.stage.replace(out);
                    if staged {
                        self.spare = previous;
                    }
                }
                self.staged = target == Target::Stage;
                target == Target::State
            }
        };
        self.record(step.order, step_no, step.t_next, produced_state)?;
        self.next += 1;
        Ok(())
    }

    fn record(&mut self, order: usize, step_no: usize, t_next: f64, state: bool) -> Result<()> {
        self.stats.orders.push(order);
        if !self.eval_state().all_finite(self.plan.parallelism)? {
            return Err(Error::NonFinite {
                what: "state",
                step: step_no,
                time: t_next,
            });
        }
        if state {
            self.stats.steps += 1;
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
        let x = match self.plan.output_clip {
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
    let shape = mu.shape();
    match x_start {
        Some(x) => {
            check_same_shape("start state", &shape, &x)?;
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
            check_same_shape("noise", &shape, &draw)?;
            let x = T::lincomb(&[(1.0, mu), (prior_std, &draw)], par)?;
            Ok((x, Some(draw)))
        }
    }
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
    out.lincomb_into(terms.as_slice(), par)
}
