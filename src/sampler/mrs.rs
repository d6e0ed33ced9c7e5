//! [`MrSampler`]: the MR Sampler's configuration. [`plan`](crate::plan) compiles it.

use std::sync::Arc;

use super::Sampler;
use crate::config::{Mode, OdeMultistep, Solver, Thresholding, check_data_range};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::plan::Plan;
use crate::schedule::{Schedule, TimeGrid, build_grid};
use crate::solver::{SecondOrder, ThirdOrder};
use crate::tensor::Parallelism;

/// The MR Sampler (Li et al., ICLR 2025): exponential-integrator solvers of the MR
/// probability-flow ODE (orders 1–3) and reverse SDE (orders 1–2), in data or noise form.
///
/// Defaults (each has a `with_*` setter, and every setter checks the whole configuration, so
/// an option that does not apply is an error naming it): [`Mode::Exact`], [`Solver::ode`]`(2)`,
/// [`Parameterization::Data`], [`TimeGrid::Linspace`], no `lambda_min`, no thresholding, no
/// `denoise_last`, no prior correction, no data range (the output is not clamped).
///
/// ```
/// use mrsampler::prelude::*;
/// use ndarray::ArrayD;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 10)?
///     .with_solver(Solver::sde(2))?
///     .with_grid(TimeGrid::UniformLambda)?
///     .with_data_range(Some((0.0, 1.0)))?;
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
    pub(crate) schedule: Arc<dyn Schedule>,
    pub(crate) num_steps: usize,
    pub(crate) mode: Mode,
    pub(crate) solver: Solver,
    pub(crate) parameterization: Parameterization,
    pub(crate) grid: TimeGrid,
    pub(crate) lambda_min: Option<f64>,
    pub(crate) thresholding: Option<Thresholding>,
    pub(crate) denoise_last: bool,
    pub(crate) prior_correction: bool,
    pub(crate) data_range: Option<(f64, f64)>,
    pub(crate) parallelism: Parallelism,
}

