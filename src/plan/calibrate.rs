//! Calibration search (`docs/math.md` §9), in pure `f64`: the `K`-step grid, chosen among the
//! times of a fine teacher pass, whose steps stay closest to the teacher's trajectory.
//!
//! The teacher pass (same solver, many steps) is recorded at a fixed subset of coordinates:
//! its states `x_n` at every grid time, its converted outputs `q_n` (solver parameterization)
//! and, for the SDE, its noise draws. A student step from node `i` to node `j` of order `p`
//! reads the outputs at `i` and the `p − 1` student nodes before it; started from the
//! teacher's state `x_i` with the teacher's outputs there, it lands at
//! `x̂_j = a·x_i + Σ_l c_l q_{n_l} + c_μ μ (+ the coupled noise)`, which costs no network
//! evaluation. Its local error is `‖x̂_j − x_j‖` (root mean square over the recorded
//! coordinates). A dynamic programme over (step index, last `p` student nodes) minimises the
//! sum of the local errors of a `K`-step path from the first to the last teacher node: the
//! history of a multistep step is part of the state, and the order of each step follows the
//! sampler's order rule at `M = K`, so every cost is the one the planned step will have.

use std::collections::HashMap;

use super::multistep::{Forms, orders, step_too_long};
use crate::error::{Error, Result};
use crate::param::{FitTarget, Parameterization, convert_coefficients};
use crate::sampler::{Mode, OrderRule, Solver};
use crate::solver::{Node, StepCoeffs, multistep_coefficients};

/// A teacher pass recorded at a subset of coordinates (every vector has the same length).
#[derive(Debug, Clone, Default)]
pub(crate) struct Trajectory {
    /// The schedule at the teacher's grid times `τ_0 > … > τ_N`.
    pub nodes: Vec<Node>,
    /// States at `τ_0 … τ_N` (`N + 1` vectors).
    pub x: Vec<Vec<f64>>,
    /// Converted outputs at `τ_0 … τ_{N−1}` (`N` vectors).
    pub q: Vec<Vec<f64>>,
    /// The mean `μ`.
    pub mu: Vec<f64>,
    /// Per teacher step `n = 1 … N` (from `τ_{n−1}` to `τ_n`): its state weight, its noise
    /// weight and its draw (`None` for a deterministic step).
    pub noise: Vec<Option<NoisyStep>>,
}

/// A teacher step's state weight, noise weight and draw.
pub(crate) type NoisyStep = (f64, f64, Vec<f64>);

/// What the search needs of the sampler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub forms: Forms,
    pub param: Parameterization,
    pub solver: Solver,
    pub sigma_inf: f64,
}

/// The best path: node indices `0 = n_0 < n_1 < … < n_K = N` and its summed local error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    pub nodes: Vec<usize>,
    pub cost: f64,
}

const NONE: usize = usize::MAX;

/// Student nodes a step reads, most recent first (`NONE` past the start).
type State = [usize; 3];

