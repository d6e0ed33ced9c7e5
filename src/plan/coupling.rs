//! Coupling a coarse stochastic pass to a fine one through one Brownian path (docs/math.md
//! §8.3), in pure `f64`.
//!
//! A stochastic step of a plan is linear in its state plus a Gaussian term:
//! `x_{i+1} = a_i x_i + … + n_i z_i`. Over the fine steps `i = p … q−1` that make up one coarse
//! step, the fine pass's noise reaches the coarse step's end as `Σ_i c_i z_i` with
//! `c_i = n_i · a_{i+1} ⋯ a_{q−1}` (each draw carried through the steps after it). The coarse step
//! draws `ζ = Σ_i c_i z_i / ‖c‖`: a standard normal, and, for the exponential integrators (whose
//! linear part is exact, so `‖c‖` equals the coarse step's own noise weight), exactly the
//! stochastic integral the coarse step needs on the fine pass's Brownian path. Coarse results
//! then converge to the fine pass's result as the coarse grid is refined (strong convergence),
//! which is what "distance to the sampler's own converged result" means for an SDE.

use super::{Plan, Target, Update};
use crate::error::{Error, Result};

/// Relative tolerance for a coarse grid time to coincide with a fine one.
const TIME_TOL: f64 = 1e-9;

/// One stochastic step: its interval and its `(x weight, noise weight)`.
struct Noisy {
    start: f64,
    end: f64,
    x: f64,
    noise: f64,
}

/// The stochastic steps of `plan`, in order, or an error for updates that cannot be coupled.
fn noisy_steps(plan: &Plan, which: &str) -> Result<Vec<Noisy>> {
    if plan.controller.is_some() {
        return Err(Error::InvalidGrid {
            reason: format!(
                "the {which} plan is adaptive; coupled noise needs fixed grids (use MrSampler or \
                 BaselineSampler)"
            ),
        });
    }
    let mut out = Vec::new();
    for s in &plan.steps {
        if let Update::Linear {
            coeffs,
            target,
            reuse_noise,
        } = s.update
            && let Some(noise) = coeffs.noise
        {
            if target != Target::State || reuse_noise || coeffs.stage != 0.0 {
                return Err(Error::InvalidGrid {
                    reason: format!(
                        "the {which} plan has a two-stage stochastic step (stochastic Heun); \
                             coupled noise supports one-stage steps"
                    ),
                });
            }
            out.push(Noisy {
                start: s.t_eval,
                end: s.t_next,
                x: coeffs.x,
                noise,
            });
        }
    }
    Ok(out)
}

fn same_time(a: f64, b: f64) -> bool {
    (a - b).abs() <= TIME_TOL * (1.0 + a.abs().max(b.abs()))
}

/// One coarse draw: the index of its first fine draw and the unnormalised weights `c_i` of
/// its fine draws.
struct Group {
    first: usize,
    weights: Vec<f64>,
}

/// The fine draws each coarse draw is made of (see the module docs). The fine plan's
/// stochastic steps must tile every coarse stochastic step exactly (the coarse grid's times
/// are fine grid times).
fn groups(coarse: &Plan, fine: &Plan) -> Result<Vec<Group>> {
    let (c, f) = (noisy_steps(coarse, "coarse")?, noisy_steps(fine, "fine")?);
    let mut groups = Vec::with_capacity(c.len());
    let mut i = 0;
    for step in &c {
        // Fine stochastic steps before this coarse step (e.g. under a deterministic coarse
        // step) are not part of any coarse draw; the fine pass still draws them.
        while i < f.len() && f[i].start > step.start && !same_time(f[i].start, step.start) {
            i += 1;
        }
        if i == f.len() || !same_time(f[i].start, step.start) {
            return Err(Error::InvalidGrid {
                reason: format!(
                    "the coarse stochastic step from t = {} is not a union of fine steps; give \
                     the fine (converged) pass the same grid family with a step count that is a \
                     multiple of the coarse one",
                    step.start
                ),
            });
        }
        let first = i;
        let mut weights: Vec<f64> = Vec::new();
        loop {
            // Carry the earlier draws of this group through fine step i, then add its own.
            for w in &mut weights {
                *w *= f[i].x;
            }
            weights.push(f[i].noise);
            let end = f[i].end;
            i += 1;
            if same_time(end, step.end) {
                break;
            }
            if end < step.end || i == f.len() || !same_time(f[i].start, end) {
                return Err(Error::InvalidGrid {
                    reason: format!(
                        "the fine steps from t = {} do not end at the coarse step's end t = {}; \
                         use a fine step count that is a multiple of the coarse one on the same \
                         grid family",
                        f[first].start, step.end
                    ),
                });
            }
        }
        groups.push(Group { first, weights });
    }
    Ok(groups)
}

