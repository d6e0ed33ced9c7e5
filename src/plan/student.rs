//! Calibration (`docs/math.md` §10), its pure-`f64` part: the weights of a student step
//! between any two of a teacher's grid times, exactly as the planner would build them for a
//! grid through those times, and the weights that put a student's noise on the teacher's
//! Brownian path. The search that uses them runs the network, so it lives with the samplers
//! (`crate::calibrate`).

use super::multistep::{Forms, step_too_long};
use crate::config::{OrderRule, Solver};
use crate::param::{Affine, FitTarget, Parameterization, convert_coefficients};
use crate::solver::{Node, StepCoeffs, multistep_coefficients};

/// What a student step needs of the sampler and the network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub forms: Forms,
    pub param: Parameterization,
    pub solver: Solver,
    pub fit: FitTarget,
    pub sigma_inf: f64,
}

/// One student step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum StudentStep {
    /// `x_t = a·x_s + Σ_l c_l q_l + c_μ μ (+ w ζ)`, `q_l` the converted outputs at the step's
    /// history nodes (most recent first).
    Linear { coeffs: StepCoeffs, order: usize },
    /// The limit step into `σ = 0`: `x_t = x̂₀`, with `x̂₀ = a.net·q + a.x·x_s + a.mu·μ` from the
    /// converted output `q` at the step's start.
    Limit(Affine),
}

impl Rules {
    /// Network output → converted output `q` at `node`.
    pub(crate) fn convert(&self, node: Node) -> Affine {
        convert_coefficients(self.fit, self.param, node.alpha, node.sigma, self.sigma_inf)
    }

    /// Step `k` (1-based) of a grid whose order rule gave `base[k − 1]`, from `hist[0]` (the
    /// student's nodes, most recent first; at least `base[k − 1]` of them) to `target`.
    pub(crate) fn step(
        &self,
        base: &[usize],
        k: usize,
        hist: &[Node],
        target: Node,
    ) -> StudentStep {
        let s = hist[0];
        if target.sigma == 0.0 {
            let from = match self.param {
                Parameterization::Data => FitTarget::Data,
                Parameterization::Noise => FitTarget::Noise,
            };
            return StudentStep::Limit(convert_coefficients(
                from,
                Parameterization::Data,
                s.alpha,
                s.sigma,
                self.sigma_inf,
            ));
        }
        let mut order = base[k - 1].min(hist.len());
        if let OrderRule::StepRatio { max_ratio } = self.solver.order_rule().unwrap_or_default() {
            if k >= 2
                && order > 1
                && step_too_long(
                    max_ratio,
                    target.lambda - s.lambda,
                    s.lambda - hist[1].lambda,
                )
            {
                order = 1;
            }
        }
        let coeffs = multistep_coefficients(
            self.forms.equation,
            self.param,
            order,
            target,
            &hist[..order],
            self.forms.third,
            self.forms.second,
        );
        StudentStep::Linear { coeffs, order }
    }
}

