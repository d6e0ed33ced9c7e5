//! The configuration vocabulary shared by the samplers: the fidelity [`Mode`], the MR
//! Sampler's [`Solver`] with its method-specific knobs, the step-order rules and dynamic
//! [`Thresholding`].

pub use crate::mode::Mode;

use crate::error::{Error, Result};
use crate::solver::{SecondOrder, ThirdOrder};

/// The MR Sampler's solver: which equation, how evaluations are spent, and the knobs that
/// belong to that choice (so a knob cannot be set where it does not apply).
///
/// ```
/// use mrsampler::{OdeMultistep, Solver, ThirdOrder};
/// let default = Solver::ode(2);
/// let with_corrector = Solver::Ode(OdeMultistep { corrector: true, ..OdeMultistep::new(3) });
/// let diffusers_3m = Solver::Ode(OdeMultistep {
///     third_order: Some(ThirdOrder::HalfD2),
///     ..OdeMultistep::new(3)
/// });
/// assert_eq!(with_corrector.order(), 3);
/// assert!(Solver::sde(2).is_stochastic() && !default.is_stochastic());
/// # let _ = diffusers_3m;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    /// The probability-flow ODE with multistep updates: one evaluation per grid step, higher
    /// orders reuse earlier outputs (DPM-Solver++(2M)/(3M) style; the MR Sampler's method).
    Ode(OdeMultistep),
    /// The probability-flow ODE with singlestep updates: a step of order `p` spends `p`
    /// evaluations (at its start and at `p − 1` intermediate λ-fractions) and reuses nothing,
    /// so `M` evaluations make about `M/p` steps (DPM-Solver-2S/3S style). Exact mode only;
    /// needs a named grid; no `denoise_last`.
    OdeSinglestep {
        /// 1 to 3.
        order: usize,
    },
    /// The reverse SDE with multistep updates and a fresh draw per step.
    Sde(SdeMultistep),
}

impl Solver {
    /// The multistep ODE of `order` (1–3) with the defaults of [`OdeMultistep::new`].
    pub const fn ode(order: usize) -> Self {
        Solver::Ode(OdeMultistep::new(order))
    }

    /// The singlestep ODE of `order` (1–3).
    pub const fn ode_singlestep(order: usize) -> Self {
        Solver::OdeSinglestep { order }
    }

    /// The multistep SDE of `order` (1–2) with the defaults of [`SdeMultistep::new`].
    pub const fn sde(order: usize) -> Self {
        Solver::Sde(SdeMultistep::new(order))
    }

    /// The configured order.
    pub fn order(&self) -> usize {
        match self {
            Solver::Ode(o) => o.order,
            Solver::OdeSinglestep { order } => *order,
            Solver::Sde(s) => s.order,
        }
    }

    /// Whether the solver draws noise at every step (the SDE).
    pub fn is_stochastic(&self) -> bool {
        matches!(self, Solver::Sde(_))
    }

    /// The short name used in tables and file names: `ode`, `ode-singlestep` or `sde`.
    pub fn name(&self) -> &'static str {
        match self {
            Solver::Ode(_) => "ode",
            Solver::OdeSinglestep { .. } => "ode-singlestep",
            Solver::Sde(_) => "sde",
        }
    }

    /// The second-order form of a multistep solver (`None` for singlestep).
    pub(crate) fn second_order(&self) -> Option<SecondOrder> {
        match self {
            Solver::Ode(o) => Some(o.second_order),
            Solver::Sde(s) => Some(s.second_order),
            Solver::OdeSinglestep { .. } => None,
        }
    }

    /// The explicitly chosen order rule of a multistep solver.
    pub(crate) fn order_rule(&self) -> Option<OrderRule> {
        match self {
            Solver::Ode(o) => o.order_rule,
            Solver::Sde(s) => s.order_rule,
            Solver::OdeSinglestep { .. } => None,
        }
    }

    /// Checks the ranges of the knobs; cross-setting rules are the sampler's.
    pub(crate) fn validate(&self) -> Result<()> {
        let (order, max) = match self {
            Solver::Ode(o) => (o.order, 3),
            Solver::OdeSinglestep { order } => (*order, 3),
            Solver::Sde(s) => (s.order, 2),
        };
        if !(1..=max).contains(&order) {
            return Err(Error::setting(
                "order",
                order,
                format!("the {} solver supports orders 1 to {max}", self.name()),
            ));
        }
        if let Some(OrderRule::StepRatio { max_ratio }) = self.order_rule()
            && !(max_ratio >= 1.0 && max_ratio.is_finite())
        {
            return Err(Error::setting(
                "max_ratio",
                max_ratio,
                "must be finite and >= 1",
            ));
        }
        if self.second_order() == Some(SecondOrder::Midpoint) && order == 1 {
            return Err(Error::conflict(
                "second_order = Midpoint",
                "order = 1",
                "the second-order form applies to orders 2 and 3; leave it at Taylor",
            ));
        }
        if let Solver::Ode(OdeMultistep {
            third_order: Some(form),
            order,
            ..
        }) = self
            && *order < 3
        {
            return Err(Error::conflict(
                "third_order",
                "order < 3",
                format!("the third-order form ({form:?}) applies to order 3 only; set it to None"),
            ));
        }
        Ok(())
    }
}

impl Default for Solver {
    /// The multistep ODE of order 2.
    fn default() -> Self {
        Solver::ode(2)
    }
}

impl From<OdeMultistep> for Solver {
    fn from(o: OdeMultistep) -> Self {
        Solver::Ode(o)
    }
}

