//! The MR Sampler's singlestep ODE plan (`docs/math.md` §4.4): each outer step of order `p`
//! becomes `p` planned evaluations, the first `p − 1` writing the stages.

use super::settings::MrsSettings;
use super::{Frame, Plan, Target, Update, correct_prior};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::schedule::{Schedule, build_grid};
use crate::solver::{Node, singlestep_coefficients, singlestep_fractions};

/// Compiles a singlestep [`MrSampler`](crate::MrSampler) for a network trained on `fit`.
pub(crate) fn plan(cfg: &MrsSettings, fit: FitTarget) -> Result<Plan> {
    let view = cfg.model_schedule()?;
    let (tau, blocks) = grid(cfg, &*view)?;
    let param = cfg.parameterization;
    let frame = Frame {
        view: &*view,
        fit,
        param,
        threshold_q: cfg.thresholding.is_some() && param == Parameterization::Data,
        threshold_x0: cfg.thresholding.is_some(),
    };
    let mut steps = Vec::with_capacity(cfg.num_steps);
    for (k, &order) in blocks.iter().enumerate() {
        let (s, t) = (frame.node(tau[k]), frame.node(tau[k + 1]));
        if t.sigma == 0.0 {
            // The limit step into σ = 0: the state becomes the data prediction.
            steps.push(frame.to_data((tau[k], tau[k + 1]), order));
            continue;
        }
        let h = t.lambda - s.lambda;
        let stage_times: Vec<f64> = singlestep_fractions(order)
            .iter()
            .map(|r| view.t_of_lambda(s.lambda + r * h))
            .collect();
        let stages: Vec<Node> = stage_times.iter().map(|&u| frame.node(u)).collect();
        let coeffs = singlestep_coefficients(param, order, s, &stages, t);
        let evals = std::iter::once(tau[k]).chain(stage_times.iter().copied());
        let nexts = stage_times
            .iter()
            .copied()
            .chain(std::iter::once(tau[k + 1]));
        for (j, (times, c)) in evals.zip(nexts).zip(coeffs).enumerate() {
            let target = if j + 1 < order {
                Target::Stage
            } else {
                Target::State
            };
            let update = Update::Linear {
                coeffs: c,
                target,
                reuse_noise: false,
            };
            steps.push(frame.step(times, update, order));
        }
    }
    if cfg.prior_correction {
        let first = blocks.first().copied().unwrap_or(0);
        correct_prior(&mut steps[..first], view.alpha(tau[0]));
    }
    let history = blocks.iter().copied().max().unwrap_or(1);
    let prior_std = view.sigma(tau[0]);
    Ok(cfg.finish_plan(tau, steps, prior_std, history))
}

/// The outer grid and the order of each of its steps. The `M` evaluations are split into
/// steps of the configured order `p` (the remainder in one lower-order step; a remainder of 1
/// after order 3 becomes two order-2 steps); a last step into `σ = 0` is the one-evaluation
/// limit step. The sampler's `validate` has ruled out reference mode, custom grids and
/// `denoise_last`.
pub(crate) fn grid(cfg: &MrsSettings, view: &dyn Schedule) -> Result<(Vec<f64>, Vec<usize>)> {
    debug_assert_eq!(cfg.mode, Mode::Exact);
    let build = |k: usize| build_grid(&cfg.grid, k, cfg.lambda_min, cfg.mode, view);
    // Whether the grid ends in σ = 0 does not depend on its length.
    let end = build(1)?.last().copied().unwrap_or(f64::NAN);
    let limit = view.sigma(end) == 0.0;
    let budget = cfg.num_steps - usize::from(limit);
    let p = cfg.solver.order();
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
            cfg.grid.name(),
            tau.len() - 1,
            blocks.len()
        )));
    }
    Ok((tau, blocks))
}
