//! Process math in pure `f64`: Mean-Reverting schedules and time grids.
//!
//! An MR process `dx = θ(t)(μ − x)dt + g(t)dw` with `g² = 2σ∞²θ` has the Gaussian marginal
//! `x_t = α_t x₀ + (1 − α_t)μ + σ_t ε` with `α_t = exp(−∫₀ᵗθ)` and
//! `σ_t = σ∞·sqrt(1 − α_t²)`; the solvers work in the half log-SNR `λ_t = ln(α_t/σ_t)`
//! (`docs/math.md` §1.1). A [`Schedule`] provides these functions in its own time units; nothing in
//! this module touches tensors.
//!
//! * [`IrSdeSchedule`]: the discrete IR-SDE / DA-CLIP schedule (cosine, linear or constant θ),
//!   seen as the continuous MR process with piecewise-constant θ (exact mode, `docs/math.md` §1.3).
//! * [`ReferenceInterp`]: the reference implementation's view of the same schedule, with
//!   α, σ and λ interpolated independently between integer indices (`docs/math.md` §1.4).
//! * [`TimeGrid`]: the sampling grids of `docs/math.md` §3 / §3.3.

mod grid;
mod interp;
mod irsde;
mod standard;

pub use grid::{MAX_STEPS, TimeGrid};
pub use interp::ReferenceInterp;
pub use irsde::{CumulativeFrom, IrSdeSchedule, ThetaSchedule};
pub use standard::{Betas, VeSchedule, VpLinear, VpSchedule};

pub(crate) use grid::build_grid;

/// Checks the invariants a sampler needs from a (possibly user-written) schedule at its ends:
/// `σ∞ > 0`, `t_min < t_max`, finite `α`, `σ` at both ends, `λ(t_max) < λ(t_lambda_finite)`.
pub fn validate(schedule: &dyn Schedule) -> crate::Result<()> {
    let bad =
        |param: &'static str, value: String, reason: &'static str| crate::Error::InvalidSchedule {
            param,
            value,
            reason,
        };
    let si = schedule.sigma_inf();
    if si.is_nan() || si <= 0.0 {
        return Err(bad(
            "sigma_inf",
            si.to_string(),
            "must be > 0 (+inf for variance-exploding schedules); velocity conversions divide by it",
        ));
    }
    let (lo, hi) = (schedule.t_min(), schedule.t_max());
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(bad(
            "t_min, t_max",
            format!("{lo}, {hi}"),
            "needs finite t_min < t_max",
        ));
    }
    for t in [lo, hi] {
        let (a, s) = (schedule.alpha(t), schedule.sigma(t));
        if !(a > 0.0 && a <= 1.0 && s >= 0.0 && s.is_finite()) {
            return Err(bad(
                "alpha, sigma",
                format!("{a}, {s} at t = {t}"),
                "alpha must lie in (0, 1] and sigma be finite and >= 0 at both ends",
            ));
        }
    }
    let (l_hi, l_lo) = (
        schedule.lambda(hi),
        schedule.lambda(schedule.t_lambda_finite()),
    );
    if l_hi.is_nan() || l_lo.is_nan() || l_hi > l_lo {
        return Err(bad(
            "lambda",
            format!("{l_hi} at t_max, {l_lo} at the largest finite λ"),
            "lambda must decrease from t_min to t_max",
        ));
    }
    Ok(())
}

/// Values of a discrete schedule at its integer indices `i = 0..=N` (`docs/math.md` §1.3).
///
/// Reference mode interpolates these arrays piecewise-linearly; exact mode never needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct Knots {
    /// Knot times `t_i = i`.
    pub t: Vec<f64>,
    /// `θ_i`, per index unit.
    pub theta: Vec<f64>,
    /// Cumulative sums `Θ_i` in index units.
    pub theta_cumsum: Vec<f64>,
    /// `α_i = exp(−Θ_i·dt)`.
    pub alpha: Vec<f64>,
    /// `σ_i = sqrt(σ∞²(1 − exp(−2Θ_i·dt)))`, computed as the reference does.
    pub sigma: Vec<f64>,
    /// `λ_i = ln α_i − ln σ_i` (`+∞` where `σ_i = 0`).
    pub lambda: Vec<f64>,
    /// Diffusion coefficient per index `g_i = sqrt(σ∞²·2θ_i)`.
    pub g: Vec<f64>,
    /// The time unit `dt = −ln(eps)/Θ_N`.
    pub dt: f64,
}

