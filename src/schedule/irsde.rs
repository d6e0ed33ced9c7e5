//! The IR-SDE / DA-CLIP discrete schedule and its continuous-time view (`docs/math.md` §1.3).

use std::f64::consts::PI;
use std::str::FromStr;

use super::{Knots, Schedule};
use crate::error::{Error, Result};

/// Shape of the θ array of an IR-SDE schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThetaSchedule {
    /// `θ_i = 1 − c(i+1)/c(0)`, `c(k) = cos²((π/2)(k/(N+2) + s)/(1 + s))`, `s = 0.008`
    /// (the DDPM cosine `1 − ᾱ`); DA-CLIP's choice.
    Cosine,
    /// `θ_i = (1000/(N+1))·linspace(1e-4, 0.02, N+1)_i`.
    Linear,
    /// `θ_i = 1`.
    Constant,
}

impl FromStr for ThetaSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "constant" => Ok(Self::Constant),
            other => Err(Error::InvalidSchedule {
                param: "theta_schedule",
                value: other.to_string(),
                reason: "must be one of \"cosine\", \"linear\", \"constant\"",
            }),
        }
    }
}

/// Where the cumulative sum `Θ_i` starts (`docs/math.md` §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CumulativeFrom {
    /// `Θ_i = Σ_{j≤i} θ_j`: the MR Sampler convention, `σ_0 > 0` (default).
    #[default]
    Zero,
    /// `Θ_i = Σ_{1≤j≤i} θ_j`: the IR-SDE / DA-CLIP training convention, `α_0 = 1`,
    /// `σ_0 = 0`, `λ_0 = +∞`; a step that ends at `t = 0` is the limit step `x = x̂₀`.
    One,
}

impl FromStr for CumulativeFrom {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(Self::Zero),
            "one" => Ok(Self::One),
            other => Err(Error::InvalidSchedule {
                param: "cumulative_from",
                value: other.to_string(),
                reason: "must be \"zero\" or \"one\"",
            }),
        }
    }
}

/// The discrete IR-SDE schedule over indices `0..=T`, used as a continuous MR process whose θ
/// is constant between integer indices.
///
/// Times are in index units, so networks trained by IR-SDE / DA-CLIP receive the `t` they
/// were trained with. At integer `t` every function equals the discrete arrays; between them
/// `Θ(t)` is linear, so `α`, `σ`, `λ` are exact for that process and `t(λ)` is closed-form.
///
/// ```
/// use mrsampler::schedule::{IrSdeSchedule, Schedule};
/// let s = IrSdeSchedule::da_clip();
/// assert!((s.alpha(100.0) - 0.005).abs() < 1e-15);
/// let t = s.t_of_lambda(s.lambda(37.25));
/// assert!((t - 37.25).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct IrSdeSchedule {
    theta_schedule: ThetaSchedule,
    steps: usize,
    eps: f64,
    max_sigma: f64,
    sigma_inf: f64,
    cumulative_from: CumulativeFrom,
    knots: Knots,
}

impl IrSdeSchedule {
    /// Builds the schedule from the IR-SDE config keys.
    ///
    /// * `steps`: `T`, the number of training steps (≥ 1); arrays have `T + 1` entries.
    /// * `eps`: terminal mean weight `α_T`, in `(0, 1)`.
    /// * `max_sigma`: `σ∞·255` if `≥ 1` (the ÷255 rule), else `σ∞` itself; must be `> 0`.
    ///
    /// Uses [`CumulativeFrom::Zero`]; see [`with_cumulative_from`](Self::with_cumulative_from).
    pub fn new(
        theta_schedule: ThetaSchedule,
        steps: usize,
        eps: f64,
        max_sigma: f64,
    ) -> Result<Self> {
        check_steps_eps(steps, eps)?;
        if !(max_sigma > 0.0 && max_sigma.is_finite()) {
            return Err(Error::InvalidSchedule {
                param: "max_sigma",
                value: max_sigma.to_string(),
                reason: "must be finite and > 0 (values >= 1 are divided by 255)",
            });
        }
        let sigma_inf = if max_sigma >= 1.0 {
            max_sigma / 255.0
        } else {
            max_sigma
        };
        Self::build(theta_schedule, steps, eps, max_sigma, sigma_inf)
    }

