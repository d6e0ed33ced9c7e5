//! [`MrSampler`]: the MR Sampler's configuration and its compilation into a [`Plan`].

use std::sync::Arc;

use super::Sampler;
use super::run::{Plan, PlannedStep, Run, Target, Update};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization, convert_coefficients};
use crate::schedule::{Mode, ReferenceInterp, Schedule, TimeGrid, build_grid};
use crate::solver::{
    Node, SecondOrder, SolverType, multistep_coefficients, singlestep_coefficients,
    singlestep_fractions, unic_corrected_state,
};
use crate::tensor::{NoiseSource, Parallelism, SamplerTensor};

/// Dynamic thresholding of data predictions (spec §3.5, §9.2.8).
///
/// Per sample, `s = quantile(|x̂₀|, ratio)` clamped to `[floor, max]`, then
/// `x̂₀ ← clamp(x̂₀, −s, s)/s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholding {
    ratio: f64,
    max: f64,
    floor: f64,
}

impl Thresholding {
    /// `ratio ∈ [0, 1]` (reference default 0.995) and `max ≥ 1` (default 1.5); floor 1.
    pub fn new(ratio: f64, max: f64) -> Result<Self> {
        Self::with_bounds(ratio, 1.0, max)
    }

    /// Full control: the clamp of `s` is `[floor, max]` with `0 < floor ≤ max` (use a floor
    /// below 1 for data that does not live in `[−1, 1]`).
    pub fn with_bounds(ratio: f64, floor: f64, max: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::setting(
                "threshold_ratio",
                ratio,
                "must lie in [0, 1] (typically 0.995)",
            ));
        }
        if !(floor > 0.0 && floor.is_finite()) {
            return Err(Error::setting(
                "threshold_floor",
                floor,
                "must be finite and > 0",
            ));
        }
        if !(max >= floor && max.is_finite()) {
            return Err(Error::setting(
                "threshold_max",
                max,
                format!("must be finite and at least the floor {floor}"),
            ));
        }
        Ok(Self { ratio, max, floor })
    }

    /// The quantile ratio.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
    /// The upper clamp of `s`.
    pub fn max(&self) -> f64 {
        self.max
    }
    /// The lower clamp of `s`.
    pub fn floor(&self) -> f64 {
        self.floor
    }
}

impl Default for Thresholding {
    /// The reference's defaults: ratio 0.995, max 1.5, floor 1.
    fn default() -> Self {
        Self {
            ratio: 0.995,
            max: 1.5,
            floor: 1.0,
        }
    }
}

/// The MR Sampler (Li et al., ICLR 2025): exponential-integrator solvers of the MR
/// probability-flow ODE (orders 1–3) and reverse SDE (orders 1–2), in data or noise form.
///
/// Defaults (each has a `with_*` setter): [`Mode::Exact`], [`SolverType::Ode`] of order 2,
/// [`Parameterization::Data`], [`TimeGrid::Linspace`], no `lambda_min`, no thresholding,
/// no `denoise_last`, output clamped to `[0, 1]`.
///
/// ```
/// use mrsampler::{MrSampler, Sampler, SeededNoise, FitTarget, FnModel};
/// use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
/// use mrsampler::solver::SolverType;
/// use ndarray::ArrayD;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 10)?
///     .with_solver(SolverType::Sde, 2)?
///     .with_grid(TimeGrid::UniformLambda)?;
/// let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f32>, mu: &ArrayD<f32>, _t: f64| {
///     Ok((x - mu) * 0.0)
/// });
/// let mu = ArrayD::<f32>::from_elem(vec![1, 3, 8, 8], 0.5);
/// let out = sampler.sample(&mut net, &mu, None, &mut SeededNoise::new(42))?;
/// assert_eq!(out.stats.nfe, 10);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MrSampler {
    schedule: Arc<dyn Schedule>,
    num_steps: usize,
    mode: Mode,
    solver: SolverType,
    order: usize,
    parameterization: Parameterization,
    grid: TimeGrid,
    lambda_min: Option<f64>,
    thresholding: Option<Thresholding>,
    denoise_last: bool,
    output_clip: Option<(f64, f64)>,
    parallelism: Parallelism,
    taylor_third_order: bool,
    order_rule: OrderRule,
    corrector: bool,
    prior_correction: bool,
    stepping: Stepping,
    second_order: SecondOrder,
}

/// How the ODE solver spends its network evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stepping {
    /// One evaluation per grid step; higher orders reuse the outputs of earlier steps
    /// (DPM-Solver++(2M)/(3M) style, the MR Sampler's method; default).
    #[default]
    Multistep,
    /// Each grid step of order `p` spends `p` evaluations, at its start and at `p − 1`
    /// intermediate stages (λ-fractions ½, or ⅓ and ⅔), and reuses nothing across steps
    /// (DPM-Solver-2S/3S style). With `M` evaluations and order `p` the grid has about `M/p`
    /// steps. Exact-mode ODE only.
    Singlestep,
}