/// A Mean-Reverting noise schedule in its own time units.
///
/// Implement this to sample a continuous-time MR model: `alpha`, `sigma`, `theta` and the
/// inverse `t_of_lambda` are required; everything else has a correct default. Times run from
/// [`t_min`](Schedule::t_min) (data) to [`t_max`](Schedule::t_max) (the prior end); the network
/// is called with times in these same units.
///
/// Invariants the samplers rely on: `α` decreases from ≤ 1, `σ = σ∞·sqrt(1 − α²)`,
/// and `λ(t) = ln α(t) − ln σ(t)` is strictly decreasing in `t`.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// Stationary standard deviation `σ∞` (`max_sigma` after the ÷255 rule).
    fn sigma_inf(&self) -> f64;
    /// Smallest time of the schedule (data end). Default 0.
    fn t_min(&self) -> f64 {
        0.0
    }
    /// Largest time of the schedule (prior end).
    fn t_max(&self) -> f64;
    /// Mean weight `α(t) = exp(−∫θ)`.
    fn alpha(&self, t: f64) -> f64;
    /// Marginal standard deviation `σ(t) = σ∞·sqrt(1 − α(t)²)`.
    fn sigma(&self, t: f64) -> f64;
    /// Half log-SNR `λ(t) = ln α(t) − ln σ(t)`.
    fn lambda(&self, t: f64) -> f64 {
        self.alpha(t).ln() - self.sigma(t).ln()
    }
    /// Mean-reversion rate `θ(t)` per unit of this schedule's time, taken on the interval just
    /// below `t` (the left limit where θ jumps). Used by the Euler and Heun baselines.
    fn theta(&self, t: f64) -> f64;
    /// Squared diffusion coefficient `g(t)² = dσ²/dt − 2σ² d ln α/dt`, per unit of this
    /// schedule's time; `2σ∞²θ(t)` for an MR process (override where `σ∞ = ∞`, as for VE).
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * self.sigma_inf().powi(2) * self.theta(t)
    }
    /// Drift coefficient `f(t) = d ln α/dt = −θ(t)` of `dy = f(t)y dt + g(t)dw`, `y = x − μ`.
    fn drift(&self, t: f64) -> f64 {
        -self.theta(t)
    }
    /// The transition mean `m(t) = α x₀ + (1 − α)μ`, as its weights `(α, 1 − α)` on `(x₀, μ)`.
    fn mean_weights(&self, t: f64) -> (f64, f64) {
        let a = self.alpha(t);
        (a, 1.0 - a)
    }
    /// The transition variance `v(t) = σ(t)²`.
    fn variance(&self, t: f64) -> f64 {
        self.sigma(t).powi(2)
    }
    /// `ln α(t) = −∫₀ᵗ θ`; override when it is available more accurately than `ln(alpha)`.
    fn log_alpha(&self, t: f64) -> f64 {
        self.alpha(t).ln()
    }
    /// `∫_t^s θ(τ) dτ = ln α(t) − ln α(s)` for `t ≤ s`.
    fn rate_integral(&self, t: f64, s: f64) -> f64 {
        self.log_alpha(t) - self.log_alpha(s)
    }
    /// The inverse of `λ(t)`, clamped to `[t_min, t_max]`.
    fn t_of_lambda(&self, lambda: f64) -> f64;
    /// The inverse of the Karras sigma `κ(t) = σ(t)/α(t) = e^{−λ(t)}`.
    fn t_of_kappa(&self, kappa: f64) -> f64 {
        self.t_of_lambda(-kappa.ln())
    }
    /// The grid start after `lambda_min` clipping: the largest time whose `λ ≥ lambda_min`.
    fn t_max_for_lambda_min(&self, lambda_min: f64) -> f64 {
        if self.lambda(self.t_max()) >= lambda_min {
            self.t_max()
        } else {
            self.t_of_lambda(lambda_min)
        }
    }
    /// The smallest time at which `λ` is finite, the top of a uniform-λ grid. Equal to
    /// [`t_min`](Schedule::t_min) unless `σ(t_min) = 0`.
    fn t_lambda_finite(&self) -> f64 {
        self.t_min()
    }
    /// Integer-index arrays, for schedules that are discrete (needed by reference mode).
    fn knots(&self) -> Option<&Knots> {
        None
    }
}
