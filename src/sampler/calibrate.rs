//! [`Calibrator`]: fits an [`MrSampler`]'s `K`-step time grid to a network (`docs/math.md` §9).
//! The search itself is pure `f64` (the private `plan::calibrate`); this is the driver that
//! runs the network.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Mode, MrSampler, Sampler, Solver};
use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::plan::calibrate::{NoisyStep, Path, Rules, Trajectory, search};
use crate::plan::multistep::Forms;
use crate::plan::{Plan, Update, node};
use crate::schedule::{TimeGrid, build_grid};
use crate::tensor::{CoupledNoise, NoiseSource, Parallelism, SamplerTensor, lincomb};

/// What a calibration is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationProgress {
    /// The teacher pass: `done` of `of` network evaluations.
    Teacher {
        /// Evaluations done.
        done: usize,
        /// Evaluations in the teacher pass.
        of: usize,
    },
    /// The grid search (no network evaluation): `done` of `of` steps placed.
    Search {
        /// Steps placed.
        done: usize,
        /// Steps of the calibrated grid.
        of: usize,
    },
    /// The check passes: `done` of `of` candidate grids run.
    Check {
        /// Grids run.
        done: usize,
        /// Grids to run.
        of: usize,
    },
}

/// One candidate grid's scores in a [`Calibration`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridScore {
    /// `searched` for the grid the search found, else the named grid's name (`configured` for
    /// a custom grid the sampler came with).
    pub name: String,
    /// Its times `τ_0 > … > τ_K`.
    pub times: Vec<f64>,
    /// The search's objective: the summed root-mean-square local error of its steps started
    /// on the teacher's trajectory.
    pub local_error: f64,
    /// Root-mean-square distance of its `K`-step result to the teacher's result, over the
    /// calibration inputs.
    pub distance: f64,
}

/// The result of [`Calibrator::calibrate`]: the chosen grid and how every candidate scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The chosen grid: the candidate with the smallest [`GridScore::distance`]. Use it as
    /// [`TimeGrid::Custom`] with `K` steps and the calibrated sampler's other settings.
    pub grid: Vec<f64>,
    /// Index into [`scores`](Self::scores) of the chosen grid.
    pub chosen: usize,
    /// The candidates: the searched grid first, then the named grids and any custom grid the
    /// sampler was configured with.
    pub scores: Vec<GridScore>,
    /// The teacher's grid, whose times every candidate is made of.
    pub teacher_grid: Vec<f64>,
    /// Network evaluations used (as [`Calibrator::evaluations`] announced).
    pub evaluations: usize,
}

impl Calibration {
    /// The chosen candidate's scores.
    pub fn best(&self) -> &GridScore {
        &self.scores[self.chosen]
    }
}

