//! The MR Sampler's multistep plan (`docs/math.md` §4.2–§4.5, §5): one evaluation per grid
//! step; step `k` of order `p` reads the outputs of the last `p` grid times.

use super::settings::MrsSettings;
use super::{Frame, Plan, PlannedStep, Target, Update, correct_prior};
use crate::config::{Mode, OrderRule, Solver};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization};
use crate::schedule::{Schedule, build_grid};
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
    let stepper = Stepper::new(cfg, &*view, fit, m);
    let nodes: Vec<Node> = tau.iter().map(|&t| stepper.node(t)).collect();
    let mut steps: Vec<PlannedStep> = Vec::with_capacity(m);
    let mut predictor: Option<PlannedStep> = None;
    for k in 1..=m {
        // The nodes before step k, most recent first (as many as any step reads).
        let hist: Vec<Node> = nodes[..k].iter().rev().take(HISTORY).copied().collect();
        let step = stepper.step(k, (tau[k - 1], tau[k]), &hist, nodes[k])?;
        steps.push(stepper.corrected(k, predictor.as_ref(), step, &hist));
        predictor = Some(step);
    }
    let prior_std = match cfg.mode {
        Mode::Exact => view.sigma(tau[0]),
        Mode::Reference => view.sigma_inf(),
    };
    Ok(cfg.finish_plan(tau, steps, prior_std, stepper.history()))
}

/// How many past nodes a step (with its folded correction) can read: a third-order step
/// corrected after a third-order step reads the three nodes before its start.
pub(crate) const HISTORY: usize = 4;

/// Builds any step of a multistep plan from its nodes. The planner builds its grid's steps with
/// it, and the calibration search (`crate::calibrate`) its candidate steps between any two
/// teacher times, so a calibrated grid runs exactly the steps the search scored.
pub(crate) struct Stepper<'a> {
    cfg: &'a MrsSettings,
    frame: Frame<'a>,
    forms: Forms,
    /// Step `k`'s order before [`OrderRule::StepRatio`]'s test (which reads the nodes).
    base: Vec<usize>,
    m: usize,
}

impl<'a> Stepper<'a> {
    /// The steps of an `m`-step pass of `cfg` on `view` (the sampler's model schedule), for a
    /// network trained on `fit`.
    pub(crate) fn new(
        cfg: &'a MrsSettings,
        view: &'a dyn Schedule,
        fit: FitTarget,
        m: usize,
    ) -> Self {
        let exact = cfg.mode == Mode::Exact;
        let param = cfg.parameterization;
        Self {
            cfg,
            frame: Frame {
                view,
                fit,
                param,
                threshold_q: cfg.thresholding.is_some()
                    && (!exact || param == Parameterization::Data),
                threshold_x0: cfg.thresholding.is_some(),
            },
            forms: Forms::of(cfg),
            base: orders(cfg.mode, &cfg.solver, m, &[]),
            m,
        }
    }

    /// The schedule at `t`.
    pub(crate) fn node(&self, t: f64) -> Node {
        self.frame.node(t)
    }

    /// How many converted outputs the pass keeps (its [`Plan`]'s history).
    pub(crate) fn history(&self) -> usize {
        self.cfg.solver.order() + usize::from(self.forms.corrector)
    }

    /// Network output at `node` → the stored output `q`, and whether `q` is thresholded.
    pub(crate) fn convert(&self, node: Node) -> (crate::param::Affine, bool) {
        let step = self.frame.step_at(
            node,
            (0.0, 0.0),
            Update::state(crate::solver::StepCoeffs::ZERO),
            0,
        );
        (step.convert, step.threshold)
    }

