//! The MR Sampler's multistep plan (`docs/math.md` §4.2–§4.5, §5): one evaluation per grid
//! step; step `k` of order `p` reads the outputs of the last `p` grid times.

use super::settings::MrsSettings;
use super::{Frame, Plan, PlannedStep, Target, Update, correct_prior};
use crate::config::{Mode, OrderRule, Solver};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::schedule::build_grid;
use crate::solver::unic_corrected_state;
use crate::solver::{Equation, Node, SecondOrder, ThirdOrder, multistep_coefficients};

/// Compiles a multistep [`MrSampler`](crate::MrSampler) (ODE or SDE) for a network trained on `fit`.
pub(crate) fn plan(cfg: &MrsSettings, fit: FitTarget) -> Result<Plan> {
    let view = cfg.model_schedule()?;
    let tau = build_grid(&cfg.grid, cfg.num_steps, cfg.lambda_min, cfg.mode, &*view)?;
    let m = tau.len() - 1;
    let p = cfg.solver.order();
    if cfg.mode == Mode::Reference && m < p {
        return Err(Error::TooFewSteps { steps: m, order: p });
    }
    let exact = cfg.mode == Mode::Exact;
    let param = cfg.parameterization;
    let frame = Frame {
        view: &*view,
        fit,
        param,
        threshold_q: cfg.thresholding.is_some() && (!exact || param == Parameterization::Data),
        threshold_x0: cfg.thresholding.is_some(),
    };
    let nodes: Vec<Node> = tau.iter().map(|&t| frame.node(t)).collect();
    let lambdas: Vec<f64> = nodes.iter().map(|n| n.lambda).collect();
    let orders = orders(cfg.mode, &cfg.solver, m, &lambdas);
    let Forms {
        equation,
        second,
        third,
        corrector,
    } = Forms::of(cfg);
    let mut steps = Vec::with_capacity(m);
    for k in 1..=m {
        let times = (tau[k - 1], tau[k]);
        let step = if k == m && cfg.denoise_last {
            if exact {
                frame.to_data(times, 0)
            } else {
                // The reference returns the converted output in the solver's parameterization.
                frame.to_solver_output(times, 0)
            }
        } else if exact && nodes[k].sigma == 0.0 {
            frame.to_data(times, 1)
        } else {
            let order = orders[k - 1];
            let history: Vec<Node> = (0..order).map(|j| nodes[k - 1 - j]).collect();
            // Repeated grid times (reference mode only): the reference divides by the zero
            // λ-step of a higher-order update and its run ends in non-finite values.
            let lams = std::iter::once(nodes[k].lambda).chain(history.iter().map(|n| n.lambda));
            let lams: Vec<f64> = lams.collect();
            #[allow(clippy::float_cmp)] // an exactly repeated time, not a near one
            let repeated = lams.windows(2).any(|w| w[0] == w[1]);
            if order > 1 && repeated {
                return Err(Error::grid(format!(
                    "the {} grid repeats a time within the {order} nodes of step {k} (t = {}); \
                     an order-{order} update divides by the zero λ-step there: use fewer steps, \
                     another grid, or exact mode",
                    cfg.grid.name(),
                    tau[k - 1]
                )));
            }
            let coeffs =
                multistep_coefficients(equation, param, order, nodes[k], &history, third, second);
            frame.step_at(nodes[k - 1], times, Update::state(coeffs), order)
        };
        steps.push(step);
    }
    if corrector {
        fold_corrections(&mut steps, &nodes);
    }
    if cfg.prior_correction {
        let first = steps.len().min(1);
        correct_prior(&mut steps[..first], nodes[0].alpha);
    }
    let prior_std = if exact {
        view.sigma(tau[0])
    } else {
        view.sigma_inf()
    };
    Ok(cfg.finish_plan(tau, steps, prior_std, p + usize::from(corrector)))
}

/// The solver forms a multistep configuration's steps are built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forms {
    pub equation: Equation,
    pub second: SecondOrder,
    pub third: ThirdOrder,
    /// Whether the UniC corrector is folded into the steps.
    pub corrector: bool,
}