/// Fits the `K`-step time grid of an [`MrSampler`] to a network, on a few calibration inputs
/// (`docs/math.md` §9).
///
/// 1. A **teacher** pass: the same solver on a fine grid made of the named grids at `K` steps
///    (linspace, uniform-λ, karras-t, karras-n, trailing, leading) and `fine` steps each of
///    linspace and uniform-λ, from start states drawn once.
/// 2. A **search** (no network evaluation): among the teacher's times, the `K`-step grid whose
///    steps, each started on the teacher's trajectory with the teacher's outputs as its
///    history, have the least summed local error; a step's order follows the sampler's order
///    rule, the SDE's noise is the teacher's Brownian path.
/// 3. **Checks**: the searched grid and every named grid run `K` steps from the same start
///    states (an SDE on the teacher's Brownian path through [`CoupledNoise`]); the grid whose
///    result is closest to the teacher's is chosen. So on the calibration inputs the result is
///    never worse than the best named grid.
///
/// The cost, stated before anything runs, is [`evaluations`](Self::evaluations): the
/// teacher's steps plus `K` per candidate, each one network call on the calibration batch.
/// Deterministic for a given model, inputs, noise source and settings.
///
/// Supported: exact mode, multistep ODE (orders 1–3) and SDE (orders 1–2), data or noise
/// form, any order rule. Not supported (an [`Error::Conflict`]): reference mode, singlestep,
/// the UniC corrector, prior correction, thresholding, `denoise_last`.
///
/// ```
/// use mrsampler::prelude::*;
/// use mrsampler::{Calibrator, PhiloxNoise};
/// use ndarray::ArrayD;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 5)?;
/// // A stand-in network: the exact posterior mean of a point mass at 0.3.
/// let schedule = IrSdeSchedule::da_clip();
/// let mut net = FnModel::new(FitTarget::Data, |x: &ArrayD<f32>, _: &ArrayD<f32>, _| {
///     Ok(x.mapv(|_| 0.3))
/// });
/// let mu = ArrayD::<f32>::from_elem(vec![2, 1, 4, 4], 0.5);
/// let calibrator = Calibrator::new(5)?.with_fine_steps(8)?;
/// let nfe = calibrator.evaluations(&sampler)?;
/// let cal = calibrator.calibrate(&sampler, &mut net, &mu, &mut PhiloxNoise::new(7), |_| {})?;
/// assert_eq!(cal.evaluations, nfe);
/// assert_eq!(cal.grid.len(), 6);
/// let tuned = sampler.with_grid(TimeGrid::Custom(cal.grid))?;
/// # let _ = (tuned, schedule);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrator {
    steps: usize,
    fine: usize,
    coordinates: usize,
    seed: u64,
}

/// A candidate grid: its name and times.
type Named = (String, Vec<f64>);

/// The named grids every calibration considers.
fn named_grids() -> [TimeGrid; 6] {
    [
        TimeGrid::Linspace,
        TimeGrid::UniformLambda,
        TimeGrid::KarrasT { rho: 7.0 },
        TimeGrid::KarrasN { rho: 7.0 },
        TimeGrid::Trailing,
        TimeGrid::Leading { offset: 0.0 },
    ]
}

impl Calibrator {
    /// A calibration of a `steps`-step grid (`K`, ≥ 1), with `fine = 32`, `4096` recorded
    /// coordinates and seed 0.
    pub fn new(steps: usize) -> Result<Self> {
        super::check_steps(steps)?;
        Ok(Self {
            steps,
            fine: 32,
            coordinates: 4096,
            seed: 0,
        })
    }

    /// Steps of each of the teacher's two fine families (linspace and uniform-λ; ≥ 1): more
    /// candidate times and a more converged teacher, at one evaluation per added time.
    pub fn with_fine_steps(mut self, fine: usize) -> Result<Self> {
        super::check_steps(fine)?;
        self.fine = fine;
        Ok(self)
    }

    /// How many coordinates (over the whole batch) the search scores steps on (≥ 1; all of
    /// them when the input is smaller). The search's time grows linearly with it.
    pub fn with_coordinates(mut self, coordinates: usize) -> Result<Self> {
        if coordinates == 0 {
            return Err(Error::setting(
                "coordinates",
                0,
                "the search needs at least one coordinate",
            ));
        }
        self.coordinates = coordinates;
        Ok(self)
    }

    /// Seed of the coordinate subset.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The `K` of the calibrated grid.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Network evaluations a calibration of `sampler` will make (each one call on the whole
    /// calibration batch): the teacher's steps plus `K` for each candidate grid.
    pub fn evaluations(&self, sampler: &MrSampler) -> Result<usize> {
        let (teacher, candidates) = self.grids(sampler)?;
        Ok(teacher.len() - 1 + self.steps * (candidates.len() + 1))
    }

