//! The baselines' plans (`docs/math.md` §6): Euler–Maruyama, Euler on the probability-flow
//! ODE, posterior sampling and Heun. They convert the network output to a noise prediction.

use super::settings::BaselineSettings;
use super::{Frame, Plan, PlannedStep, Target, Update};
use crate::config::Baseline;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::schedule::{Schedule, TimeGrid, build_grid};
use crate::solver::{
    Node, ProcessAt, euler_coefficients, heun_corrector_coefficients, posterior_coefficients_exact,
    posterior_coefficients_reference,
};

fn frame(cfg: &BaselineSettings, fit: FitTarget) -> Frame<'_> {
    Frame {
        view: &*cfg.schedule,
        fit,
        param: Parameterization::Noise,
        threshold_q: false,
        threshold_x0: false,
    }
}

/// Compiles a [`BaselineSampler`](crate::BaselineSampler) for a network trained on `fit`.
pub(crate) fn plan(cfg: &BaselineSettings, fit: FitTarget) -> Result<Plan> {
    let (timesteps, steps, prior_std) = match cfg.mode {
        Mode::Reference => reference(cfg, fit)?,
        Mode::Exact => exact(cfg, fit)?,
    };
    let history = if matches!(cfg.kind, Baseline::Heun { .. }) {
        2
    } else {
        1
    };
    Ok(Plan {
        timesteps,
        steps,
        prior_std,
        data_range: cfg.data_range,
        thresholding: None,
        history,
        parallelism: cfg.parallelism,
        controller: None,
    })
}

type Planned = (Vec<f64>, Vec<PlannedStep>, f64);

/// Reference mode: `int(linspace(1, T, K))` from the top, one index per call (`docs/math.md`
/// §6.1). The sampler's `validate` has checked the schedule's knots and the kind.
fn reference(cfg: &BaselineSettings, fit: FitTarget) -> Result<Planned> {
    let sch = &cfg.schedule;
    let knots = sch.knots().ok_or(Error::ScheduleMismatch {
        needs: "integer-index knots (reference-mode baselines visit them)",
        fix: "use an IrSdeSchedule, or exact mode",
    })?;
    let n = knots.t.len() - 1;
    let k = cfg.num_steps;
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
    let frame = frame(cfg, fit);
    let steps = idx
        .iter()
        .map(|&i| {
            let coeffs = match cfg.kind {
                Baseline::EulerMaruyama => {
                    euler_coefficients(knots.theta[i], knots.g[i], knots.sigma[i], dt, true)
                }
                Baseline::EulerOde => {
                    euler_coefficients(knots.theta[i], knots.g[i], knots.sigma[i], dt, false)
                }
                Baseline::Posterior => posterior_coefficients_reference(
                    knots.theta[i],
                    knots.theta_cumsum[i],
                    knots.theta_cumsum[i - 1],
                    dt,
                    knots.sigma[i],
                    si,
                ),
                Baseline::Heun { .. } => unreachable!("validate rejects reference-mode Heun"),
            };
            let at = Node {
                alpha: knots.alpha[i],
                sigma: knots.sigma[i],
                lambda: knots.lambda[i],
            };
            frame.step_at(at, (i as f64, i as f64 - 1.0), Update::state(coeffs), 1)
        })
        .collect();
    let mut timesteps: Vec<f64> = idx.iter().map(|&i| i as f64).collect();
    timesteps.push(*idx.last().expect("k >= 1") as f64 - 1.0);
    Ok((timesteps, steps, si))
}

/// Exact mode: strided steps over `linspace(T, 0, K + 1)` (`docs/math.md` §6.2).
fn exact(cfg: &BaselineSettings, fit: FitTarget) -> Result<Planned> {
    let sch: &dyn Schedule = &*cfg.schedule;
    let k = cfg.num_steps;
    let tau = build_grid(&TimeGrid::Linspace, k, None, Mode::Exact, sch)?;
    let si = sch.sigma_inf();
    let frame = frame(cfg, fit);
    let euler = |s: f64, t: f64, stochastic: bool| {
        euler_coefficients(
            sch.theta(s),
            sch.diffusion_sq(s).sqrt(),
            sch.sigma(s),
            s - t,
            stochastic,
        )
    };
    let mut steps = Vec::with_capacity(k);
    match cfg.kind {
        Baseline::EulerMaruyama | Baseline::EulerOde | Baseline::Posterior => {
            for w in tau.windows(2) {
                let (s, t) = (w[0], w[1]);
                let coeffs = match cfg.kind {
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
                steps.push(frame.step((s, t), Update::state(coeffs), 1));
            }
        }
        Baseline::Heun { stochastic } => {
            if sch.sigma(tau[k]) == 0.0 {
                return Err(Error::ScheduleMismatch {
                    needs: "σ > 0 at the grid's last time (Heun evaluates the score there)",
                    fix: "use CumulativeFrom::Zero, or another sampler",
                });
            }
            let mut j = 0;
            while j < k {
                if j + 2 > k {
                    // An odd count ends with one Euler step.
                    let (a, b) = (tau[j], tau[j + 1]);
                    steps.push(frame.step((a, b), Update::state(euler(a, b, stochastic)), 1));
                    j += 1;
                    continue;
                }
                // Predictor: Euler over the double interval into the stage; corrector: the
                // trapezoid of the drifts at both ends (`docs/math.md` §6.3).
                let (a, b) = (tau[j], tau[j + 2]);
                let delta = a - b;
                let predictor = Update::Linear {
                    coeffs: euler(a, b, stochastic),
                    target: Target::Stage,
                    reuse_noise: false,
                };
                steps.push(frame.step((a, b), predictor, 1));
                let at = |t: f64| ProcessAt {
                    theta: sch.theta(t),
                    g: sch.diffusion_sq(t).sqrt(),
                    sigma: sch.sigma(t),
                };
                let corrector = heun_corrector_coefficients(at(a), at(b), delta, stochastic);
                // The corrector integrates the predictor's Brownian increment again; a fresh
                // draw would be a different path.
                let corrector = Update::Linear {
                    coeffs: corrector,
                    target: Target::State,
                    reuse_noise: true,
                };
                steps.push(frame.step((b, b), corrector, 2));
                j += 2;
            }
        }
    }
    let prior = sch.sigma(tau[0]);
    Ok((tau, steps, prior))
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values (integer times, α_T = eps) are the point here
mod tests {
    use super::*;
    use crate::BaselineSampler;
    use crate::schedule::IrSdeSchedule;

    #[test]
    fn reference_visits_truncated_linspace() {
        let b = BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::EulerMaruyama, 10)
            .unwrap()
            .with_reference_unit_steps(true)
            .unwrap();
        let p = plan(&b.settings(), FitTarget::Noise).unwrap();
        let visited: Vec<f64> = p.steps.iter().map(|s| s.t_eval).collect();
        assert_eq!(
            visited,
            vec![100.0, 89.0, 78.0, 67.0, 56.0, 45.0, 34.0, 23.0, 12.0, 1.0]
        );
        let b = BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::Posterior, 100)
            .unwrap()
            .with_mode(Mode::Reference)
            .unwrap();
        let p = plan(&b.settings(), FitTarget::Noise).unwrap();
        assert_eq!(p.steps.len(), 100);
        assert_eq!(p.steps[99].t_eval, 1.0);
    }
}