impl MrSampler {
    /// A sampler over `schedule` with `num_steps` network evaluations (≥ 1) and the defaults.
    pub fn new(schedule: impl Schedule + 'static, num_steps: usize) -> Result<Self> {
        Self::from_arc(Arc::new(schedule), num_steps)
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn from_arc(schedule: Arc<dyn Schedule>, num_steps: usize) -> Result<Self> {
        crate::schedule::validate(&*schedule)?;
        Self {
            schedule,
            num_steps,
            mode: Mode::Exact,
            solver: Solver::default(),
            parameterization: Parameterization::Data,
            grid: TimeGrid::Linspace,
            lambda_min: None,
            thresholding: None,
            denoise_last: false,
            prior_correction: false,
            data_range: None,
            parallelism: Parallelism::default(),
        }
        .validate()
    }

    /// Number of steps `M` (= network evaluations, `denoise_last` included). For a
    /// [`TimeGrid::Custom`] grid this must equal its length − 1.
    pub fn with_num_steps(self, num_steps: usize) -> Result<Self> {
        Self { num_steps, ..self }.validate()
    }

    /// Fidelity mode (default [`Mode::Exact`]).
    pub fn with_mode(self, mode: Mode) -> Result<Self> {
        Self { mode, ..self }.validate()
    }

    /// The solver and its knobs (default [`Solver::ode`]`(2)`): ODE orders 1–3 (multistep or
    /// singlestep), SDE orders 1–2.
    pub fn with_solver(self, solver: impl Into<Solver>) -> Result<Self> {
        Self {
            solver: solver.into(),
            ..self
        }
        .validate()
    }

    /// Solver parameterization (default [`Parameterization::Data`], the stable choice at
    /// few steps).
    pub fn with_parameterization(self, parameterization: Parameterization) -> Result<Self> {
        Self {
            parameterization,
            ..self
        }
        .validate()
    }

    /// Time grid (default [`TimeGrid::Linspace`]). A custom grid also sets the step count.
    pub fn with_grid(self, grid: TimeGrid) -> Result<Self> {
        let num_steps = match &grid {
            TimeGrid::Custom(v) if v.len() >= 2 => v.len() - 1,
            _ => self.num_steps,
        };
        Self {
            grid,
            num_steps,
            ..self
        }
        .validate()
    }

    /// Drops grid times whose `λ` is below `lambda_min` (default: none, i.e. `−∞`).
    pub fn with_lambda_min(self, lambda_min: Option<f64>) -> Result<Self> {
        if let Some(l) = lambda_min
            && l.is_nan()
        {
            return Err(Error::setting(
                "lambda_min",
                l,
                "must be a number (or None for −∞)",
            ));
        }
        Self {
            lambda_min: lambda_min.filter(|l| *l > f64::NEG_INFINITY),
            ..self
        }
        .validate()
    }

    /// Dynamic thresholding of data predictions (default off).
    pub fn with_thresholding(self, thresholding: Option<Thresholding>) -> Result<Self> {
        Self {
            thresholding,
            ..self
        }
        .validate()
    }

    /// Replace the last step by returning the data prediction at `τ_{M−1}` (default off;
    /// multistep solvers).
    pub fn with_denoise_last(self, denoise_last: bool) -> Result<Self> {
        Self {
            denoise_last,
            ..self
        }
        .validate()
    }

    /// The range `(lo, hi)` of the data the network was trained on: the returned sample is
    /// clamped to it (default `None`: no clamp). IR-SDE and DA-CLIP images live in `(0, 1)`.
    pub fn with_data_range(self, range: Option<(f64, f64)>) -> Result<Self> {
        let data_range = check_data_range(range)?;
        Self { data_range, ..self }.validate()
    }

    /// Corrects the prior's mean with the first network output (default off; exact mode with
    /// the data parameterization).
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
    pub fn with_prior_correction(self, prior_correction: bool) -> Result<Self> {
        Self {
            prior_correction,
            ..self
        }
        .validate()
    }

    /// How the tensor kernels may split work across threads (default
    /// [`Parallelism::Rayon(0)`](Parallelism::Rayon): all of rayon's threads for large
    /// tensors). Results are bitwise identical for every setting.
    pub fn with_parallelism(self, parallelism: Parallelism) -> Result<Self> {
        Self {
            parallelism,
            ..self
        }
        .validate()
    }

    /// The schedule being sampled.
    pub fn schedule(&self) -> &Arc<dyn Schedule> {
        &self.schedule
    }

    /// The schedule as the solver evaluates it: the schedule itself in exact mode, its
    /// [`ReferenceInterp`](crate::schedule::ReferenceInterp) view in reference mode. Analytic models that must agree with the
    /// sampler's own `α(t)`, `σ(t)` (the [`oracle`](crate::oracle) models) take this.
    pub fn model_schedule(&self) -> Result<Arc<dyn Schedule>> {
        self.settings().model_schedule()
    }

    /// The configured number of steps.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }
    /// The fidelity mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The solver and its knobs.
    pub fn solver(&self) -> &Solver {
        &self.solver
    }
    /// The solver parameterization.
    pub fn parameterization(&self) -> Parameterization {
        self.parameterization
    }
    /// The time grid.
    pub fn grid(&self) -> &TimeGrid {
        &self.grid
    }
    /// The data range the output is clamped to.
    pub fn data_range(&self) -> Option<(f64, f64)> {
        self.data_range
    }

    /// The grid `τ_0 > … > τ_M` this configuration samples on (for a singlestep solver, the
    /// outer grid of its steps, without the stages).
    pub fn timesteps(&self) -> Result<Vec<f64>> {
        let view = self.model_schedule()?;
        match self.solver {
            Solver::OdeSinglestep { .. } => {
                Ok(crate::plan::singlestep::grid(&self.settings(), &*view)?.0)
            }
            _ => build_grid(
                &self.grid,
                self.num_steps,
                self.lambda_min,
                self.mode,
                &*view,
            ),
        }
    }

    /// Every rule between settings, run by every constructor and setter.
    /// The checks of each setting on its own (a setter's): the combination is checked once, by
    /// [`check_combination`](Self::check_combination) when planning, so the order the setters
    /// are called in never matters.
    fn validate(self) -> Result<Self> {
        super::check_steps(self.num_steps)?;
        self.solver.validate()?;
        self.grid.validate()?;
        Ok(self)
    }

    /// Checks the settings together, as [`plan`](Sampler::plan) does: the setters check each
    /// setting on its own, so they can be called in any order, and a combination that does
    /// not work (e.g. the UniC corrector with the noise form) is refused here or when
    /// planning, with an [`Error::Conflict`] naming both settings.
    ///
    /// # Errors
    /// [`Error::Conflict`], [`Error::InvalidSetting`] or [`Error::ScheduleMismatch`].
    pub fn check(self) -> Result<Self> {
        self.check_combination()?;
        Ok(self)
    }

    /// See [`check`](Self::check).
    fn check_combination(&self) -> Result<()> {
        if let TimeGrid::Custom(v) = &self.grid {
            if v.len() != self.num_steps + 1 {
                return Err(Error::setting(
                    "num_steps",
                    self.num_steps,
                    format!(
                        "the custom grid has {} times, i.e. {} steps",
                        v.len(),
                        v.len() - 1
                    ),
                ));
            }
            if let Some(l) = self.lambda_min {
                return Err(Error::conflict(
                    format!("lambda_min = {l}"),
                    "grid = Custom",
                    "a custom grid is used as given; clip it yourself or set lambda_min to None",
                ));
            }
        }
        if let (Some(l), TimeGrid::KarrasN { .. } | TimeGrid::KarrasT { .. }) =
            (self.lambda_min, &self.grid)
        {
            return Err(Error::conflict(
                format!("lambda_min = {l}"),
                format!("grid = {}", self.grid.name()),
                "the Karras grids span the whole schedule (as the reference's do); set \
                 lambda_min to None or use a grid that it clips",
            ));
        }
        let solver = &self.solver;
        let data = self.parameterization == Parameterization::Data;
        match self.mode {
            Mode::Reference => {
                let refuse = |setting: &str| {
                    Err(Error::conflict(
                        setting,
                        "mode = Reference",
                        "the reference implementation has no such option; use exact mode",
                    ))
                };
                if self.schedule.knots().is_none() {
                    return Err(Error::ScheduleMismatch {
                        needs: "integer-index knots (reference mode interpolates between them)",
                        fix: "use a discrete schedule such as IrSdeSchedule, or exact mode",
                    });
                }
                if matches!(solver, Solver::OdeSinglestep { .. }) {
                    return refuse("solver = OdeSinglestep");
                }
                if solver.second_order() == Some(SecondOrder::Midpoint) {
                    return refuse("second_order = Midpoint");
                }
                if solver.order_rule().is_some() {
                    return refuse("order_rule");
                }
                if let Solver::Ode(o) = solver {
                    if o.corrector {
                        return refuse("corrector");
                    }
                    if o.third_order == Some(ThirdOrder::Taylor) {
                        return refuse("third_order = Taylor");
                    }
                }
                if self.prior_correction {
                    return refuse("prior_correction");
                }
            }
            Mode::Exact => {
                let corrector = matches!(
                    solver,
                    Solver::Ode(OdeMultistep {
                        corrector: true,
                        ..
                    })
                );
                if corrector && !data {
                    return Err(Error::conflict(
                        "corrector",
                        "parameterization = Noise",
                        "the UniC corrector is derived for the data parameterization",
                    ));
                }
                if self.prior_correction && !data {
                    return Err(Error::conflict(
                        "prior_correction",
                        "parameterization = Noise",
                        "the correction uses the first output as a data prediction; use the data \
                         parameterization",
                    ));
                }
                if self.thresholding.is_some() && !self.has_data_predictions_to_threshold() {
                    return Err(Error::conflict(
                        "thresholding",
                        "parameterization = Noise",
                        "exact mode thresholds data predictions only, and this noise-form pass \
                         has none (no denoise_last, no limit step into σ = 0); use the data \
                         parameterization or turn thresholding off",
                    ));
                }
            }
        }
        if matches!(solver, Solver::OdeSinglestep { .. }) {
            if matches!(self.grid, TimeGrid::Custom(_)) {
                return Err(Error::conflict(
                    "solver = OdeSinglestep",
                    "grid = Custom",
                    "singlestep chooses its step count from the evaluation budget; use a named \
                     grid, or a multistep solver with the custom grid",
                ));
            }
            if self.denoise_last {
                return Err(Error::conflict(
                    "solver = OdeSinglestep",
                    "denoise_last",
                    "singlestep grids end with their own limit step where σ = 0; turn \
                     denoise_last off",
                ));
            }
        }
        Ok(())
    }

    /// Whether a pass has a data prediction thresholding could act on: exact mode thresholds
    /// data predictions only, so with the noise form only a last step that returns one
    /// (`denoise_last`, the limit step into `σ = 0`).
    pub(crate) fn has_data_predictions_to_threshold(&self) -> bool {
        let sch = &self.schedule;
        self.mode == Mode::Reference
            || self.parameterization == Parameterization::Data
            || self.denoise_last
            || sch.sigma(sch.t_min()) == 0.0
    }

    /// The settings the planner reads (a copy: the planner sits below the samplers).
    pub(crate) fn settings(&self) -> crate::plan::settings::MrsSettings {
        crate::plan::settings::MrsSettings {
            schedule: self.schedule.clone(),
            num_steps: self.num_steps,
            mode: self.mode,
            solver: self.solver,
            parameterization: self.parameterization,
            grid: self.grid.clone(),
            lambda_min: self.lambda_min,
            thresholding: self.thresholding,
            denoise_last: self.denoise_last,
            prior_correction: self.prior_correction,
            data_range: self.data_range,
            parallelism: self.parallelism,
        }
    }
}

impl Sampler for MrSampler {
    fn plan(&self, fit: FitTarget) -> Result<Plan> {
        self.check_combination()?;
        crate::plan::check_fit(fit, &*self.schedule)?;
        let settings = self.settings();
        match self.solver {
            Solver::OdeSinglestep { .. } => crate::plan::singlestep::plan(&settings, fit),
            _ => crate::plan::multistep::plan(&settings, fit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OrderRule;
    use crate::schedule::IrSdeSchedule;

    fn sampler(m: usize) -> MrSampler {
        MrSampler::new(IrSdeSchedule::da_clip(), m).unwrap()
    }

    fn orders(s: &MrSampler) -> Vec<usize> {
        s.plan(FitTarget::Noise)
            .unwrap()
            .orders()
            .unwrap()
            .collect()
    }

    /// The step-ratio rule lowers the order of the long last λ-steps of a linspace-in-t grid
    /// and leaves a uniform-λ grid at full order.
    #[test]
    fn step_ratio_order_rule() {
        let rule = Some(OrderRule::StepRatio { max_ratio: 2.0 });
        let solver = OdeMultistep {
            order_rule: rule,
            ..OdeMultistep::new(2)
        };
        let lin = sampler(20).with_solver(solver).unwrap();
        let o = orders(&lin);
        assert_eq!(o[..3], [1, 2, 2]);
        assert_eq!(*o.last().unwrap(), 1, "{o:?}");
        let ul = lin.clone().with_grid(TimeGrid::UniformLambda).unwrap();
        let o = orders(&ul);
        assert!(o[1..].iter().all(|&o| o == 2), "{o:?}");
        let bad = OdeMultistep {
            order_rule: Some(OrderRule::StepRatio { max_ratio: 0.5 }),
            ..OdeMultistep::new(2)
        };
        assert!(sampler(5).with_solver(bad).is_err());
    }

    /// Singlestep spends exactly M evaluations: blocks of the configured order, a lower-order
    /// remainder, and the limit step where the grid ends at σ = 0.
    #[test]
    fn singlestep_blocks_spend_the_budget() {
        use crate::plan::singlestep::grid;
        use crate::schedule::CumulativeFrom;
        for from in [CumulativeFrom::Zero, CumulativeFrom::One] {
            let sch = IrSdeSchedule::da_clip().with_cumulative_from(from);
            let limit = from == CumulativeFrom::One;
            for order in 1..=3 {
                for m in 1..=12 {
                    let s = MrSampler::new(sch.clone(), m)
                        .unwrap()
                        .with_solver(Solver::ode_singlestep(order))
                        .unwrap();
                    let plan = s.plan(FitTarget::Noise).unwrap();
                    assert_eq!(plan.steps.len(), m, "order {order}, M = {m}");
                    let blocks = grid(&s.settings(), &*s.model_schedule().unwrap())
                        .unwrap()
                        .1;
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
        let s = sampler(9).with_solver(Solver::ode_singlestep(3)).unwrap();
        let blocks = |s: &MrSampler| {
            grid(&s.settings(), &*s.model_schedule().unwrap())
                .unwrap()
                .1
        };
        assert_eq!(blocks(&s), vec![3, 3, 3]);
        let s = s.with_num_steps(10).unwrap();
        assert_eq!(blocks(&s), vec![3, 3, 2, 2]);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(MrSampler::new(IrSdeSchedule::da_clip(), 0).is_err());
        assert!(sampler(10).with_solver(Solver::sde(3)).is_err());
        assert!(sampler(10).with_solver(Solver::ode(0)).is_err());
        assert!(sampler(10).with_solver(Solver::ode(4)).is_err());
        assert!(sampler(10).with_solver(Solver::ode_singlestep(4)).is_err());
        assert!(
            sampler(10)
                .with_grid(TimeGrid::KarrasN { rho: 0.0 })
                .is_err()
        );
        assert!(sampler(10).with_grid(TimeGrid::Custom(vec![1.0])).is_err());
        assert!(sampler(10).with_lambda_min(Some(f64::NAN)).is_err());
        assert!(sampler(10).with_data_range(Some((1.0, 0.0))).is_err());
        assert!(Thresholding::new(1.5, 1.5).is_err());
        assert!(Thresholding::new(0.9, 0.5).is_err());
        assert!(Thresholding::bounded(0.9, 0.0, 1.0).is_err());
        assert!(Thresholding::bounded(0.9, 0.5, 0.8).is_ok());
        let custom = sampler(10)
            .with_grid(TimeGrid::Custom(vec![100.0, 50.0, 0.0]))
            .unwrap();
        assert_eq!(custom.num_steps(), 2);
        assert!(custom.clone().with_num_steps(3).unwrap().check().is_err());
        let e = sampler(2)
            .with_mode(Mode::Reference)
            .unwrap()
            .with_solver(Solver::ode(3))
            .unwrap()
            .plan(FitTarget::Noise);
        assert!(matches!(e, Err(Error::TooFewSteps { steps: 2, order: 3 })));
    }

    /// NFE equals M for every grid, order and mode, denoise_last included (`docs/math.md` §5.3).
    #[test]
    fn nfe_per_configuration() {
        for mode in [Mode::Exact, Mode::Reference] {
            for solver in [
                Solver::ode(1),
                Solver::ode(2),
                Solver::ode(3),
                Solver::sde(1),
                Solver::sde(2),
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
                                .unwrap()
                                .with_solver(solver)
                                .unwrap()
                                .with_grid(grid.clone())
                                .unwrap()
                                .with_denoise_last(dl)
                                .unwrap();
                            let plan = s.plan(FitTarget::Noise).unwrap();
                            assert_eq!(plan.steps.len(), m, "{mode:?} {solver:?} {grid:?} {m}");
                            assert_eq!(plan.timesteps.len(), m + 1);
                        }
                    }
                }
            }
        }
        // Reference trailing at M = 28 has one extra step (`docs/math.md` §3.2).
        let s = sampler(28)
            .with_mode(Mode::Reference)
            .unwrap()
            .with_grid(TimeGrid::Trailing)
            .unwrap();
        assert_eq!(s.plan(FitTarget::Noise).unwrap().steps.len(), 29);
        let s = s.with_mode(Mode::Exact).unwrap();
        assert_eq!(s.plan(FitTarget::Noise).unwrap().steps.len(), 28);
    }
}