    /// Checks that `sampler` can be calibrated; its settings other than the grid are kept.
    fn check(&self, sampler: &MrSampler) -> Result<()> {
        let refuse = |setting: &str, reason: &str| {
            Err(Error::conflict(
                setting,
                "calibration",
                format!("{reason}; calibrate without it"),
            ))
        };
        if sampler.mode != Mode::Exact {
            return refuse(
                "mode = Reference",
                "the search scores steps with exact mode's order rules",
            );
        }
        match sampler.solver {
            Solver::OdeSinglestep { .. } => {
                return refuse(
                    "solver = OdeSinglestep",
                    "calibration supports the multistep solvers",
                );
            }
            Solver::Ode(o) if o.corrector => {
                return refuse(
                    "corrector",
                    "the corrected steps are not scored by the search",
                );
            }
            _ => {}
        }
        if sampler.prior_correction {
            return refuse(
                "prior_correction",
                "the search does not model the corrected first step",
            );
        }
        if sampler.thresholding.is_some() {
            return refuse("thresholding", "the search scores unthresholded outputs");
        }
        if sampler.denoise_last {
            return refuse(
                "denoise_last",
                "the search ends in the schedule's limit step",
            );
        }
        Ok(())
    }

    /// The teacher's grid and the named (and configured custom) candidate grids at `K`.
    fn grids(&self, sampler: &MrSampler) -> Result<(Vec<f64>, Vec<Named>)> {
        self.check(sampler)?;
        let view = sampler.model_schedule()?;
        let build = |grid: &TimeGrid, steps| {
            build_grid(grid, steps, sampler.lambda_min, Mode::Exact, &*view)
        };
        let mut candidates: Vec<Named> = Vec::new();
        for grid in named_grids() {
            // A named grid that cannot be built at K (e.g. too few steps) is not a candidate.
            if let Ok(times) = build(&grid, self.steps) {
                if times.len() == self.steps + 1 {
                    candidates.push((grid_name(&grid), times));
                }
            }
        }
        if let TimeGrid::Custom(times) = &sampler.grid {
            if times.len() == self.steps + 1 {
                candidates.push(("configured".to_owned(), times.clone()));
            }
        }
        let fine = [
            build(&TimeGrid::Linspace, self.fine)?,
            build(&TimeGrid::UniformLambda, self.fine)?,
        ];
        let teacher = merge(&candidates, &fine);
        if teacher.len() <= self.steps {
            return Err(Error::setting(
                "fine_steps",
                self.fine,
                format!(
                    "the teacher has {} steps, fewer than the {} to calibrate: raise fine_steps",
                    teacher.len() - 1,
                    self.steps
                ),
            ));
        }
        Ok((teacher, candidates))
    }