impl Trajectory {
    /// The number of teacher steps `N`.
    fn steps(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Checks that the vectors agree with the nodes.
    fn validate(&self) -> Result<()> {
        let n = self.steps();
        let len = self.mu.len();
        let ok = self.nodes.len() >= 2
            && self.x.len() == n + 1
            && self.q.len() >= n
            && self.noise.len() == n
            && self.x.iter().chain(&self.q).all(|v| v.len() == len)
            && self.noise.iter().flatten().all(|(_, _, z)| z.len() == len);
        if ok {
            Ok(())
        } else {
            Err(Error::StepOrder {
                what: "calibration trajectory is incomplete (the teacher pass did not finish)",
            })
        }
    }

    /// The student step `hist[0] → j` of `order`: its local error against the teacher.
    fn local_error(&self, rules: &Rules, order: usize, hist: State, j: usize) -> f64 {
        let i = hist[0];
        let (xi, target) = (&self.x[i], &self.x[j]);
        let mut sum = 0.0;
        if self.nodes[j].sigma == 0.0 {
            // The limit step into σ = 0: the state becomes the data prediction at `i`.
            let from = match rules.param {
                Parameterization::Data => FitTarget::Data,
                Parameterization::Noise => FitTarget::Noise,
            };
            let n = self.nodes[i];
            let c = convert_coefficients(
                from,
                Parameterization::Data,
                n.alpha,
                n.sigma,
                rules.sigma_inf,
            );
            for (k, t) in target.iter().enumerate() {
                let e = c.net * self.q[i][k] + c.x * xi[k] + c.mu * self.mu[k] - t;
                sum += e * e;
            }
            return (sum / target.len() as f64).sqrt();
        }
        let history: Vec<Node> = hist[..order].iter().map(|&n| self.nodes[n]).collect();
        let c: StepCoeffs = multistep_coefficients(
            rules.forms.equation,
            rules.param,
            order,
            self.nodes[j],
            &history,
            rules.forms.third,
            rules.forms.second,
        );
        let noise = c.noise.map(|w| self.coupled_noise(i, j, w));
        for (k, t) in target.iter().enumerate() {
            let mut v = c.x * xi[k] + c.mu * self.mu[k];
            for (l, &n) in hist[..order].iter().enumerate() {
                v += c.q[l] * self.q[n][k];
            }
            if let Some(z) = &noise {
                v += z[k];
            }
            let e = v - t;
            sum += e * e;
        }
        (sum / target.len() as f64).sqrt()
    }

    /// The noise term `w·ζ` of a student step `i → j` whose draw `ζ` is made of the teacher's
    /// draws under it (`docs/math.md` §8.3): `ζ = Σ_f c_f z_f / ‖c‖`, `c_f` the teacher step
    /// `f`'s noise weight carried through the state weights of the teacher steps after it.
    fn coupled_noise(&self, i: usize, j: usize, w: f64) -> Vec<f64> {
        let mut acc = vec![0.0; self.mu.len()];
        let mut norm2 = 0.0;
        for f in i + 1..=j {
            if let Some((a, n, z)) = &self.noise[f - 1] {
                for (v, zf) in acc.iter_mut().zip(z) {
                    *v = a * *v + n * zf;
                }
                norm2 = a * a * norm2 + n * n;
            }
        }
        let scale = if norm2 > 0.0 { w / norm2.sqrt() } else { 0.0 };
        acc.iter_mut().for_each(|v| *v *= scale);
        acc
    }
}

/// The order of student step `k` (1-based) of `m`, from `hist[0]` to `j`.
fn step_order(
    rules: &Rules,
    base: &[usize],
    k: usize,
    hist: State,
    j: usize,
    t: &Trajectory,
) -> usize {
    let o = base[k - 1];
    if let Some(OrderRule::StepRatio { max_ratio }) = rules.solver.order_rule() {
        if k >= 2 && o > 1 {
            let lam = |n: usize| t.nodes[n].lambda;
            let (h, h_prev) = (lam(j) - lam(hist[0]), lam(hist[0]) - lam(hist[1]));
            if step_too_long(max_ratio, h, h_prev) {
                return 1;
            }
        }
    }
    o
}

/// The `m`-step path through the teacher's nodes with the least summed local error.
/// `progress(k)` is called after each of the `m` layers.
pub(crate) fn search(
    t: &Trajectory,
    rules: &Rules,
    m: usize,
    mut progress: impl FnMut(usize),
) -> Result<Path> {
    t.validate()?;
    let last = t.steps();
    if m == 0 || m > last {
        return Err(Error::setting(
            "steps",
            m,
            format!(
                "a calibrated grid picks its times among the teacher's {last} steps: use 1 to {last} steps"
            ),
        ));
    }
    let base = orders(Mode::Exact, &rules.solver, m, &[]);
    let keep = rules.solver.order().max(1);
    let mut costs: HashMap<(usize, State, usize), f64> = HashMap::new();
    // layers[k]: state after step k → (summed cost, state after step k − 1).
    let mut layers: Vec<HashMap<State, (f64, State)>> = Vec::with_capacity(m + 1);
    layers.push(HashMap::from([([0, NONE, NONE], (0.0, [NONE; 3]))]));
    for k in 1..=m {
        let mut next: HashMap<State, (f64, State)> = HashMap::new();
        let (lo_room, hi) = (m - k, if k == m { last } else { last - 1 });
        for (&hist, &(acc, _)) in &layers[k - 1] {
            let first = if k == m { last } else { hist[0] + 1 };
            for j in first..=hi.min(last - lo_room) {
                let order = step_order(rules, &base, k, hist, j, t);
                let key = (order, read(hist, order), j);
                let c = *costs
                    .entry(key)
                    .or_insert_with(|| t.local_error(rules, order, hist, j));
                let mut state = [j, hist[0], hist[1]];
                state[keep.min(3)..].fill(NONE);
                let total = acc + c;
                let slot = next.entry(state).or_insert((f64::INFINITY, hist));
                // Ties keep the first path found; the iteration order of `HashMap` is not
                // fixed, so compare the predecessor too to stay deterministic.
                if total.total_cmp(&slot.0).then(hist.cmp(&slot.1)).is_lt() {
                    *slot = (total, hist);
                }
            }
        }
        layers.push(next);
        progress(k);
    }
    let (&last_state, &(cost, _)) = layers[m]
        .iter()
        .min_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.0.cmp(b.0)))
        .ok_or_else(|| Error::grid("no calibrated path reaches the end of the teacher's grid"))?;
    if !cost.is_finite() {
        return Err(Error::NonFinite {
            what: "calibration cost",
            step: 0,
            time: 0.0,
        });
    }
    let mut state = last_state;
    let mut nodes = vec![state[0]];
    for k in (1..=m).rev() {
        state = layers[k][&state].1;
        nodes.push(state[0]);
    }
    nodes.reverse();
    Ok(Path { nodes, cost })
}