    /// As [`new`](Self::new), but takes `σ∞` directly (no ÷255 rule).
    pub fn with_sigma_inf(
        theta_schedule: ThetaSchedule,
        steps: usize,
        eps: f64,
        sigma_inf: f64,
    ) -> Result<Self> {
        check_steps_eps(steps, eps)?;
        if !(sigma_inf > 0.0 && sigma_inf.is_finite()) {
            return Err(Error::InvalidSchedule {
                param: "sigma_inf",
                value: sigma_inf.to_string(),
                reason: "the stationary std must be finite and > 0",
            });
        }
        Self::build(theta_schedule, steps, eps, sigma_inf, sigma_inf)
    }

    fn build(
        theta_schedule: ThetaSchedule,
        steps: usize,
        eps: f64,
        max_sigma: f64,
        sigma_inf: f64,
    ) -> Result<Self> {
        let mut s = Self {
            theta_schedule,
            steps,
            eps,
            max_sigma,
            sigma_inf,
            cumulative_from: CumulativeFrom::Zero,
            knots: Knots {
                t: vec![],
                theta: vec![],
                theta_cumsum: vec![],
                alpha: vec![],
                sigma: vec![],
                lambda: vec![],
                g: vec![],
                dt: 0.0,
            },
        };
        s.rebuild();
        Ok(s)
    }

    /// The DA-CLIP universal-restoration schedule: cosine θ, `T = 100`, `eps = 0.005`,
    /// `max_sigma = 50` (`σ∞ = 50/255`).
    pub fn da_clip() -> Self {
        Self::new(ThetaSchedule::Cosine, 100, 0.005, 50.0).expect("constant parameters are valid")
    }

    /// Selects the `Θ` convention (default [`CumulativeFrom::Zero`]).
    pub fn with_cumulative_from(mut self, c: CumulativeFrom) -> Self {
        self.cumulative_from = c;
        self.rebuild();
        self
    }

    /// The θ array shape.
    pub fn theta_schedule(&self) -> ThetaSchedule {
        self.theta_schedule
    }
    /// `T`, the number of training steps.
    pub fn steps(&self) -> usize {
        self.steps
    }
    /// Terminal mean weight `α_T`.
    pub fn eps(&self) -> f64 {
        self.eps
    }
    /// `max_sigma` as given (before the ÷255 rule).
    pub fn max_sigma(&self) -> f64 {
        self.max_sigma
    }
    /// The `Θ` convention.
    pub fn cumulative_from(&self) -> CumulativeFrom {
        self.cumulative_from
    }
    /// The time unit `dt = −ln(eps)/Θ_T`.
    pub fn dt(&self) -> f64 {
        self.knots.dt
    }

    /// `Θ(t)` in index units, linear between integer indices; `t` is clamped to `[0, T]`.
    pub fn theta_cumsum_at(&self, t: f64) -> f64 {
        let cum = &self.knots.theta_cumsum;
        let t = t.clamp(0.0, self.steps as f64);
        let i = (t.floor() as usize).min(self.steps - 1);
        let frac = t - i as f64;
        cum[i] + frac * (cum[i + 1] - cum[i])
    }

    /// Time whose `Θ(t)·dt` equals `rate`, by linear inversion within its segment, clamped
    /// to `[0, T]`.
    fn t_of_rate(&self, rate: f64) -> f64 {
        let cum = &self.knots.theta_cumsum;
        let target = rate / self.knots.dt;
        if target.is_nan() {
            return f64::NAN;
        }
        // First segment whose upper end reaches the target (extrapolating at both ends).
        let i = cum[1..]
            .partition_point(|&c| c < target)
            .min(self.steps - 1);
        let t = i as f64 + (target - cum[i]) / (cum[i + 1] - cum[i]);
        t.clamp(0.0, self.steps as f64)
    }