/// How exact mode chooses each step's order (the warm-up `min(P, k)` always applies).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum OrderRule {
    /// Lower orders at the end when `M < 15` (`min(P, k, M − k + 1)`), as DPM-Solver's
    /// `lower_order_final` (default).
    #[default]
    LowerOrderFinal,
    /// Full order on every step after the warm-up.
    Full,
    /// [`LowerOrderFinal`](Self::LowerOrderFinal), plus first order on any step whose
    /// λ-length exceeds `max_ratio` times the previous step's (an extrapolation far beyond the
    /// fitted nodes: the last steps of grids linear in t). Uniform-λ grids never trigger the
    /// extra rule, so their asymptotic order is kept. `docs/benchmarks.md` measures it.
    StepRatio {
        /// The largest allowed `h_k / h_{k−1}` (e.g. 2).
        max_ratio: f64,
    },
}

impl MrSampler {
    /// A sampler over `schedule` with `num_steps` network evaluations (≥ 1) and the defaults.
    pub fn new(schedule: impl Schedule + 'static, num_steps: usize) -> Result<Self> {
        Self::with_schedule(Arc::new(schedule), num_steps)
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn with_schedule(schedule: Arc<dyn Schedule>, num_steps: usize) -> Result<Self> {
        check_steps(num_steps)?;
        crate::schedule::validate(&*schedule)?;
        Ok(Self {
            schedule,
            num_steps,
            mode: Mode::Exact,
            solver: SolverType::Ode,
            order: 2,
            parameterization: Parameterization::Data,
            grid: TimeGrid::Linspace,
            lambda_min: None,
            thresholding: None,
            denoise_last: false,
            output_clip: Some((0.0, 1.0)),
            parallelism: Parallelism::default(),
            taylor_third_order: true,
            order_rule: OrderRule::default(),
            corrector: false,
            prior_correction: false,
            stepping: Stepping::Multistep,
            second_order: SecondOrder::Taylor,
        })
    }

    /// Number of steps `M` (= network evaluations, `denoise_last` included). For a
    /// [`TimeGrid::Custom`] grid this must equal its length − 1.
    pub fn with_num_steps(mut self, num_steps: usize) -> Result<Self> {
        check_steps(num_steps)?;
        if let TimeGrid::Custom(v) = &self.grid {
            if v.len() != num_steps + 1 {
                return Err(Error::setting(
                    "num_steps",
                    num_steps,
                    format!(
                        "the custom grid has {} times, i.e. {} steps",
                        v.len(),
                        v.len() - 1
                    ),
                ));
            }
        }
        self.num_steps = num_steps;
        Ok(self)
    }

    /// Fidelity mode (default [`Mode::Exact`]).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Solver type and order: ODE orders 1–3, SDE orders 1–2 (default ODE, 2).
    pub fn with_solver(mut self, solver: SolverType, order: usize) -> Result<Self> {
        let max = match solver {
            SolverType::Ode => 3,
            SolverType::Sde => 2,
        };
        if !(1..=max).contains(&order) {
            return Err(Error::setting(
                "order",
                order,
                format!("the {solver:?} solver supports orders 1 to {max}"),
            ));
        }
        self.solver = solver;
        self.order = order;
        Ok(self)
    }

    /// Solver parameterization (default [`Parameterization::Data`], the stable choice at
    /// few steps).
    pub fn with_parameterization(mut self, p: Parameterization) -> Self {
        self.parameterization = p;
        self
    }

    /// Time grid (default [`TimeGrid::Linspace`]). A custom grid also sets the step count.
    pub fn with_grid(mut self, grid: TimeGrid) -> Result<Self> {
        match &grid {
            TimeGrid::KarrasN { rho } | TimeGrid::KarrasT { rho }
                if !(*rho > 0.0 && rho.is_finite()) =>
            {
                return Err(Error::setting(
                    "rho",
                    rho,
                    "must be finite and > 0 (typically 7)",
                ));
            }
            TimeGrid::Leading { offset } if !offset.is_finite() => {
                return Err(Error::setting("timestep_offset", offset, "must be finite"));
            }
            TimeGrid::Custom(v) => {
                if v.len() < 2 {
                    return Err(Error::grid("a custom grid needs at least two times"));
                }
                if let Some(bad) = v.iter().find(|t| !t.is_finite()) {
                    return Err(Error::grid(format!(
                        "custom grid contains non-finite time {bad}"
                    )));
                }
                self.num_steps = v.len() - 1;
            }
            _ => {}
        }
        self.grid = grid;
        Ok(self)
    }

    /// Drops grid times whose `λ` is below `lambda_min` (default: none, i.e. `−∞`).
    pub fn with_lambda_min(mut self, lambda_min: Option<f64>) -> Result<Self> {
        if let Some(l) = lambda_min {
            if l.is_nan() {
                return Err(Error::setting(
                    "lambda_min",
                    l,
                    "must be a number (or None for −∞)",
                ));
            }
        }
        self.lambda_min = lambda_min.filter(|l| *l > f64::NEG_INFINITY);
        Ok(self)
    }

    /// Dynamic thresholding of data predictions (default off).
    pub fn with_thresholding(mut self, t: Option<Thresholding>) -> Self {
        self.thresholding = t;
        self
    }

    /// Replace the last step by returning the data prediction at `τ_{M−1}` (default off).
    pub fn with_denoise_last(mut self, on: bool) -> Self {
        self.denoise_last = on;
        self
    }

    /// Clamp applied to the returned sample (default `Some((0, 1))`, the image range).
    pub fn with_output_clip(mut self, clip: Option<(f64, f64)>) -> Result<Self> {
        self.output_clip = super::check_clip(clip)?;
        Ok(self)
    }

    /// Exact mode only: `true` (default) gives the third-order step its Taylor-consistent
    /// second-difference term `2φ₃·D2` (global order 3); `false` uses the half-size term of
    /// DPM-Solver++(3M) as implemented by the MR Sampler reference and by diffusers (global
    /// order 2, spec §3.7 item 9), for parity with them. Reference mode always uses the latter.
    pub fn with_taylor_third_order(mut self, on: bool) -> Self {
        self.taylor_third_order = on;
        self
    }

    /// The coefficient of the second-order multistep update (default [`SecondOrder::Taylor`],
    /// the MR Sampler's; [`SecondOrder::Midpoint`] is diffusers' default `solver_type`; exact
    /// mode only). Singlestep updates and the corrector always use the Taylor form.
    pub fn with_second_order(mut self, form: SecondOrder) -> Self {
        self.second_order = form;
        self
    }

    /// Adds a UniC corrector (Zhao et al., 2023) in the μ-shifted frame (default off; exact
    /// mode, data-form ODE only): each state is recomputed with the network output evaluated
    /// at it, at no extra network evaluation. Measured in `docs/benchmarks.md`.
    pub fn with_corrector(mut self, on: bool) -> Self {
        self.corrector = on;
        self
    }

    /// Corrects the prior's mean with the first network output (default off; takes effect in
    /// exact mode with the data parameterization, and has none otherwise).
    ///
    /// The prior `μ + σ(τ₀)·z` leaves out the term `α(τ₀)(x₀ − μ)` of the true marginal at
    /// `τ₀`. The correction adds `α(τ₀)(x̂₀ − μ)` to the start state, with `x̂₀` the data
    /// prediction of the first evaluation; it is folded into the first step's weights, so it
    /// costs no evaluation and no pass over memory. It matters for the deterministic (ODE)
    /// solvers, which carry the prior's error to the output (the SDEs forget it); the effect
    /// is measured in `docs/benchmarks.md`.
    ///
    /// The start state is taken to be a prior draw `μ + σ(τ₀)·z`, whether the sampler drew it
    /// or it was passed as `x_start`; turn the correction off for a start state that already
    /// holds the `α(τ₀)(x₀ − μ)` term (a draw of the exact marginal).
    pub fn with_prior_correction(mut self, on: bool) -> Self {
        self.prior_correction = on;
        self
    }

    /// Multistep (default) or singlestep updates; see [`Stepping`]. Singlestep needs exact
    /// mode, the ODE solver and a named grid, and does not combine with the corrector or
    /// `denoise_last`; the order rule does not apply to it (its block orders follow from the
    /// evaluation budget).
    pub fn with_stepping(mut self, stepping: Stepping) -> Self {
        self.stepping = stepping;
        self
    }

    /// Exact mode: how each step's order is chosen (default [`OrderRule::LowerOrderFinal`]).
    pub fn with_order_rule(mut self, rule: OrderRule) -> Result<Self> {
        if let OrderRule::StepRatio { max_ratio } = rule {
            if !(max_ratio >= 1.0 && max_ratio.is_finite()) {
                return Err(Error::setting(
                    "max_ratio",
                    max_ratio,
                    "must be finite and >= 1",
                ));
            }
        }
        self.order_rule = rule;
        Ok(self)
    }

    /// How the tensor kernels may split work across threads (default
    /// [`Parallelism::Rayon(0)`](Parallelism::Rayon): all of rayon's threads for large
    /// tensors). Results are bitwise identical for every setting.
    pub fn with_parallelism(mut self, par: Parallelism) -> Self {
        self.parallelism = par;
        self
    }

    /// The schedule being sampled.
    pub fn schedule(&self) -> &Arc<dyn Schedule> {
        &self.schedule
    }

    /// The schedule as the solver evaluates it: the schedule itself in exact mode, its
    /// [`ReferenceInterp`] view in reference mode. Analytic models that must agree with the
    /// sampler's own `α(t)`, `σ(t)` (the [`oracle`](crate::oracle) models) take this.
    pub fn model_schedule(&self) -> Result<Arc<dyn Schedule>> {
        Ok(match self.mode {
            Mode::Exact => self.schedule.clone(),
            Mode::Reference => Arc::new(ReferenceInterp::new(self.schedule.clone())?),
        })
    }

    /// The configured number of steps.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }
    /// The fidelity mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Solver type and order.
    pub fn solver(&self) -> (SolverType, usize) {
        (self.solver, self.order)
    }
    /// The solver parameterization.
    pub fn parameterization(&self) -> Parameterization {
        self.parameterization
    }
    /// The time grid.
    pub fn grid(&self) -> &TimeGrid {
        &self.grid
    }

    /// The grid `τ_0 > … > τ_M` this configuration samples on (for
    /// [`Stepping::Singlestep`], the outer grid of its steps, without the stages).
    pub fn timesteps(&self) -> Result<Vec<f64>> {
        let view = self.model_schedule()?;
        match self.stepping {
            Stepping::Multistep => build_grid(
                &self.grid,
                self.num_steps,
                self.lambda_min,
                self.mode,
                &*view,
            ),
            Stepping::Singlestep => Ok(self.singlestep_grid(&*view)?.0),
        }
    }

    /// Singlestep: the outer grid and the order of each of its steps. The `M` evaluations are
    /// split into steps of the configured order `p` (the remainder in one lower-order step; a
    /// remainder of 1 after order 3 becomes two order-2 steps); a last step into `σ = 0` is the
    /// one-evaluation limit step.
    fn singlestep_grid(&self, view: &dyn Schedule) -> Result<(Vec<f64>, Vec<usize>)> {
        if self.mode != Mode::Exact || self.solver != SolverType::Ode {
            return Err(Error::Unsupported {
                what: "singlestep updates are implemented for the exact-mode ODE solver".into(),
            });
        }
        if self.corrector {
            return Err(Error::Unsupported {
                what: "the UniC corrector is implemented for multistep updates; turn one off"
                    .into(),
            });
        }
        if matches!(self.grid, TimeGrid::Custom(_)) {
            return Err(Error::Unsupported {
                what: "singlestep chooses its step count from the evaluation budget; use a \
                       named grid (or multistep with the custom grid)"
                    .into(),
            });
        }
        if self.denoise_last {
            return Err(Error::Unsupported {
                what: "denoise_last is implemented for multistep updates; singlestep grids end \
                       with their own limit step where σ = 0"
                    .into(),
            });
        }
        let build = |k: usize| build_grid(&self.grid, k, self.lambda_min, self.mode, view);
        // Whether the grid ends in σ = 0 does not depend on its length.
        let end = build(1)?.last().copied().unwrap_or(f64::NAN);
        let limit = view.sigma(end) == 0.0;
        let budget = self.num_steps - usize::from(limit);
        let p = self.order;
        let mut blocks = vec![p; budget / p];
        match budget % p {
            0 => {}
            1 if p == 3 && !blocks.is_empty() => {
                blocks.pop();
                blocks.extend([2, 2]);
            }
            r => blocks.push(r),
        }
        if limit {
            blocks.push(1);
        }
        let tau = build(blocks.len())?;
        if tau.len() != blocks.len() + 1 {
            // Reachable with lambda_min clipping on short schedules.
            return Err(Error::grid(format!(
                "the {} grid gave {} steps where singlestep needs {}; change lambda_min or the \
                 step count",
                self.grid.name(),
                tau.len() - 1,
                blocks.len()
            )));
        }
        Ok((tau, blocks))
    }

    /// Orders per step (spec §3.3 reference rule, §9.2.3 exact rule).
    #[cfg(test)]
    fn orders(&self, m: usize) -> Vec<usize> {
        self.orders_for(m, &[])
    }

    /// Orders per step; `lambdas` (the grid's λ, `M + 1` values) is read by
    /// [`OrderRule::StepRatio`].
    fn orders_for(&self, m: usize, lambdas: &[f64]) -> Vec<usize> {
        let p = self.order;
        (1..=m)
            .map(|k| match self.mode {
                Mode::Reference => {
                    if k < p {
                        k
                    } else if k < m && m < 10 {
                        p.min(m - k)
                    } else {
                        p
                    }
                }
                Mode::Exact => {
                    let o = p.min(k);
                    match self.order_rule {
                        OrderRule::LowerOrderFinal => {
                            if m < 15 {
                                o.min(m - k + 1)
                            } else {
                                o
                            }
                        }
                        OrderRule::Full => o,
                        OrderRule::StepRatio { max_ratio } => {
                            // The lower-order-final rule, plus: an extrapolation over a step much
                            // longer (in λ) than the previous one falls back to first order.
                            let o = if m < 15 { o.min(m - k + 1) } else { o };
                            let ratio = if k >= 2 && lambdas.len() > k {
                                (lambdas[k] - lambdas[k - 1]) / (lambdas[k - 1] - lambdas[k - 2])
                            } else {
                                1.0
                            };
                            if ratio > max_ratio { 1 } else { o }
                        }
                    }
                }
            })
            .collect()
    }

    /// Folds the UniC correction of each state into the next step's weights: the state after
    /// step k−1 is corrected with the output `m_{k−1}` evaluated there, which step k has anyway,
    /// so the correction costs no network evaluation. The last state is not corrected.
    fn fold_corrections(&self, steps: &mut [PlannedStep], nodes: &[Node]) -> Result<()> {
        if self.mode != Mode::Exact
            || self.solver != SolverType::Ode
            || self.parameterization != Parameterization::Data
        {
            return Err(Error::Unsupported {
                what: "the UniC corrector is implemented for the exact-mode data-form ODE solver"
                    .into(),
            });
        }
        // The predictor weights, before any folding.
        let original: Vec<PlannedStep> = steps.to_vec();
        for k in 2..=steps.len() {
            let (prev, cur) = (original[k - 2], original[k - 1]);
            let (
                Update::Linear { coeffs: p, .. },
                Update::Linear {
                    coeffs: mut c,
                    target,
                    reuse_noise,
                },
            ) = (prev.update, cur.update)
            else {
                continue;
            };
            // The state after step k−1 went from node k−2 to node k−1 with order `prev.order`.
            let order = prev.order.clamp(1, 3);
            let earlier: Vec<Node> = (0..order).map(|j| nodes[k - 2 - j]).collect();
            let (_, w, mu_c) = unic_corrected_state(order, nodes[k - 1], &earlier);
            // δ = x^c − x^p, on [m_{k−1}, m_{k−2}, …] (history slots 0, 1, …) and μ.
            let a = c.x;
            c.q[0] += a * w[0];
            for (i, (cq, wi)) in c.q.iter_mut().zip(w).enumerate().skip(1) {
                *cq += a * (wi - p.q[i - 1]);
            }
            c.mu += a * (mu_c - p.mu);
            steps[k - 1].update = Update::Linear {
                coeffs: c,
                target,
                reuse_noise,
            };
        }
        Ok(())
    }

    /// Compiles the configuration for a network trained on `fit`.
    pub(crate) fn plan(&self, fit: FitTarget) -> Result<Plan> {
        check_fit(fit, &*self.schedule)?;
        if self.stepping == Stepping::Singlestep {
            return self.plan_singlestep(fit);
        }
        let view = self.model_schedule()?;
        let tau = build_grid(
            &self.grid,
            self.num_steps,
            self.lambda_min,
            self.mode,
            &*view,
        )?;
        let m = tau.len() - 1;
        if self.mode == Mode::Reference && self.second_order != SecondOrder::Taylor {
            return Err(Error::Unsupported {
                what: "the reference implementation has the Taylor second-order form only; use \
                       exact mode for the midpoint form"
                    .into(),
            });
        }
        if self.mode == Mode::Reference && m < self.order {
            return Err(Error::TooFewSteps {
                steps: m,
                order: self.order,
            });
        }
        let exact = self.mode == Mode::Exact;
        let si = view.sigma_inf();
        let nodes: Vec<Node> = tau
            .iter()
            .map(|&t| Node {
                alpha: view.alpha(t),
                sigma: view.sigma(t),
                lambda: view.lambda(t),
            })
            .collect();
        let lambdas: Vec<f64> = nodes.iter().map(|n| n.lambda).collect();
        let orders = self.orders_for(m, &lambdas);
        let param = self.parameterization;
        let thresh_q = self.thresholding.is_some() && (!exact || param == Parameterization::Data);
        let thresh_x0 = self.thresholding.is_some();
        let mut steps = Vec::with_capacity(m);
        for k in 1..=m {
            let s = nodes[k - 1];
            let convert = convert_coefficients(fit, param, s.alpha, s.sigma, si);
            let to_data = convert_coefficients(fit, Parameterization::Data, s.alpha, s.sigma, si);
            let limit = exact && nodes[k].sigma == 0.0;
            let (update, order) = if k == m && self.denoise_last {
                let update = if exact {
                    Update::Replace {
                        convert: to_data,
                        threshold: thresh_x0,
                    }
                } else {
                    Update::Replace {
                        convert,
                        threshold: thresh_q,
                    }
                };
                (update, 0)
            } else if limit {
                let update = Update::Replace {
                    convert: to_data,
                    threshold: thresh_x0,
                };
                (update, 1)
            } else {
                let order = orders[k - 1];
                let history: Vec<Node> = (0..order).map(|j| nodes[k - 1 - j]).collect();
                let coeffs = multistep_coefficients(
                    self.solver,
                    param,
                    order,
                    nodes[k],
                    &history,
                    exact && self.taylor_third_order,
                    self.second_order,
                );
                let update = Update::Linear {
                    coeffs,
                    target: Target::State,
                    reuse_noise: false,
                };
                (update, order)
            };
            steps.push(PlannedStep {
                t_eval: tau[k - 1],
                t_next: tau[k],
                convert,
                to_data,
                threshold: thresh_q,
                update,
                order,
            });
        }
        if self.corrector {
            self.fold_corrections(&mut steps, &nodes)?;
        }
        let first = steps.len().min(1);
        self.correct_prior(&mut steps[..first], nodes[0].alpha);
        let prior_std = if exact { view.sigma(tau[0]) } else { si };
        Ok(self.finish_plan(
            tau,
            steps,
            prior_std,
            self.order + usize::from(self.corrector),
        ))
    }

    fn finish_plan(
        &self,
        timesteps: Vec<f64>,
        steps: Vec<PlannedStep>,
        prior_std: f64,
        history: usize,
    ) -> Plan {
        let t = self.thresholding.unwrap_or_default();
        Plan {
            timesteps,
            steps,
            prior_std,
            output_clip: self.output_clip,
            thresholding: (t.ratio, t.floor, t.max),
            history,
            parallelism: self.parallelism,
        }
    }

    /// [`Stepping::Singlestep`]: each outer step of order `p` becomes `p` planned evaluations,
    /// the first `p − 1` writing the stages.
    fn plan_singlestep(&self, fit: FitTarget) -> Result<Plan> {
        let view = self.model_schedule()?;
        let (tau, blocks) = self.singlestep_grid(&*view)?;
        let si = view.sigma_inf();
        let param = self.parameterization;
        let node = |t: f64| Node {
            alpha: view.alpha(t),
            sigma: view.sigma(t),
            lambda: view.lambda(t),
        };
        let thresh_q = self.thresholding.is_some() && param == Parameterization::Data;
        let thresh_x0 = self.thresholding.is_some();
        let mut steps = Vec::with_capacity(self.num_steps);
        for (k, &order) in blocks.iter().enumerate() {
            let (s, t) = (node(tau[k]), node(tau[k + 1]));
            let planned = |t_eval: f64, t_next: f64, update: Update| {
                let n = node(t_eval);
                PlannedStep {
                    t_eval,
                    t_next,
                    convert: convert_coefficients(fit, param, n.alpha, n.sigma, si),
                    to_data: convert_coefficients(
                        fit,
                        Parameterization::Data,
                        n.alpha,
                        n.sigma,
                        si,
                    ),
                    threshold: thresh_q,
                    update,
                    order,
                }
            };
            if t.sigma == 0.0 {
                // The limit step into σ = 0: the state becomes the data prediction.
                let to_data =
                    convert_coefficients(fit, Parameterization::Data, s.alpha, s.sigma, si);
                steps.push(planned(
                    tau[k],
                    tau[k + 1],
                    Update::Replace {
                        convert: to_data,
                        threshold: thresh_x0,
                    },
                ));
                continue;
            }
            let h = t.lambda - s.lambda;
            let stage_times: Vec<f64> = singlestep_fractions(order)
                .iter()
                .map(|r| view.t_of_lambda(s.lambda + r * h))
                .collect();
            let stages: Vec<Node> = stage_times.iter().map(|&u| node(u)).collect();
            let coeffs = singlestep_coefficients(param, order, s, &stages, t);
            let evals = std::iter::once(tau[k]).chain(stage_times.iter().copied());
            let nexts = stage_times
                .iter()
                .copied()
                .chain(std::iter::once(tau[k + 1]));
            for (j, ((t_eval, t_next), c)) in evals.zip(nexts).zip(coeffs).enumerate() {
                let target = if j + 1 < order {
                    Target::Stage
                } else {
                    Target::State
                };
                steps.push(planned(
                    t_eval,
                    t_next,
                    Update::Linear {
                        coeffs: c,
                        target,
                        reuse_noise: false,
                    },
                ));
            }
        }
        let first = blocks.first().copied().unwrap_or(0);
        self.correct_prior(&mut steps[..first], view.alpha(tau[0]));
        let history = blocks.iter().copied().max().unwrap_or(1);
        let prior_std = view.sigma(tau[0]);
        Ok(self.finish_plan(tau, steps, prior_std, history))
    }

    /// With [`with_prior_correction`](Self::with_prior_correction) on: substitutes the
    /// corrected start state `x + α₀(q₀ − μ)` (with `q₀ = x̂₀`, the first converted output)
    /// into the weights of the updates that read the start state: `updates[j]` follows the
    /// `j + 1`-th evaluation, so the first output sits in its history slot `j`.
    fn correct_prior(&self, updates: &mut [PlannedStep], alpha0: f64) {
        if !self.prior_correction
            || self.mode != Mode::Exact
            || self.parameterization != Parameterization::Data
        {
            return;
        }
        for (j, u) in updates.iter_mut().enumerate() {
            // A first step straight to the data prediction does not read the state.
            if let Update::Linear { coeffs, .. } = &mut u.update {
                coeffs.q[j] += coeffs.x * alpha0;
                coeffs.mu -= coeffs.x * alpha0;
            }
        }
    }
}

/// Velocity targets need a finite `σ∞` (variance-exploding schedules have none).
pub(crate) fn check_fit(fit: FitTarget, schedule: &dyn Schedule) -> Result<()> {
    if fit == FitTarget::Velocity && !schedule.sigma_inf().is_finite() {
        return Err(Error::Unsupported {
            what: "a velocity fit target needs a finite stationary std σ∞; this schedule is \
                   variance-exploding (σ∞ = ∞): use a noise, data or score network"
                .into(),
        });
    }
    Ok(())
}

fn check_steps(n: usize) -> Result<()> {
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

impl<T: SamplerTensor> Sampler<T> for MrSampler {
    fn start<N: NoiseSource<T>>(
        &self,
        fit: FitTarget,
        mu: &T,
        x_start: Option<T>,
        noise: &mut N,
    ) -> Result<Run<T>> {
        Run::new(self.plan(fit)?, mu, x_start, noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::IrSdeSchedule;

    fn sampler(m: usize) -> MrSampler {
        MrSampler::new(IrSdeSchedule::da_clip(), m).unwrap()
    }

    #[test]
    fn reference_order_rule() {
        let s = sampler(5)
            .with_mode(Mode::Reference)
            .with_solver(SolverType::Ode, 2)
            .unwrap();
        assert_eq!(s.orders(5), vec![1, 2, 2, 1, 2]);
        let s = s.with_solver(SolverType::Ode, 3).unwrap();
        assert_eq!(s.orders(5), vec![1, 2, 2, 1, 3]);
        assert_eq!(s.orders(10), vec![1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn exact_order_rule() {
        let s = sampler(5).with_solver(SolverType::Ode, 3).unwrap();
        assert_eq!(s.orders(5), vec![1, 2, 3, 2, 1]);
        assert_eq!(s.orders(2), vec![1, 1]);
        assert_eq!(s.orders(1), vec![1]);
        assert_eq!(s.orders(15)[14], 3);
        assert_eq!(s.orders(14)[13], 1);
    }

    /// The step-ratio rule lowers the order of the long last λ-steps of a linspace-in-t grid
    /// and leaves a uniform-λ grid at full order.
    #[test]
    fn step_ratio_order_rule() {
        let rule = OrderRule::StepRatio { max_ratio: 2.0 };
        let lin = sampler(20).with_order_rule(rule).unwrap();
        let orders = lin
            .plan(FitTarget::Noise)
            .unwrap()
            .steps
            .iter()
            .map(|s| s.order)
            .collect::<Vec<_>>();
        assert_eq!(orders[..3], [1, 2, 2]);
        assert_eq!(*orders.last().unwrap(), 1, "{orders:?}");
        let ul = lin.clone().with_grid(TimeGrid::UniformLambda).unwrap();
        let orders = ul
            .plan(FitTarget::Noise)
            .unwrap()
            .steps
            .iter()
            .map(|s| s.order)
            .collect::<Vec<_>>();
        assert!(orders[1..].iter().all(|&o| o == 2), "{orders:?}");
        assert!(
            sampler(5)
                .with_order_rule(OrderRule::StepRatio { max_ratio: 0.5 })
                .is_err()
        );
    }

    /// Singlestep spends exactly M evaluations: blocks of the configured order, a lower-order
    /// remainder, and the limit step where the grid ends at σ = 0.
    #[test]
    fn singlestep_blocks_spend_the_budget() {
        use crate::schedule::CumulativeFrom;
        for from in [CumulativeFrom::Zero, CumulativeFrom::One] {
            let sch = IrSdeSchedule::da_clip().with_cumulative_from(from);
            let limit = from == CumulativeFrom::One;
            for order in 1..=3 {
                for m in 1..=12 {
                    let s = MrSampler::new(sch.clone(), m)
                        .unwrap()
                        .with_solver(SolverType::Ode, order)
                        .unwrap()
                        .with_stepping(Stepping::Singlestep);
                    let plan = s.plan(FitTarget::Noise).unwrap();
                    assert_eq!(plan.steps.len(), m, "order {order}, M = {m}");
                    let blocks = s.singlestep_grid(&*s.model_schedule().unwrap()).unwrap().1;
                    assert_eq!(blocks.iter().sum::<usize>(), m);
                    assert!(blocks.iter().all(|&b| (1..=order).contains(&b)));
                    assert_eq!(plan.timesteps, s.timesteps().unwrap());
                    assert_eq!(plan.timesteps.len(), blocks.len() + 1);
                    if limit {
                        assert_eq!(*blocks.last().unwrap(), 1);
                    }
                    // Evaluation times never increase.
                    assert!(plan.steps.windows(2).all(|w| w[0].t_eval >= w[1].t_eval));
                }
            }
        }
        let s = sampler(9).with_solver(SolverType::Ode, 3).unwrap();
        let s = s.with_stepping(Stepping::Singlestep);
        assert_eq!(
            s.singlestep_grid(&*s.model_schedule().unwrap()).unwrap().1,
            vec![3, 3, 3]
        );
        let s = s.with_num_steps(10).unwrap();
        assert_eq!(
            s.singlestep_grid(&*s.model_schedule().unwrap()).unwrap().1,
            vec![3, 3, 2, 2]
        );
        for bad in [
            sampler(6).with_mode(Mode::Reference),
            sampler(6).with_solver(SolverType::Sde, 2).unwrap(),
            sampler(6).with_corrector(true),
            sampler(6).with_denoise_last(true),
            sampler(6)
                .with_grid(TimeGrid::Custom(vec![100.0, 50.0, 0.0]))
                .unwrap(),
        ] {
            let e = bad
                .with_stepping(Stepping::Singlestep)
                .plan(FitTarget::Noise);
            assert!(matches!(e, Err(Error::Unsupported { .. })), "{e:?}");
        }
    }

    #[test]
    fn corrector_needs_the_data_form_ode() {
        let s = sampler(10).with_corrector(true);
        assert!(s.plan(FitTarget::Noise).is_ok());
        let sde = s.clone().with_solver(SolverType::Sde, 2).unwrap();
        assert!(matches!(
            sde.plan(FitTarget::Noise),
            Err(Error::Unsupported { .. })
        ));
        let noise = s.with_parameterization(Parameterization::Noise);
        assert!(matches!(
            noise.plan(FitTarget::Noise),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(MrSampler::new(IrSdeSchedule::da_clip(), 0).is_err());
        assert!(sampler(10).with_solver(SolverType::Sde, 3).is_err());
        assert!(matches!(
            sampler(10)
                .with_mode(Mode::Reference)
                .with_second_order(SecondOrder::Midpoint)
                .plan(FitTarget::Noise),
            Err(Error::Unsupported { .. })
        ));
        assert!(sampler(10).with_solver(SolverType::Ode, 0).is_err());
        assert!(sampler(10).with_solver(SolverType::Ode, 4).is_err());
        assert!(
            sampler(10)
                .with_grid(TimeGrid::KarrasN { rho: 0.0 })
                .is_err()
        );
        assert!(sampler(10).with_grid(TimeGrid::Custom(vec![1.0])).is_err());
        assert!(sampler(10).with_lambda_min(Some(f64::NAN)).is_err());
        assert!(sampler(10).with_output_clip(Some((1.0, 0.0))).is_err());
        assert!(Thresholding::new(1.5, 1.5).is_err());
        assert!(Thresholding::new(0.9, 0.5).is_err());
        assert!(Thresholding::with_bounds(0.9, 0.0, 1.0).is_err());
        assert!(Thresholding::with_bounds(0.9, 0.5, 0.8).is_ok());
        let custom = sampler(10)
            .with_grid(TimeGrid::Custom(vec![100.0, 50.0, 0.0]))
            .unwrap();
        assert_eq!(custom.num_steps(), 2);
        assert!(custom.clone().with_num_steps(3).is_err());
        let e = sampler(2)
            .with_mode(Mode::Reference)
            .with_solver(SolverType::Ode, 3)
            .unwrap()
            .plan(FitTarget::Noise);
        assert!(matches!(e, Err(Error::TooFewSteps { steps: 2, order: 3 })));
    }

    /// NFE equals M for every grid, order and mode, denoise_last included (spec §7.10).
    #[test]
    fn nfe_per_configuration() {
        for mode in [Mode::Exact, Mode::Reference] {
            for (solver, order) in [
                (SolverType::Ode, 1),
                (SolverType::Ode, 2),
                (SolverType::Ode, 3),
                (SolverType::Sde, 1),
                (SolverType::Sde, 2),
            ] {
                for grid in [
                    TimeGrid::Linspace,
                    TimeGrid::KarrasN { rho: 7.0 },
                    TimeGrid::KarrasT { rho: 7.0 },
                    TimeGrid::UniformLambda,
                    TimeGrid::Leading { offset: 0.0 },
                ] {
                    for m in [3, 5, 10, 20] {
                        for dl in [false, true] {
                            let s = sampler(m)
                                .with_mode(mode)
                                .with_solver(solver, order)
                                .unwrap()
                                .with_grid(grid.clone())
                                .unwrap()
                                .with_denoise_last(dl);
                            let plan = s.plan(FitTarget::Noise).unwrap();
                            assert_eq!(
                                plan.steps.len(),
                                m,
                                "{mode:?} {solver:?}{order} {grid:?} {m}"
                            );
                            assert_eq!(plan.timesteps.len(), m + 1);
                        }
                    }
                }
            }
        }
        // Reference trailing at M = 28 has one extra step (spec §3.7 item 5).
        let s = sampler(28)
            .with_mode(Mode::Reference)
            .with_grid(TimeGrid::Trailing)
            .unwrap();
        assert_eq!(s.plan(FitTarget::Noise).unwrap().steps.len(), 29);
        let s = s.with_mode(Mode::Exact);
        assert_eq!(s.plan(FitTarget::Noise).unwrap().steps.len(), 28);
    }
}