impl From<SdeMultistep> for Solver {
    fn from(s: SdeMultistep) -> Self {
        Solver::Sde(s)
    }
}

/// The multistep probability-flow ODE solver and its knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OdeMultistep {
    /// 1 to 3.
    pub order: usize,
    /// The coefficient of the second-order update (default [`SecondOrder::Taylor`], the MR
    /// Sampler's; [`SecondOrder::Midpoint`] is diffusers' default; exact mode only).
    pub second_order: SecondOrder,
    /// The third-order form; `None` (default) takes the mode's own: [`ThirdOrder::Taylor`] in
    /// exact mode, [`ThirdOrder::HalfD2`] in reference mode. Order 3 only; reference mode
    /// accepts only `HalfD2`.
    pub third_order: Option<ThirdOrder>,
    /// A UniC corrector (Zhao et al., 2023) in the μ-shifted frame (default off; exact mode,
    /// data parameterization): each state is recomputed with the network output evaluated at
    /// it, at no extra evaluation (`docs/math.md` §4.5).
    pub corrector: bool,
    /// How each step's order is chosen; `None` (default) takes the mode's own rule:
    /// [`OrderRule::LowerOrderFinal`] in exact mode, the reference's rule in reference mode
    /// (which accepts no other).
    pub order_rule: Option<OrderRule>,
}

impl OdeMultistep {
    /// Order `order` with the defaults: Taylor forms, no corrector, the mode's order rule.
    pub const fn new(order: usize) -> Self {
        Self {
            order,
            second_order: SecondOrder::Taylor,
            third_order: None,
            corrector: false,
            order_rule: None,
        }
    }
}

/// The multistep reverse-SDE solver and its knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdeMultistep {
    /// 1 or 2.
    pub order: usize,
    /// The coefficient of the second-order update (default [`SecondOrder::Taylor`]; exact mode
    /// only for [`SecondOrder::Midpoint`]).
    pub second_order: SecondOrder,
    /// How each step's order is chosen; `None` (default) takes the mode's own rule.
    pub order_rule: Option<OrderRule>,
}

impl SdeMultistep {
    /// Order `order` with the defaults: Taylor form, the mode's order rule.
    pub const fn new(order: usize) -> Self {
        Self {
            order,
            second_order: SecondOrder::Taylor,
            order_rule: None,
        }
    }
}

/// How exact mode chooses each multistep step's order (the warm-up `min(P, k)` always
/// applies; `docs/math.md` §5.2). The default is `StepRatio { max_ratio: 2.0 }`: on grids
/// linear in t, [`LowerOrderFinal`](Self::LowerOrderFinal) alone lets the error jump up when
/// `M` reaches 15 (the ODE-2 error on the Gaussian oracle, linspace: 4.3e-3 at 12 NFE, 2.2e-2
/// at 15, 1.2e-2 at 20), which the step-ratio fallback removes (4.5e-3 at 15, 3.7e-3 at 20);
/// on uniform-λ grids the two are the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrderRule {
    /// Lower orders at the end when `M < 15` (`min(P, k, M − k + 1)`), as DPM-Solver's
    /// `lower_order_final` (the specification's exact-mode rule, which the conformance
    /// vectors replay).
    LowerOrderFinal,
    /// Full order on every step after the warm-up.
    Full,
    /// [`LowerOrderFinal`](Self::LowerOrderFinal), plus first order on any step whose
    /// λ-length exceeds `max_ratio` times the previous step's (an extrapolation far beyond the
    /// fitted nodes: the last steps of grids linear in t). Uniform-λ grids never trigger the
    /// extra rule, so their asymptotic order is kept. `docs/benchmarks.md` measures it.
    StepRatio {
        /// The largest allowed `h_k / h_{k−1}` (finite, ≥ 1; e.g. 2).
        max_ratio: f64,
    },
}

impl Default for OrderRule {
    /// `StepRatio { max_ratio: 2.0 }` (see the type's documentation for why).
    fn default() -> Self {
        OrderRule::StepRatio { max_ratio: 2.0 }
    }
}

/// Dynamic thresholding of data predictions (`docs/math.md` §6.2).
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
        Self::bounded(ratio, 1.0, max)
    }

    /// Full control: the clamp of `s` is `[floor, max]` with `0 < floor ≤ max` (use a floor
    /// below 1 for data that does not live in `[−1, 1]`).
    pub fn bounded(ratio: f64, floor: f64, max: f64) -> Result<Self> {
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

/// Validates a data range `(lo, hi)`: the clamp applied to a returned sample.
pub(crate) fn check_data_range(range: Option<(f64, f64)>) -> Result<Option<(f64, f64)>> {
    if let Some((lo, hi)) = range
        && (lo.is_nan() || hi.is_nan() || lo > hi)
    {
        return Err(Error::setting(
            "data_range",
            format!("({lo}, {hi})"),
            "needs lo <= hi",
        ));
    }
    Ok(range)
}

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// Euler–Maruyama on the reverse SDE (IR-SDE's "Euler discretization").
    EulerMaruyama,
    /// Posterior sampling `x_{t−1} ~ q(x_{t−1} | x_t, x̂₀)` (DA-CLIP's default sampler).
    Posterior,
    /// Euler on the probability-flow ODE.
    EulerOde,
    /// Heun's method (2 evaluations per step) on the ODE or, when `stochastic`, the SDE
    /// (whose corrector reuses the predictor's Brownian increment); exact mode only.
    Heun {
        /// Reverse SDE instead of the probability-flow ODE.
        stochastic: bool,
    },
}
