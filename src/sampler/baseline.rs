//! Baseline samplers (spec §4, §9.2.7): Euler–Maruyama, posterior sampling, Euler on the
//! probability-flow ODE and Heun.

use std::sync::Arc;

use super::Sampler;
use super::run::{Plan, PlannedStep, Run, Target, Update};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization, convert_coefficients};
use crate::schedule::{Mode, Schedule, TimeGrid, build_grid};
use crate::solver::{
    StepCoeffs, euler_coefficients, posterior_coefficients_exact, posterior_coefficients_reference,
};
use crate::tensor::{NoiseSource, Parallelism, SamplerTensor};

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

/// A baseline sampler with `K` network evaluations.
///
/// In [`Mode::Reference`] the Euler and posterior samplers visit the integer indices
/// `int(linspace(1, T, K))` from the top and advance one index per call, as the original code
/// does (with `K < T` they never integrate the whole horizon). In [`Mode::Exact`] (default)
/// they stride over `linspace(T, 0, K+1)` and are valid samplers at any `K`.
///
/// Baselines convert the network output to a noise prediction and do not clamp their output.
#[derive(Debug, Clone)]
pub struct BaselineSampler {
    schedule: Arc<dyn Schedule>,
    kind: Baseline,
    num_steps: usize,
    mode: Mode,
    output_clip: Option<(f64, f64)>,
    parallelism: Parallelism,
}