impl Forms {
    /// The forms of a multistep `cfg` (not singlestep).
    pub(crate) fn of(cfg: &MrsSettings) -> Self {
        let (equation, second, third, corrector) = match cfg.solver {
            Solver::Ode(o) => (
                Equation::Ode,
                o.second_order,
                o.third_order.unwrap_or(match cfg.mode {
                    Mode::Exact => ThirdOrder::Taylor,
                    Mode::Reference => ThirdOrder::HalfD2,
                }),
                o.corrector,
            ),
            Solver::Sde(s) => (Equation::Sde, s.second_order, ThirdOrder::Taylor, false),
            Solver::OdeSinglestep { .. } => unreachable!("singlestep has its own planner"),
        };
        Self {
            equation,
            second,
            third,
            corrector,
        }
    }
}

/// [`OrderRule::StepRatio`]'s test: whether the λ-step `h = λ_t − λ_s` is more than
/// `max_ratio` times the previous one `h_prev = λ_s − λ_r`.
pub(crate) fn step_too_long(max_ratio: f64, h: f64, h_prev: f64) -> bool {
    h / h_prev > max_ratio
}

/// Orders per step: the reference's rule (`docs/math.md` §5.1) or exact mode's warm-up plus
/// [`OrderRule`] (§5.2). `lambdas` (the grid's λ, `M + 1` values) is read by
/// [`OrderRule::StepRatio`].
pub(crate) fn orders(mode: Mode, solver: &Solver, m: usize, lambdas: &[f64]) -> Vec<usize> {
    let p = solver.order();
    let rule = solver.order_rule().unwrap_or_default();
    (1..=m)
        .map(|k| match mode {
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
                let lower_final = if m < 15 { o.min(m - k + 1) } else { o };
                match rule {
                    OrderRule::LowerOrderFinal => lower_final,
                    OrderRule::Full => o,
                    OrderRule::StepRatio { max_ratio } => {
                        // An extrapolation over a step much longer (in λ) than the previous one
                        // falls back to first order.
                        let too_long = k >= 2
                            && lambdas.len() > k
                            && step_too_long(
                                max_ratio,
                                lambdas[k] - lambdas[k - 1],
                                lambdas[k - 1] - lambdas[k - 2],
                            );
                        if too_long { 1 } else { lower_final }
                    }
                }
            }
        })
        .collect()
}

/// Folds the UniC correction of each state into the next step's weights (`docs/math.md`
/// §4.5): the state after step k−1 is corrected with the output `m_{k−1}` evaluated there,
/// which step k has anyway, so the correction costs no network evaluation. The last state is
/// not corrected.
fn fold_corrections(steps: &mut [PlannedStep], nodes: &[Node]) {
    // The predictor weights, before any folding.
    let original: Vec<PlannedStep> = steps.to_vec();
    for k in 2..=steps.len() {
        let (prev, cur) = (original[k - 2], original[k - 1]);
        let (
            Update::Linear { coeffs: p, .. },
            Update::Linear {
                coeffs: mut c,
                target: Target::State,
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
            target: Target::State,
            reuse_noise,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::OdeMultistep;
    use crate::solver::SecondOrder;

    #[test]
    fn reference_order_rule() {
        let o = |p: usize, m: usize| orders(Mode::Reference, &Solver::ode(p), m, &[]);
        assert_eq!(o(2, 5), vec![1, 2, 2, 1, 2]);
        assert_eq!(o(3, 5), vec![1, 2, 2, 1, 3]);
        assert_eq!(o(3, 10), vec![1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn exact_order_rule() {
        let o = |m: usize| orders(Mode::Exact, &Solver::ode(3), m, &[]);
        assert_eq!(o(5), vec![1, 2, 3, 2, 1]);
        assert_eq!(o(2), vec![1, 1]);
        assert_eq!(o(1), vec![1]);
        assert_eq!(o(15)[14], 3);
        assert_eq!(o(14)[13], 1);
        let full = Solver::Ode(OdeMultistep {
            order_rule: Some(OrderRule::Full),
            ..OdeMultistep::new(3)
        });
        assert_eq!(orders(Mode::Exact, &full, 5, &[]), vec![1, 2, 3, 3, 3]);
    }

    #[test]
    fn second_order_form_is_read() {
        // Midpoint and Taylor differ in the order-2 weights.
        let s = Node::at_lambda(-1.0, 0.2);
        let r = Node::at_lambda(-1.5, 0.2);
        let t = Node::at_lambda(-0.4, 0.2);
        let w = |f| {
            multistep_coefficients(
                Equation::Ode,
                Parameterization::Data,
                2,
                t,
                &[s, r],
                ThirdOrder::Taylor,
                f,
            )
        };
        assert!((w(SecondOrder::Taylor).q[1] - w(SecondOrder::Midpoint).q[1]).abs() > 1e-3);
    }
}