/// The history a step of `order` reads (the rest masked, so equal steps share one cost).
fn read(hist: State, order: usize) -> State {
    let mut h = hist;
    h[order.min(3)..].fill(NONE);
    h
}

/// The summed local error of a given path (node indices), as [`search`] scores it.
pub(crate) fn path_cost(t: &Trajectory, rules: &Rules, path: &[usize]) -> Result<f64> {
    t.validate()?;
    let m = path.len() - 1;
    let base = orders(Mode::Exact, &rules.solver, m, &[]);
    let mut hist = [path[0], NONE, NONE];
    let mut total = 0.0;
    for (k, &j) in path.iter().enumerate().skip(1) {
        let order = step_order(rules, &base, k, hist, j, t);
        total += t.local_error(rules, order, hist, j);
        hist = [j, hist[0], hist[1]];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{OdeMultistep, SdeMultistep};
    use crate::solver::{Equation, SecondOrder, ThirdOrder};

    /// A synthetic trajectory on `n + 1` nodes with pseudo-random vectors: the costs are
    /// arbitrary but fixed, which is all an exhaustive comparison needs.
    fn trajectory(n: usize, len: usize, stochastic: bool) -> Trajectory {
        let mut s = 12345u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let nodes: Vec<Node> = (0..=n)
            .map(|k| {
                if k == n {
                    Node {
                        alpha: 1.0,
                        sigma: 0.0,
                        lambda: f64::INFINITY,
                    }
                } else {
                    Node::at_lambda(-2.0 + 4.0 * k as f64 / n as f64, 0.3)
                }
            })
            .collect();
        let mut v = |c| (0..len).map(|_| c + rnd()).collect::<Vec<f64>>();
        Trajectory {
            x: (0..=n).map(|_| v(0.0)).collect(),
            q: (0..n).map(|_| v(0.1)).collect(),
            mu: v(0.5),
            noise: (0..n)
                .map(|k| (stochastic && k + 1 < n).then(|| (0.9, 0.2, v(0.0))))
                .collect(),
            nodes,
        }
    }

    fn rules(solver: Solver) -> Rules {
        let forms = Forms {
            equation: if solver.is_stochastic() {
                Equation::Sde
            } else {
                Equation::Ode
            },
            second: SecondOrder::Taylor,
            third: ThirdOrder::Taylor,
            corrector: false,
        };
        Rules {
            forms,
            param: Parameterization::Data,
            solver,
            sigma_inf: 0.3,
        }
    }

    /// Every strictly increasing path `0 < … < n` of `m` steps.
    fn all_paths(n: usize, m: usize) -> Vec<Vec<usize>> {
        fn go(prefix: &mut Vec<usize>, n: usize, left: usize, out: &mut Vec<Vec<usize>>) {
            let cur = *prefix.last().unwrap();
            if left == 1 {
                prefix.push(n);
                out.push(prefix.clone());
                prefix.pop();
                return;
            }
            for j in cur + 1..n {
                prefix.push(j);
                go(prefix, n, left - 1, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(&mut vec![0], n, m, &mut out);
        out
    }

    #[test]
    fn search_finds_the_exhaustive_optimum() {
        let ratio = Solver::Ode(OdeMultistep {
            order_rule: Some(OrderRule::StepRatio { max_ratio: 1.5 }),
            ..OdeMultistep::new(2)
        });
        let sde = Solver::Sde(SdeMultistep::new(2));
        for (solver, stochastic) in [
            (Solver::ode(1), false),
            (Solver::ode(2), false),
            (Solver::ode(3), false),
            (ratio, false),
            (sde, true),
        ] {
            let (t, r) = (trajectory(9, 16, stochastic), rules(solver));
            for m in 1..=6 {
                let best = search(&t, &r, m, |_| {}).unwrap();
                let brute = all_paths(9, m)
                    .into_iter()
                    .map(|p| path_cost(&t, &r, &p).unwrap())
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    (best.cost - brute).abs() <= 1e-12 * brute,
                    "{solver:?} m={m}: {} vs {brute}",
                    best.cost
                );
                assert!((path_cost(&t, &r, &best.nodes).unwrap() - best.cost).abs() <= 1e-12);
                assert_eq!((best.nodes[0], best.nodes[m]), (0, 9));
            }
        }
    }

    #[test]
    fn a_step_onto_the_teacher_costs_nothing_when_it_is_the_teachers_step() {
        // The teacher's own first-order ODE step, recorded exactly: its local error is 0.
        let (s, e) = (Node::at_lambda(-1.0, 0.3), Node::at_lambda(-0.5, 0.3));
        let r = rules(Solver::ode(1));
        let c = multistep_coefficients(
            Equation::Ode,
            Parameterization::Data,
            1,
            e,
            &[s],
            ThirdOrder::Taylor,
            SecondOrder::Taylor,
        );
        let (x0, q0, mu) = (vec![0.3, -0.2], vec![0.1, 0.4], vec![0.5, 0.5]);
        let x1: Vec<f64> = (0..2)
            .map(|k| c.x * x0[k] + c.q[0] * q0[k] + c.mu * mu[k])
            .collect();
        let t = Trajectory {
            nodes: vec![s, e],
            x: vec![x0, x1.clone()],
            q: vec![q0],
            mu,
            noise: vec![None],
        };
        assert!(t.local_error(&r, 1, [0, NONE, NONE], 1) < 1e-15);
        let mut off = t.clone();
        off.x[1][0] += 0.3;
        // RMS over two coordinates of an error (0.3, 0).
        let err = off.local_error(&r, 1, [0, NONE, NONE], 1);
        assert!((err - 0.3 / 2f64.sqrt()).abs() < 1e-12, "{err}");
    }

    #[test]
    fn coupled_noise_carries_the_teacher_draws() {
        // Two teacher steps with weights (a, n): the draw reaching the end is
        // n₁·a₂·z₁ + n₂·z₂, normalised and scaled to the student's weight.
        let mut t = trajectory(3, 2, false);
        t.noise = vec![
            Some((0.5, 0.2, vec![1.0, -1.0])),
            Some((0.8, 0.3, vec![2.0, 0.5])),
            None,
        ];
        let z = t.coupled_noise(0, 2, 1.0);
        let c: [f64; 2] = [0.2 * 0.8, 0.3];
        let norm = (c[0] * c[0] + c[1] * c[1]).sqrt();
        let want = [
            (c[0] * 1.0 + c[1] * 2.0) / norm,
            (-c[0] + c[1] * 0.5) / norm,
        ];
        assert!((z[0] - want[0]).abs() < 1e-15 && (z[1] - want[1]).abs() < 1e-15);
    }

    #[test]
    fn too_many_steps_is_an_error() {
        let t = trajectory(4, 3, false);
        assert!(matches!(
            search(&t, &rules(Solver::ode(2)), 5, |_| {}),
            Err(Error::InvalidSetting { .. })
        ));
    }
}