impl BaselineSampler {
    /// A baseline over `schedule` with `num_steps` network evaluations (≥ 1), exact mode.
    pub fn new(
        schedule: impl Schedule + 'static,
        kind: Baseline,
        num_steps: usize,
    ) -> Result<Self> {
        Self::with_schedule(Arc::new(schedule), kind, num_steps)
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn with_schedule(
        schedule: Arc<dyn Schedule>,
        kind: Baseline,
        num_steps: usize,
    ) -> Result<Self> {
        if num_steps == 0 {
            return Err(Error::setting(
                "num_steps",
                0,
                "at least one step is needed",
            ));
        }
        Ok(Self {
            schedule,
            kind,
            num_steps,
            mode: Mode::Exact,
            output_clip: None,
            parallelism: Parallelism::default(),
        })
    }

    /// Fidelity mode (default [`Mode::Exact`]).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Clamp applied to the returned sample (default none).
    pub fn with_output_clip(mut self, clip: Option<(f64, f64)>) -> Result<Self> {
        self.output_clip = super::check_clip(clip)?;
        Ok(self)
    }

    /// How the tensor kernels may split work across threads (default `Rayon(0)`).
    pub fn with_parallelism(mut self, par: Parallelism) -> Self {
        self.parallelism = par;
        self
    }

    /// Which baseline this is.
    pub fn kind(&self) -> Baseline {
        self.kind
    }

    pub(crate) fn plan(&self, fit: FitTarget) -> Result<Plan> {
        super::mrs::check_fit(fit, &*self.schedule)?;
        match self.mode {
            Mode::Reference => self.plan_reference(fit),
            Mode::Exact => self.plan_exact(fit),
        }
    }

    fn plan_reference(&self, fit: FitTarget) -> Result<Plan> {
        let sch = &self.schedule;
        let knots = sch.knots().ok_or_else(|| Error::Unsupported {
            what: "reference-mode baselines need a discrete schedule (IrSdeSchedule)".into(),
        })?;
        let n = knots.t.len() - 1;
        let k = self.num_steps;
        match self.kind {
            Baseline::Heun { .. } => {
                return Err(Error::Unsupported {
                    what: "the Heun baseline exists in exact mode only (the reference's version \
                           uses the wrong score and step length)"
                        .into(),
                });
            }
            Baseline::EulerOde if k != n => {
                return Err(Error::Unsupported {
                    what: format!(
                        "reference-mode Euler-ODE is defined only for K = T = {n} steps (got {k}); \
                         use exact mode for other step counts"
                    ),
                });
            }
            _ => {}
        }
        // int(linspace(1, T, K)) visited from the top.
        let step = if k > 1 {
            (n as f64 - 1.0) / (k - 1) as f64
        } else {
            0.0
        };
        let idx: Vec<usize> = (0..k)
            .rev()
            .map(|j| {
                if j == k - 1 && k > 1 {
                    n
                } else {
                    (1.0 + j as f64 * step) as usize
                }
            })
            .collect();
        let si = sch.sigma_inf();
        let dt = knots.dt;
        let steps = idx
            .iter()
            .map(|&i| {
                let (a, s) = (knots.alpha[i], knots.sigma[i]);
                let coeffs = match self.kind {
                    Baseline::EulerMaruyama => {
                        euler_coefficients(knots.theta[i], knots.g[i], s, dt, true)
                    }
                    Baseline::EulerOde => {
                        euler_coefficients(knots.theta[i], knots.g[i], s, dt, false)
                    }
                    Baseline::Posterior => posterior_coefficients_reference(
                        knots.theta[i],
                        knots.theta_cumsum[i],
                        knots.theta_cumsum[i - 1],
                        dt,
                        s,
                        si,
                    ),
                    Baseline::Heun { .. } => unreachable!("rejected above"),
                };
                self.step(
                    fit,
                    i as f64,
                    i as f64 - 1.0,
                    a,
                    s,
                    coeffs,
                    Target::State,
                    1,
                )
            })
            .collect();
        let mut timesteps: Vec<f64> = idx.iter().map(|&i| i as f64).collect();
        timesteps.push(*idx.last().expect("k >= 1") as f64 - 1.0);
        Ok(self.finish_plan(timesteps, steps, si))
    }

    fn plan_exact(&self, fit: FitTarget) -> Result<Plan> {
        let sch = &*self.schedule;
        let tau = build_grid(&TimeGrid::Linspace, self.num_steps, None, Mode::Exact, sch)?;
        let si = sch.sigma_inf();
        let k = self.num_steps;
        let mut steps = Vec::with_capacity(k);
        let euler = |s: f64, t: f64, stochastic: bool| {
            euler_coefficients(
                sch.theta(s),
                sch.diffusion_sq(s).sqrt(),
                sch.sigma(s),
                s - t,
                stochastic,
            )
        };
        match self.kind {
            Baseline::EulerMaruyama | Baseline::EulerOde | Baseline::Posterior => {
                for w in tau.windows(2) {
                    let (s, t) = (w[0], w[1]);
                    let coeffs = match self.kind {
                        Baseline::EulerMaruyama => euler(s, t, true),
                        Baseline::EulerOde => euler(s, t, false),
                        _ => posterior_coefficients_exact(
                            sch.alpha(s),
                            sch.alpha(t),
                            sch.sigma(s),
                            sch.rate_integral(t, s),
                            sch.log_alpha(s),
                            sch.log_alpha(t),
                            si,
                        ),
                    };
                    steps.push(self.step(
                        fit,
                        s,
                        t,
                        sch.alpha(s),
                        sch.sigma(s),
                        coeffs,
                        Target::State,
                        1,
                    ));
                }
            }
            Baseline::Heun { stochastic } => {
                if sch.sigma(tau[k]) == 0.0 {
                    return Err(Error::Unsupported {
                        what: "Heun evaluates the score at the final time, where σ = 0 for this \
                               schedule; use CumulativeFrom::Zero or another sampler"
                            .into(),
                    });
                }
                let c = if stochastic { 1.0 } else { 0.5 };
                let mut j = 0;
                while j < k {
                    if j + 2 <= k {
                        let (a, b) = (tau[j], tau[j + 2]);
                        let delta = a - b;
                        let pred = euler(a, b, stochastic);
                        steps.push(self.step(
                            fit,
                            a,
                            b,
                            sch.alpha(a),
                            sch.sigma(a),
                            pred,
                            Target::Stage,
                            1,
                        ));
                        let (th_a, th_b) = (sch.theta(a), sch.theta(b));
                        let (g_a, g_b) = (sch.diffusion_sq(a).sqrt(), sch.diffusion_sq(b).sqrt());
                        let corr = StepCoeffs {
                            x: 1.0 + 0.5 * delta * th_a,
                            stage: 0.5 * delta * th_b,
                            q: [
                                -0.5 * delta * c * g_b * g_b / sch.sigma(b),
                                -0.5 * delta * c * g_a * g_a / sch.sigma(a),
                                0.0,
                                0.0,
                            ],
                            mu: -0.5 * delta * (th_a + th_b),
                            noise: stochastic.then(|| -0.5 * (g_a + g_b) * delta.sqrt()),
                        };
                        let mut corrector = self.step(
                            fit,
                            b,
                            b,
                            sch.alpha(b),
                            sch.sigma(b),
                            corr,
                            Target::State,
                            2,
                        );
                        // The corrector integrates the predictor's Brownian increment again;
                        // a fresh draw would be a different path (docs/math.md §5.4).
                        if let Update::Linear { reuse_noise, .. } = &mut corrector.update {
                            *reuse_noise = true;
                        }
                        steps.push(corrector);
                        j += 2;
                    } else {
                        let (a, b) = (tau[j], tau[j + 1]);
                        let e = euler(a, b, stochastic);
                        steps.push(self.step(
                            fit,
                            a,
                            b,
                            sch.alpha(a),
                            sch.sigma(a),
                            e,
                            Target::State,
                            1,
                        ));
                        j += 1;
                    }
                }
            }
        }
        let prior = sch.sigma(tau[0]);
        Ok(self.finish_plan(tau, steps, prior))
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        fit: FitTarget,
        t_eval: f64,
        t_next: f64,
        alpha: f64,
        sigma: f64,
        coeffs: StepCoeffs,
        target: Target,
        order: usize,
    ) -> PlannedStep {
        let si = self.schedule.sigma_inf();
        PlannedStep {
            t_eval,
            t_next,
            convert: convert_coefficients(fit, Parameterization::Noise, alpha, sigma, si),
            to_data: convert_coefficients(fit, Parameterization::Data, alpha, sigma, si),
            threshold: false,
            update: Update::Linear {
                coeffs,
                target,
                reuse_noise: false,
            },
            order,
        }
    }

    fn finish_plan(&self, timesteps: Vec<f64>, steps: Vec<PlannedStep>, prior_std: f64) -> Plan {
        Plan {
            timesteps,
            steps,
            prior_std,
            output_clip: self.output_clip,
            thresholding: (1.0, 1.0, 1.0),
            history: if matches!(self.kind, Baseline::Heun { .. }) {
                2
            } else {
                1
            },
            parallelism: self.parallelism,
        }
    }
}

impl<T: SamplerTensor> Sampler<T> for BaselineSampler {
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
#[allow(clippy::float_cmp)] // exact values (integer times, α_T = eps) are the point here
mod tests {
    use super::*;
    use crate::schedule::IrSdeSchedule;