    fn rebuild(&mut self) {
        let n = self.steps;
        let theta: Vec<f64> = match self.theta_schedule {
            ThetaSchedule::Cosine => {
                let s = 0.008;
                let big_k = (n + 2) as f64;
                let c = |k: usize| {
                    let v = ((k as f64 / big_k + s) / (1.0 + s) * PI * 0.5).cos();
                    v * v
                };
                let c0 = c(0);
                (0..=n).map(|i| 1.0 - c(i + 1) / c0).collect()
            }
            ThetaSchedule::Linear => {
                let scale = 1000.0 / (n + 1) as f64;
                let (start, end) = (scale * 0.0001, scale * 0.02);
                let step = (end - start) / n as f64;
                (0..=n)
                    .map(|i| if i == n { end } else { start + i as f64 * step })
                    .collect()
            }
            ThetaSchedule::Constant => vec![1.0; n + 1],
        };
        let mut cum = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        for &th in &theta {
            acc += th;
            cum.push(acc);
        }
        if self.cumulative_from == CumulativeFrom::One {
            let t0 = theta[0];
            for c in &mut cum {
                *c -= t0;
            }
        }
        let dt = -1.0 / cum[n] * self.eps.ln();
        let sig2 = self.sigma_inf * self.sigma_inf;
        let alpha: Vec<f64> = cum.iter().map(|&c| (-c * dt).exp()).collect();
        let sigma: Vec<f64> = cum
            .iter()
            .map(|&c| (sig2 * (1.0 - (-2.0 * c * dt).exp())).sqrt())
            .collect();
        let lambda = alpha
            .iter()
            .zip(&sigma)
            .map(|(a, s)| a.ln() - s.ln())
            .collect();
        let g = theta.iter().map(|&th| (sig2 * 2.0 * th).sqrt()).collect();
        self.knots = Knots {
            t: (0..=n).map(|i| i as f64).collect(),
            theta,
            theta_cumsum: cum,
            alpha,
            sigma,
            lambda,
            g,
            dt,
        };
    }
}

/// Largest supported `T` (the schedule stores `T + 1` values per array).
pub const MAX_TRAINING_STEPS: usize = 1_000_000;

fn check_steps_eps(steps: usize, eps: f64) -> Result<()> {
    if steps == 0 || steps > MAX_TRAINING_STEPS {
        return Err(Error::InvalidSchedule {
            param: "T",
            value: steps.to_string(),
            reason: "the number of training steps must lie in 1..=1000000",
        });
    }
    if !(eps > 0.0 && eps < 1.0) {
        return Err(Error::InvalidSchedule {
            param: "eps",
            value: eps.to_string(),
            reason: "the terminal mean weight must lie strictly between 0 and 1 (typically 0.005)",
        });
    }
    Ok(())
}