    /// Calibrates `sampler`'s grid for `model` on the batch `mu` (the calibration inputs),
    /// drawing the start states (and an SDE teacher's noise) from `noise`. `progress` is
    /// called as the work advances.
    pub fn calibrate<T, M, N>(
        &self,
        sampler: &MrSampler,
        model: &mut M,
        mu: &T,
        noise: &mut N,
        mut progress: impl FnMut(CalibrationProgress),
    ) -> Result<Calibration>
    where
        T: SamplerTensor,
        M: ScoreModel<T>,
        N: NoiseSource<T> + Clone,
    {
        let (teacher_grid, named) = self.grids(sampler)?;
        let k = self.steps;
        let base = sampler.clone().with_lambda_min(None)?;
        let with_grid = |times: &[f64]| -> Result<MrSampler> {
            base.clone()
                .with_num_steps(times.len() - 1)?
                .with_grid(TimeGrid::Custom(times.to_vec()))
        };
        let teacher = with_grid(&teacher_grid)?;
        let fit = model.fit_target();
        let teacher_plan = teacher.plan(fit)?;

        // Start states, drawn once.
        let mut z = lincomb(&[(0.0, mu)], Parallelism::Sequential)?;
        noise.fill_standard_normal(&mut z, Parallelism::Sequential)?;
        let x_start = teacher.prior_state(mu, &z)?;
        let brownian = noise.clone();

        // The teacher pass, recorded at a fixed subset of coordinates.
        let len = crate::tensor::numel(mu);
        let picks = coordinates(len, self.coordinates, self.seed);
        let pick = |v: &T| -> Result<Vec<f64>> {
            let host = v.to_host_f64()?;
            Ok(picks.iter().map(|&i| host[i]).collect())
        };
        let view = teacher.model_schedule()?;
        let mut traj = Trajectory {
            nodes: teacher_grid.iter().map(|&t| node(&*view, t)).collect(),
            x: vec![pick(&x_start)?],
            mu: pick(mu)?,
            ..Trajectory::default()
        };
        let mut recorder = Recorder {
            inner: noise,
            picks: &picks,
            draws: Vec::new(),
        };
        let steps_total = teacher_plan.num_evaluations();
        let mut failure: Option<Error> = None;
        let teacher_out = teacher.sample_observed(
            model,
            mu,
            Some(lincomb(&[(1.0, &x_start)], Parallelism::Sequential)?),
            &mut recorder,
            &mut |view: &super::StepView<'_, T>| {
                match (pick(view.x), pick(view.model_output)) {
                    (Ok(x), Ok(q)) => {
                        traj.x.push(x);
                        traj.q.push(q);
                    }
                    (Err(e), _) | (_, Err(e)) => failure = failure.take().or(Some(e)),
                }
                progress(CalibrationProgress::Teacher {
                    done: view.step,
                    of: steps_total,
                });
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        traj.noise = noise_weights(&teacher_plan, recorder.draws)?;

        // The search.
        let rules = Rules {
            forms: Forms::of(sampler),
            param: sampler.parameterization,
            solver: sampler.solver,
            sigma_inf: view.sigma_inf(),
        };
        let Path { nodes, cost } = search(&traj, &rules, k, |done| {
            progress(CalibrationProgress::Search { done, of: k });
        })?;
        let searched: Vec<f64> = nodes.iter().map(|&n| teacher_grid[n]).collect();

        // The checks, every candidate from the same start states.
        let mut candidates = vec![("searched".to_owned(), searched)];
        candidates.extend(named);
        let reference = teacher_out.x.to_host_f64()?;
        let mut scores = Vec::with_capacity(candidates.len());
        let of = candidates.len();
        for (done, (name, times)) in candidates.into_iter().enumerate() {
            let student = with_grid(&times)?;
            let start = Some(lincomb(&[(1.0, &x_start)], Parallelism::Sequential)?);
            let out = if student.solver.is_stochastic() {
                let plan: Plan = student.plan(fit)?;
                let mut coupled = CoupledNoise::new(&plan, &teacher_plan, brownian.clone())?;
                student.sample(model, mu, start, &mut coupled)?
            } else {
                student.sample(model, mu, start, &mut brownian.clone())?
            };
            let distance = rms_distance(&out.x.to_host_f64()?, &reference);
            let path: Vec<usize> = times
                .iter()
                .map(|&t| position(&teacher_grid, t))
                .collect::<Result<_>>()?;
            let local_error = crate::plan::calibrate::path_cost(&traj, &rules, &path)?;
            scores.push(GridScore {
                name,
                times,
                local_error,
                distance,
            });
            progress(CalibrationProgress::Check { done: done + 1, of });
        }
        debug_assert!((scores[0].local_error - cost).abs() <= 1e-9 * cost.max(1.0));
        let chosen = (0..scores.len())
            .min_by(|&a, &b| scores[a].distance.total_cmp(&scores[b].distance))
            .unwrap_or(0);
        Ok(Calibration {
            grid: scores[chosen].times.clone(),
            chosen,
            evaluations: steps_total + k * scores.len(),
            scores,
            teacher_grid,
        })
    }
}

/// The display name of a named grid.
fn grid_name(grid: &TimeGrid) -> String {
    match grid {
        TimeGrid::UniformLambda => "uniform-lambda".to_owned(),
        other => other.name().to_owned(),
    }
}

/// The teacher grid: every candidate's times, and the fine families' times that are not
/// within a third of their own spacing of a time already taken (so the teacher has no
/// needlessly tiny steps), strictly decreasing.
fn merge(candidates: &[Named], fine: &[Vec<f64>]) -> Vec<f64> {
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol;
    let mut taken: Vec<f64> = Vec::new();
    for (_, times) in candidates {
        for &t in times {
            if !taken.iter().any(|&u| close(t, u, 1e-9 * (1.0 + t.abs()))) {
                taken.push(t);
            }
        }
    }
    for family in fine {
        for (i, &t) in family.iter().enumerate() {
            let gap = |j: Option<usize>| j.and_then(|j| family.get(j)).map(|&u| (u - t).abs());
            let spacing = [gap(i.checked_sub(1)), gap(Some(i + 1))]
                .into_iter()
                .flatten()
                .fold(f64::INFINITY, f64::min);
            let tol = (spacing / 3.0).max(1e-9 * (1.0 + t.abs()));
            if !taken.iter().any(|&u| close(t, u, tol)) {
                taken.push(t);
            }
        }
    }
    taken.sort_by(|a, b| b.total_cmp(a));
    taken
}

/// The index of `t` in `grid` (it is one of the grid's times).
fn position(grid: &[f64], t: f64) -> Result<usize> {
    grid.iter()
        .position(|&u| (u - t).abs() <= 1e-9 * (1.0 + t.abs()))
        .ok_or_else(|| Error::grid(format!("time {t} is not on the teacher's grid")))
}

/// `count` distinct coordinates of `len`, sorted, from `seed` (all when `count ≥ len`).
fn coordinates(len: usize, count: usize, seed: u64) -> Vec<usize> {
    if count >= len {
        return (0..len).collect();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picks = rand::seq::index::sample(&mut rng, len, count).into_vec();
    picks.sort_unstable();
    picks
}

/// Root mean square of `a − b`.
fn rms_distance(a: &[f64], b: &[f64]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (sum / a.len().max(1) as f64).sqrt()
}

/// Per teacher step, its `(state weight, noise weight, draw)` when it draws noise.
fn noise_weights(plan: &Plan, draws: Vec<Vec<f64>>) -> Result<Vec<Option<NoisyStep>>> {
    let mut draws = draws.into_iter();
    plan.steps
        .iter()
        .map(|s| match s.update {
            Update::Linear { coeffs, .. } => match coeffs.noise {
                Some(n) => draws
                    .next()
                    .map(|z| Some((coeffs.x, n, z)))
                    .ok_or(Error::StepOrder {
                        what: "the teacher pass drew fewer noise tensors than it has stochastic steps",
                    }),
                None => Ok(None),
            },
            _ => Ok(None),
        })
        .collect()
}

/// A noise source that keeps the recorded coordinates of every draw.
struct Recorder<'a, N> {
    inner: &'a mut N,
    picks: &'a [usize],
    draws: Vec<Vec<f64>>,
}

impl<T: SamplerTensor, N: NoiseSource<T>> NoiseSource<T> for Recorder<'_, N> {
    fn fill_standard_normal(&mut self, out: &mut T, par: Parallelism) -> Result<()> {
        self.inner.fill_standard_normal(out, par)?;
        let host = out.to_host_f64()?;
        self.draws
            .push(self.picks.iter().map(|&i| host[i]).collect());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teacher_grid_holds_every_candidate_and_no_tiny_step() {
        let cands = vec![
            ("a".to_owned(), vec![100.0, 50.0, 0.0]),
            ("b".to_owned(), vec![100.0, 60.0, 0.0]),
        ];
        let fine = vec![vec![100.0, 75.0, 51.0, 25.0, 0.0]];
        let merged = merge(&cands, &fine);
        assert_eq!(merged, vec![100.0, 75.0, 60.0, 50.0, 25.0, 0.0]);
    }

    #[test]
    fn coordinates_are_distinct_sorted_and_seeded() {
        let a = coordinates(1000, 50, 3);
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, coordinates(1000, 50, 3));
        assert_ne!(a, coordinates(1000, 50, 4));
        assert_eq!(coordinates(5, 50, 3), vec![0, 1, 2, 3, 4]);
    }
}