    #[test]
    fn reference_visits_truncated_linspace() {
        let b = BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::EulerMaruyama, 10)
            .unwrap()
            .with_mode(Mode::Reference);
        let p = b.plan(FitTarget::Noise).unwrap();
        let visited: Vec<f64> = p.steps.iter().map(|s| s.t_eval).collect();
        assert_eq!(
            visited,
            vec![100.0, 89.0, 78.0, 67.0, 56.0, 45.0, 34.0, 23.0, 12.0, 1.0]
        );
        let p = BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::Posterior, 100)
            .unwrap()
            .with_mode(Mode::Reference)
            .plan(FitTarget::Noise)
            .unwrap();
        assert_eq!(p.steps.len(), 100);
        assert_eq!(p.steps[99].t_eval, 1.0);
    }

    #[test]
    fn unsupported_configurations_error() {
        let s = IrSdeSchedule::da_clip();
        let e = BaselineSampler::new(s.clone(), Baseline::EulerOde, 10)
            .unwrap()
            .with_mode(Mode::Reference);
        assert!(matches!(
            e.plan(FitTarget::Noise),
            Err(Error::Unsupported { .. })
        ));
        let h = BaselineSampler::new(s, Baseline::Heun { stochastic: false }, 10).unwrap();
        assert_eq!(h.plan(FitTarget::Noise).unwrap().steps.len(), 10);
        assert!(h.with_mode(Mode::Reference).plan(FitTarget::Noise).is_err());
    }
}