/// For each noise draw of `coarse`, the weights `c_i/‖c‖` of the fine pass's draws it is made
/// of, starting after the previous coarse draw's (fine draws no coarse draw uses get weight 0,
/// so both passes number their draws alike).
pub(crate) fn coupling_weights(coarse: &Plan, fine: &Plan) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    let mut consumed = 0;
    for g in groups(coarse, fine)? {
        let norm = g.weights.iter().map(|w| w * w).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Error::InvalidGrid {
                reason: "the fine steps under a coarse stochastic step carry no noise".into(),
            });
        }
        let mut w = vec![0.0; g.first - consumed];
        consumed = g.first + g.weights.len();
        w.extend(g.weights.iter().map(|c| c / norm));
        out.push(w);
    }
    Ok(out)
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
    use crate::schedule::{IrSdeSchedule, TimeGrid};
    use crate::{FitTarget, MrSampler, Parameterization, Sampler, Solver};

    fn plan(steps: usize, order: usize, param: Parameterization, grid: TimeGrid) -> Plan {
        MrSampler::new(IrSdeSchedule::da_clip(), steps)
            .and_then(|s| s.with_solver(Solver::sde(order)))
            .and_then(|s| s.with_parameterization(param))
            .and_then(|s| s.with_grid(grid))
            .and_then(|s| s.plan(FitTarget::Noise))
            .unwrap()
    }

    /// The exponential integrators' linear part is exact, so the fine draws carried to a coarse
    /// step's end have exactly the coarse step's noise weight (docs/math.md §8.3).
    #[test]
    fn carried_fine_noise_has_the_coarse_steps_variance() {
        for param in [Parameterization::Data, Parameterization::Noise] {
            for order in [1, 2] {
                for grid in [TimeGrid::Linspace, TimeGrid::UniformLambda] {
                    let (coarse, fine) = (
                        plan(5, order, param, grid.clone()),
                        plan(40, order, param, grid.clone()),
                    );
                    let steps = noisy_steps(&coarse, "coarse").unwrap();
                    let groups = groups(&coarse, &fine).unwrap();
                    assert_eq!(groups.len(), steps.len());
                    for (g, s) in groups.iter().zip(&steps) {
                        assert_eq!(g.weights.len(), 8);
                        let norm = g.weights.iter().map(|w| w * w).sum::<f64>().sqrt();
                        assert!(
                            (norm - s.noise).abs() <= 1e-12 * s.noise,
                            "{param:?} SDE-{order} {grid:?}: {norm} vs {}",
                            s.noise
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn equal_grids_couple_draw_for_draw() {
        let p = plan(10, 2, Parameterization::Data, TimeGrid::Linspace);
        let w = coupling_weights(&p, &p).unwrap();
        assert_eq!(w.len(), 10);
        assert!(w.iter().all(|g| g.len() == 1 && (g[0] - 1.0).abs() < 1e-15));
    }

    #[test]
    fn grids_that_do_not_nest_are_refused() {
        let (coarse, fine) = (
            plan(6, 2, Parameterization::Data, TimeGrid::Linspace),
            plan(20, 2, Parameterization::Data, TimeGrid::Linspace),
        );
        let e = coupling_weights(&coarse, &fine).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidGrid { reason } if reason.contains("multiple")),
            "{e}"
        );
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