    /// Step `k` (1-based) of `m`, from the time `times.0` to `times.1`: `hist` holds the nodes
    /// of the pass's times up to `times.0`, most recent first (at least the step's order of
    /// them, up to [`HISTORY`]), `target` the node at `times.1`. This is the predictor:
    /// [`corrected`](Self::corrected) adds the corrections that read the step before.
    pub(crate) fn step(
        &self,
        k: usize,
        times: (f64, f64),
        hist: &[Node],
        target: Node,
    ) -> Result<PlannedStep> {
        let cfg = self.cfg;
        let exact = cfg.mode == Mode::Exact;
        let frame = &self.frame;
        let step = if k == self.m && cfg.denoise_last {
            if exact {
                frame.to_data(times, 0)
            } else {
                // The reference returns the converted output in the solver's parameterization.
                frame.to_solver_output(times, 0)
            }
        } else if exact && target.sigma == 0.0 {
            frame.to_data(times, 1)
        } else {
            let mut order = self.base[k - 1].min(hist.len());
            // An extrapolation over a step much longer (in λ) than the previous one falls
            // back to first order (exact mode's `OrderRule::StepRatio`).
            if let (true, OrderRule::StepRatio { max_ratio }) =
                (exact, cfg.solver.order_rule().unwrap_or_default())
                && k >= 2
                && hist.len() >= 2
                && step_too_long(
                    max_ratio,
                    target.lambda - hist[0].lambda,
                    hist[0].lambda - hist[1].lambda,
                )
            {
                order = 1;
            }
            let history = &hist[..order];
            // Repeated grid times (reference mode only): the reference divides by the zero
            // λ-step of a higher-order update and its run ends in non-finite values.
            let lams: Vec<f64> = std::iter::once(target.lambda)
                .chain(history.iter().map(|n| n.lambda))
                .collect();
            #[allow(clippy::float_cmp)] // an exactly repeated time, not a near one
            let repeated = lams.windows(2).any(|w| w[0] == w[1]);
            if order > 1 && repeated {
                return Err(Error::grid(format!(
                    "the {} grid repeats a time within the {order} nodes of step {k} (t = {}); \
                     an order-{order} update divides by the zero λ-step there: use fewer steps, \
                     another grid, or exact mode",
                    cfg.grid.name(),
                    times.0
                )));
            }
            let Forms {
                equation,
                second,
                third,
                ..
            } = self.forms;
            let coeffs = multistep_coefficients(
                equation,
                frame.param,
                order,
                target,
                history,
                third,
                second,
            );
            frame.step_at(hist[0], times, Update::state(coeffs), order)
        };
        Ok(step)
    }

    /// Step `k` as the pass runs it: `step` (from [`step`](Self::step)) with the prior
    /// correction on step 1 (`docs/math.md` §5.5) and, with the UniC corrector, the
    /// correction of the state it starts from folded in (§4.5): `prev` is step `k − 1` as
    /// [`step`](Self::step) built it, `hist` the nodes `step` was built from. The state after
    /// `prev` is corrected with the output evaluated there, which `step` reads anyway, so the
    /// correction costs no evaluation.
    pub(crate) fn corrected(
        &self,
        k: usize,
        prev: Option<&PlannedStep>,
        mut step: PlannedStep,
        hist: &[Node],
    ) -> PlannedStep {
        if k == 1 && self.cfg.prior_correction {
            correct_prior(std::slice::from_mut(&mut step), hist[0].alpha);
        }
        if let Some(prev) = prev {
            self.fold_correction(prev, &mut step, hist);
        }
        step
    }

    fn fold_correction(&self, prev: &PlannedStep, step: &mut PlannedStep, hist: &[Node]) {
        if !self.forms.corrector {
            return;
        }
        let (
            Update::Linear { coeffs: p, .. },
            Update::Linear {
                coeffs: mut c,
                target: Target::State,
                reuse_noise,
            },
        ) = (prev.update, step.update)
        else {
            return;
        };
        // `prev` went from hist[1] to hist[0] with order `prev.order`.
        let order = prev.order.clamp(1, 3).min(hist.len() - 1);
        let earlier = &hist[1..=order];
        let (_, w, mu_c) = unic_corrected_state(order, hist[0], earlier);
        // δ = x^c − x^p, on [m_{k−1}, m_{k−2}, …] (history slots 0, 1, …) and μ.
        let a = c.x;
        c.q[0] += a * w[0];
        for (i, (cq, wi)) in c.q.iter_mut().zip(w).enumerate().skip(1) {
            *cq += a * (wi - p.q[i - 1]);
        }
        c.mu += a * (mu_c - p.mu);
        step.update = Update::Linear {
            coeffs: c,
            target: Target::State,
            reuse_noise,
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OdeMultistep;
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