impl Schedule for IrSdeSchedule {
    fn sigma_inf(&self) -> f64 {
        self.sigma_inf
    }
    fn t_max(&self) -> f64 {
        self.steps as f64
    }
    fn alpha(&self, t: f64) -> f64 {
        (-self.theta_cumsum_at(t) * self.knots.dt).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_inf * (-(-2.0 * self.theta_cumsum_at(t) * self.knots.dt).exp_m1()).sqrt()
    }
    fn theta(&self, t: f64) -> f64 {
        let i = (t.clamp(0.0, self.steps as f64).ceil() as usize).min(self.steps);
        self.knots.theta[i] * self.knots.dt
    }
    fn log_alpha(&self, t: f64) -> f64 {
        -self.theta_cumsum_at(t) * self.knots.dt
    }
    fn rate_integral(&self, t: f64, s: f64) -> f64 {
        (self.theta_cumsum_at(s) - self.theta_cumsum_at(t)) * self.knots.dt
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let s2 = self.sigma_inf * self.sigma_inf;
        self.t_of_rate(0.5 * ((-2.0 * lambda).exp() / s2).ln_1p())
    }
    fn t_of_kappa(&self, kappa: f64) -> f64 {
        let s2 = self.sigma_inf * self.sigma_inf;
        self.t_of_rate(0.5 * (kappa * kappa / s2).ln_1p())
    }
    fn t_max_for_lambda_min(&self, lambda_min: f64) -> f64 {
        // The reference's rule: the largest integer index with λ_i ≥ lambda_min.
        let below = self
            .knots
            .lambda
            .iter()
            .filter(|&&l| l < lambda_min)
            .count();
        self.steps.saturating_sub(below) as f64
    }
    fn t_lambda_finite(&self) -> f64 {
        match self.cumulative_from {
            CumulativeFrom::Zero => 0.0,
            CumulativeFrom::One => 1.0,
        }
    }
    fn knots(&self) -> Option<&Knots> {
        Some(&self.knots)
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values (integer times, α_T = eps) are the point here
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn da_clip() -> IrSdeSchedule {
        IrSdeSchedule::da_clip()
    }

    /// `docs/math.md` §9.1 golden values.
    #[test]
    fn golden_schedule_constants() {
        let s = da_clip();
        let k = s.knots().unwrap();
        assert_relative_eq!(k.dt, 0.10409255169837403, max_relative = 1e-13);
        let sum: f64 = k.theta.iter().sum();
        assert_relative_eq!(sum, 50.900062301295264, max_relative = 1e-13);
        for (i, want) in [
            6.142395712106508e-4,
            1.694615641964492e-3,
            3.2401196110058983e-3,
            5.249308649966866e-3,
        ]
        .iter()
        .enumerate()
        {
            assert_relative_eq!(k.theta[i], *want, max_relative = 1e-11);
        }
        assert_relative_eq!(k.theta[100], 0.9997665724804802, max_relative = 1e-13);
        let rows = [
            (
                0,
                0.9999360642796539,
                0.0022172244610081725,
                6.111435170328288,
            ),
            (
                1,
                0.9997596942474123,
                0.004298340471411325,
                5.449285933025871,
            ),
            (
                50,
                0.36080298288223367,
                0.18287099167985388,
                0.6795511148265061,
            ),
            (100, 0.005, 0.19607598037683804, -3.6690643266615037),
        ];
        for (i, a, sg, l) in rows {
            assert_relative_eq!(k.alpha[i], a, max_relative = 1e-12);
            assert_relative_eq!(k.sigma[i], sg, max_relative = 1e-11);
            assert_relative_eq!(k.lambda[i], l, max_relative = 1e-11);
            // The continuous view agrees at integer indices.
            assert_relative_eq!(s.alpha(i as f64), a, max_relative = 1e-12);
            assert_relative_eq!(s.sigma(i as f64), sg, max_relative = 1e-11);
            assert_relative_eq!(s.lambda(i as f64), l, max_relative = 1e-11);
        }
        assert_relative_eq!(k.g[100], 0.27726441069759256, max_relative = 1e-13);
        assert_relative_eq!(k.alpha[100], 0.005, max_relative = 1e-15);
    }

    #[test]
    fn golden_ir_sde_convention() {
        let s = da_clip().with_cumulative_from(CumulativeFrom::One);
        let k = s.knots().unwrap();
        assert_relative_eq!(k.dt, 0.10409380785667745, max_relative = 1e-13);
        assert_eq!(k.alpha[0], 1.0);
        assert_eq!(k.sigma[0], 0.0);
        assert!(k.lambda[0].is_infinite() && k.lambda[0] > 0.0);
        assert_relative_eq!(k.alpha[1], 0.99982362, max_relative = 1e-8);
        assert_eq!(s.t_lambda_finite(), 1.0);
    }

    #[test]
    fn golden_linear_and_constant() {
        let s = IrSdeSchedule::new(ThetaSchedule::Linear, 100, 0.005, 50.0).unwrap();
        let k = s.knots().unwrap();
        assert_relative_eq!(k.theta[0], 9.900990099e-4, max_relative = 1e-9);
        assert_relative_eq!(k.theta[100], 0.198019802, max_relative = 1e-9);
        assert_relative_eq!(k.dt, 0.5271957578654762, max_relative = 1e-13);
        assert_relative_eq!(k.alpha[50], 0.25898001652588315, max_relative = 1e-12);
        let s = IrSdeSchedule::new(ThetaSchedule::Constant, 100, 0.005, 50.0).unwrap();
        let k = s.knots().unwrap();
        assert_relative_eq!(k.dt, 0.05245858778760432, max_relative = 1e-13);
        assert_relative_eq!(k.alpha[0], 0.9488936160261175, max_relative = 1e-13);
    }

    #[test]
    fn invariants_hold_for_every_theta_schedule() {
        for th in [
            ThetaSchedule::Cosine,
            ThetaSchedule::Linear,
            ThetaSchedule::Constant,
        ] {
            for ms in [10.0, 50.0, 0.5] {
                let s = IrSdeSchedule::new(th, 100, 0.005, ms).unwrap();
                let k = s.knots().unwrap();
                assert_relative_eq!(k.alpha[100], 0.005, max_relative = 1e-13);
                let si = s.sigma_inf();
                for i in 0..=100 {
                    let r = k.alpha[i].powi(2) + (k.sigma[i] / si).powi(2);
                    assert!((r - 1.0).abs() < 1e-13, "{th:?} {i} {r}");
                    if i > 0 {
                        assert!(k.lambda[i] < k.lambda[i - 1]);
                    }
                }
            }
        }
    }

    #[test]
    fn max_sigma_rule() {
        let s = IrSdeSchedule::new(ThetaSchedule::Cosine, 100, 0.005, 50.0).unwrap();
        assert_eq!(s.sigma_inf(), 50.0 / 255.0);
        let s = IrSdeSchedule::new(ThetaSchedule::Cosine, 100, 0.005, 0.25).unwrap();
        assert_eq!(s.sigma_inf(), 0.25);
    }

    #[test]
    fn inverse_round_trips_between_knots() {
        let s = da_clip();
        for i in 0..=400 {
            let t = i as f64 * 0.25;
            let back = s.t_of_lambda(s.lambda(t));
            assert!((back - t).abs() < 1e-8, "t = {t}: {back}");
            let kappa = s.sigma(t) / s.alpha(t);
            assert!((s.t_of_kappa(kappa) - t).abs() < 1e-8);
        }
        assert_eq!(s.t_of_lambda(100.0), 0.0);
        assert_eq!(s.t_of_lambda(-100.0), 100.0);
    }

    #[test]
    fn lambda_min_clipping_golden() {
        let s = da_clip();
        assert_eq!(s.t_max_for_lambda_min(-5.0), 100.0);
        assert_eq!(s.t_max_for_lambda_min(-3.0), 93.0);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(matches!(
            IrSdeSchedule::new(ThetaSchedule::Cosine, 0, 0.005, 50.0),
            Err(Error::InvalidSchedule { param: "T", .. })
        ));
        for eps in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(IrSdeSchedule::new(ThetaSchedule::Cosine, 100, eps, 50.0).is_err());
        }
        for ms in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(IrSdeSchedule::new(ThetaSchedule::Cosine, 100, 0.005, ms).is_err());
        }
        assert!("quadratic".parse::<ThetaSchedule>().is_err());
        assert_eq!(
            "linear".parse::<ThetaSchedule>().unwrap(),
            ThetaSchedule::Linear
        );
    }
}