/// The weights `v_f` of the teacher's draws `z_f` in the noise term `w·ζ` of a student step
/// from teacher node `i` to node `j` (`docs/math.md` §8.3): `ζ = Σ_f c_f z_f / ‖c‖`, `c_f` the
/// noise weight of teacher step `f` (from node `f` to `f + 1`) carried through the state
/// weights of the teacher steps after it up to `j`. `steps[f]` is teacher step `f`'s
/// `(state weight, noise weight)`, `None` when it draws no noise. Returns `(f, v_f)`.
pub(crate) fn coupled_weights(
    steps: &[Option<(f64, f64)>],
    i: usize,
    j: usize,
    w: f64,
) -> Vec<(usize, f64)> {
    let mut c: Vec<(usize, f64)> = Vec::new();
    for (f, step) in steps.iter().enumerate().take(j).skip(i) {
        if let Some((a, n)) = *step {
            c.iter_mut().for_each(|(_, v)| *v *= a);
            c.push((f, n));
        }
    }
    let norm = c.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { w / norm } else { 0.0 };
    c.iter_mut().for_each(|(_, v)| *v *= scale);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Update;
    use crate::plan::multistep::orders;
    use crate::sampler::{Mode, MrSampler, OdeMultistep, Sampler, SdeMultistep};
    use crate::schedule::{IrSdeSchedule, TimeGrid};

    /// Every step of a planned grid, rebuilt from its nodes by [`Rules::step`], has the
    /// planner's weights: a calibrated grid runs exactly the steps the search scored.
    #[test]
    fn student_steps_are_the_planners_steps() {
        let ratio = Solver::Ode(OdeMultistep {
            order_rule: Some(OrderRule::StepRatio { max_ratio: 1.2 }),
            ..OdeMultistep::new(2)
        });
        let grid = vec![100.0, 91.0, 70.0, 52.5, 30.0, 22.0, 9.0, 3.5, 0.0];
        let m = grid.len() - 1;
        for solver in [
            Solver::ode(1),
            Solver::ode(2),
            Solver::ode(3),
            ratio,
            Solver::Sde(SdeMultistep::new(1)),
            Solver::Sde(SdeMultistep::new(2)),
        ] {
            for param in [Parameterization::Data, Parameterization::Noise] {
                let sampler = MrSampler::new(IrSdeSchedule::da_clip(), m)
                    .unwrap()
                    .with_solver(solver)
                    .unwrap()
                    .with_parameterization(param)
                    .unwrap()
                    .with_grid(TimeGrid::Custom(grid.clone()))
                    .unwrap();
                let plan = sampler.plan(FitTarget::Noise).unwrap();
                let view = sampler.model_schedule().unwrap();
                let nodes: Vec<Node> = grid
                    .iter()
                    .map(|&t| super::super::node(&*view, t))
                    .collect();
                let rules = Rules {
                    forms: Forms::of(&sampler.settings()),
                    param,
                    solver,
                    fit: FitTarget::Noise,
                    sigma_inf: view.sigma_inf(),
                };
                let base = orders(Mode::Exact, &solver, m, &[]);
                for k in 1..=m {
                    let hist: Vec<Node> = (0..k).rev().map(|i| nodes[i]).collect();
                    let planned = plan.steps[k - 1];
                    assert_eq!(planned.convert, rules.convert(nodes[k - 1]));
                    match (rules.step(&base, k, &hist, nodes[k]), planned.update) {
                        (
                            StudentStep::Linear { coeffs, order },
                            Update::Linear { coeffs: p, .. },
                        ) => {
                            assert_eq!(
                                (coeffs, order),
                                (p, planned.order),
                                "{solver:?} {param:?} k={k}"
                            );
                        }
                        (StudentStep::Limit(a), Update::Replace { convert, .. }) => {
                            // The plan converts the raw output; the student step the converted one.
                            let c = planned.convert;
                            let close = |u: f64, v: f64| (u - v).abs() <= 1e-12 * (1.0 + v.abs());
                            assert!(close(a.net * c.net, convert.net), "{solver:?} {param:?}");
                            assert!(close(a.net * c.x + a.x, convert.x), "{solver:?} {param:?}");
                            assert!(
                                close(a.net * c.mu + a.mu, convert.mu),
                                "{solver:?} {param:?}"
                            );
                        }
                        (s, u) => panic!("{solver:?} {param:?} k={k}: {s:?} vs {u:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn coupled_weights_carry_the_teacher_draws() {
        // Two teacher steps with (state, noise) weights (0.5, 0.2), (0.8, 0.3): the draw reaching
        // node 2 is 0.2·0.8·z₀ + 0.3·z₁, normalised and scaled to the student's weight.
        let steps = [Some((0.5, 0.2)), Some((0.8, 0.3)), None];
        let v = coupled_weights(&steps, 0, 2, 2.0);
        let c: [f64; 2] = [0.2 * 0.8, 0.3];
        let norm = (c[0] * c[0] + c[1] * c[1]).sqrt();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].0, v[1].0), (0, 1));
        assert!((v[0].1 - 2.0 * c[0] / norm).abs() < 1e-15);
        assert!((v[1].1 - 2.0 * c[1] / norm).abs() < 1e-15);
        // A step onto the teacher's own next node draws the teacher's draw, at its own weight.
        let one = coupled_weights(&steps, 1, 2, 0.3);
        assert_eq!(one.len(), 1);
        assert!((one[0].1 - 0.3).abs() < 1e-15);
        assert!(coupled_weights(&steps, 2, 3, 1.0).is_empty());
    }
}
