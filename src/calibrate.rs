//! [`Calibrator`]: fits an [`MrSampler`]'s `K`-step time grid to a network (`docs/math.md` §10).
//! The search's candidate steps are the planner's own (`plan::multistep::Stepper`, pure `f64`);
//! this is the driver that runs the teacher, the search and the checks.

use crate::config::{Mode, Solver, Thresholding};
use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::plan::coupling::coupled_weights;
use crate::plan::multistep::{HISTORY, Stepper};
use crate::plan::{Plan, PlannedStep, Target, Update};
use crate::sampler::{CoupledNoise, MrSampler, Sampler, StepView, check_steps};
use crate::schedule::{TimeGrid, build_grid};
use crate::solver::Node;
use crate::tensor::{
    NoiseSource, Parallelism, SamplerTensor, check_same_shape, lincomb, philox4x32_10,
};

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

/// The network evaluations a calibration makes ([`Calibrator::cost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationCost {
    /// Evaluations of the teacher pass.
    pub teacher: usize,
    /// Evaluations of the search: one per teacher time it can place each of steps
    /// `1 … K − 1` at, `(K − 1)(N − K + 1)` for a teacher of `N` steps.
    pub search: usize,
    /// Candidate grids checked (the searched one and the named ones).
    pub candidates: usize,
    /// Steps `K` of each check.
    pub steps: usize,
}

impl CalibrationCost {
    /// All evaluations: the teacher's, the search's and `K` per candidate.
    pub fn total(&self) -> usize {
        self.teacher + self.search + self.candidates * self.steps
    }
}

/// One candidate grid's scores in a [`Calibration`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridScore {
    /// `searched` for the grid the search found, else the named grid's name (`configured` for
    /// a custom grid the sampler came with).
    pub name: String,
    /// Its times `τ_0 > … > τ_K`.
    pub times: Vec<f64>,
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
    /// The search's own distance of the searched grid's result to the teacher's, at the
    /// recorded coordinates and before the output clamp (the check's
    /// [`GridScore::distance`] re-runs the grid; the two agree when every coordinate is
    /// recorded and the sampler does not clamp).
    pub search_distance: f64,
    /// The teacher's grid, whose times every candidate is made of.
    pub teacher_grid: Vec<f64>,
    /// Network evaluations used (as [`Calibrator::cost`] announced).
    pub evaluations: usize,
}

impl Calibration {
    /// The chosen candidate's scores.
    pub fn best(&self) -> &GridScore {
        &self.scores[self.chosen]
    }
}

/// Fits the `K`-step time grid of an [`MrSampler`] to a network, on a few calibration inputs
/// (`docs/math.md` §10).
///
/// 1. A **teacher** pass: the same solver on a fine grid made of the named grids at `K` steps
///    (linspace, uniform-λ, karras-t, karras-n, trailing, leading) and `fine` steps each of
///    linspace and uniform-λ, from start states drawn once.
/// 2. A **search** that follows real student states: layer by layer, for every teacher time,
///    the `k`-step student state closest to the teacher's there, each proposed from the best
///    states of the layer before with that path's own outputs as its multistep history, the
///    order the sampler's order rule gives step `k` of `K`, and (SDE) noise on the teacher's
///    Brownian path; the network is evaluated at every kept state.
/// 3. **Checks**: the searched grid and every named grid run `K` steps from the same draw
///    (an SDE on the teacher's Brownian path through [`CoupledNoise`]); the grid whose result is
///    closest to the teacher's is chosen. So on the calibration inputs the result is never
///    worse than the best named grid.
///
/// The cost, stated before anything runs, is [`cost`](Self::cost): `N + (K − 1)(N − K + 1) +
/// K·C` network calls on the calibration batch for a teacher of `N` steps and `C` candidates.
/// Deterministic for a given model, inputs, noise source and settings.
///
/// Supported: exact mode with the multistep ODE (orders 1–3, with or without the UniC
/// corrector) and SDE (orders 1–2), data or noise form, any order rule, prior correction,
/// thresholding and `denoise_last`: the search's steps are the planner's own. Not supported
/// (an [`Error::Conflict`] that says why): reference mode and the singlestep solver.
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
/// let nfe = calibrator.cost(&sampler)?.total();
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
        check_steps(steps)?;
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
        check_steps(fine)?;
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

    /// What a calibration of `sampler` will cost, in network evaluations (each one call on the
    /// whole calibration batch), before anything runs.
    pub fn cost(&self, sampler: &MrSampler) -> Result<CalibrationCost> {
        let (teacher, named) = self.grids(sampler)?;
        let n = teacher.len() - 1;
        Ok(CalibrationCost {
            teacher: n,
            search: (self.steps - 1) * (n + 1 - self.steps),
            candidates: named.len() + 1,
            steps: self.steps,
        })
    }

    /// The teacher's grid for `sampler` (`docs/math.md` §10.1): every named grid at `K` steps
    /// and the fine families, merged. Every named grid at `K` nests in it, so it is also a fair
    /// converged reference for comparing grids at `K` (an SDE on any of them couples to it).
    pub fn teacher_grid(&self, sampler: &MrSampler) -> Result<Vec<f64>> {
        Ok(self.grids(sampler)?.0)
    }

    /// Checks that `sampler` can be calibrated; its settings other than the grid are kept.
    /// Refused, as genuinely not calibratable on a teacher's grid: reference mode (it replays
    /// another implementation's grids and order rule, which a custom grid does not have) and
    /// the singlestep solver (its intermediate evaluations fall between the grid times, where
    /// the teacher has no states to score them against).
    fn check(&self, sampler: &MrSampler) -> Result<()> {
        let refuse = |setting: &str, reason: &str| {
            Err(Error::conflict(setting, "calibration", reason.to_owned()))
        };
        if sampler.mode != Mode::Exact {
            return refuse(
                "mode = Reference",
                "a calibrated grid is an exact-mode custom grid, and reference mode replays the \
                 published grids and order rule; calibrate in exact mode",
            );
        }
        if let Solver::OdeSinglestep { .. } = sampler.solver {
            return refuse(
                "solver = OdeSinglestep",
                "a singlestep solver evaluates between the grid times, where the teacher has no \
                 states to score its steps against; calibrate a multistep solver",
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
            if let Ok(times) = build(&grid, self.steps)
                && times.len() == self.steps + 1
            {
                candidates.push((grid_name(&grid), times));
            }
        }
        if let TimeGrid::Custom(times) = &sampler.grid
            && times.len() == self.steps + 1
        {
            candidates.push(("configured".to_owned(), times.clone()));
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
        let cost = self.cost(sampler)?;
        let (teacher_grid, named) = self.grids(sampler)?;
        let base = sampler.clone().with_lambda_min(None)?;
        let with_grid = |times: &[f64]| -> Result<MrSampler> {
            base.clone().with_grid(TimeGrid::Custom(times.to_vec()))
        };
        let teacher = with_grid(&teacher_grid)?;
        let fit = model.fit_target();
        let teacher_plan = teacher.plan(fit)?;
        let view = teacher.model_schedule()?;
        let settings = teacher.settings();
        let stepper = Stepper::new(&settings, &*view, fit, self.steps);

        // Start states, drawn once.
        let mut z = lincomb(&[(0.0, mu)], Parallelism::Sequential)?;
        noise.fill_standard_normal(&mut z, Parallelism::Sequential)?;
        let x_start = teacher.prior_state(mu, &z)?;
        let brownian = noise.clone();

        // The teacher pass: its states at the recorded coordinates, its first output, its draws.
        let picks = coordinates(crate::tensor::numel(mu), self.coordinates, self.seed);
        let pick = |v: &T| -> Result<Vec<f64>> {
            let host = v.to_host_f64()?;
            Ok(picks.iter().map(|&i| host[i]).collect())
        };
        let mut teacher_x = vec![pick(&x_start)?];
        let mut first_output: Option<T> = None;
        let mut failure: Option<Error> = None;
        let mut recorder = Recorder {
            inner: noise,
            draws: Vec::new(),
        };
        let mut recording = FirstOutput {
            inner: &mut *model,
            net: None,
        };
        let teacher_out = teacher.sample_observed(
            &mut recording,
            mu,
            Some(copy(&x_start)?),
            &mut recorder,
            &mut |view: &StepView<'_, T>| {
                if first_output.is_none() {
                    first_output = copy(view.model_output).map_err(|e| failure = Some(e)).ok();
                }
                match pick(view.x) {
                    Ok(x) => teacher_x.push(x),
                    Err(e) => failure = failure.take().or(Some(e)),
                }
                progress(CalibrationProgress::Teacher {
                    done: view.step,
                    of: cost.teacher,
                });
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let no_evaluation = || Error::StepOrder {
            what: "the teacher pass made no evaluation",
        };
        let first_output = first_output.ok_or_else(no_evaluation)?;
        let first_net = recording.net.take().ok_or_else(no_evaluation)??;
        let (teacher_steps, draws) = teacher_noise(&teacher_plan, recorder.draws)?;
        let search = Search {
            nodes: teacher_grid.iter().map(|&t| stepper.node(t)).collect(),
            stepper,
            thresholding: sampler.thresholding,
            times: &teacher_grid,
            teacher_x,
            mu_picked: pick(mu)?,
            teacher_steps,
            draws_picked: draws
                .iter()
                .map(|d| d.as_ref().map(&pick).transpose())
                .collect::<Result<_>>()?,
            draws,
            picks: &picks,
        };
        let (searched, search_distance) = search.run(
            model,
            mu,
            (x_start, first_output, first_net),
            self.steps,
            &mut |done| {
                progress(CalibrationProgress::Search {
                    done,
                    of: self.steps,
                })
            },
        )?;

        // The checks, every candidate from the same draw z.
        let mut candidates = vec![("searched".to_owned(), searched)];
        candidates.extend(named);
        let reference = teacher_out.x.to_host_f64()?;
        let mut scores = Vec::with_capacity(candidates.len());
        let of = candidates.len();
        for (done, (name, times)) in candidates.into_iter().enumerate() {
            let student = with_grid(&times)?;
            let start = Some(student.prior_state(mu, &z)?);
            let out = if student.solver.is_stochastic() {
                let plan: Plan = student.plan(fit)?;
                let mut coupled = CoupledNoise::new(&plan, &teacher_plan, brownian.clone())?;
                student.sample(model, mu, start, &mut coupled)?
            } else {
                student.sample(model, mu, start, &mut brownian.clone())?
            };
            let distance = rms_distance(&out.x.to_host_f64()?, &reference);
            scores.push(GridScore {
                name,
                times,
                distance,
            });
            progress(CalibrationProgress::Check { done: done + 1, of });
        }
        let chosen = (0..scores.len())
            .min_by(|&a, &b| scores[a].distance.total_cmp(&scores[b].distance))
            .unwrap_or(0);
        Ok(Calibration {
            grid: scores[chosen].times.clone(),
            chosen,
            evaluations: cost.total(),
            search_distance,
            scores,
            teacher_grid,
        })
    }
}

/// What a student step's weight multiplies.
#[derive(Debug, Clone, Copy)]
enum Term {
    /// The state of a history cell `(layer, time)`.
    X((usize, usize)),
    /// The converted output of a history cell.
    Q((usize, usize)),
    /// The raw network output of a history cell.
    Net((usize, usize)),
    /// The mean `μ`.
    Mu,
    /// Teacher step `f`'s draw.
    Draw(usize),
}

/// A live cell of the search.
fn cell<T>(layers: &[Vec<Option<Cell<T>>>], (layer, time): (usize, usize)) -> Result<&Cell<T>> {
    layers[layer][time].as_ref().ok_or(Error::StepOrder {
        what: "the calibration search read a cell it did not fill",
    })
}

/// A tensor the search still holds.
fn live<T>(t: &Option<T>) -> Result<&T> {
    t.as_ref().ok_or(Error::StepOrder {
        what: "calibration history was released too early",
    })
}

/// A copy of `x`.
fn copy<T: SamplerTensor>(x: &T) -> Result<T> {
    lincomb(&[(1.0, x)], Parallelism::Sequential)
}

/// The search through the teacher's grid times (`docs/math.md` §10.2).
struct Search<'a, T> {
    /// Builds every candidate step, as the planner builds a grid's steps.
    stepper: Stepper<'a>,
    thresholding: Option<Thresholding>,
    nodes: Vec<Node>,
    times: &'a [f64],
    /// Teacher states at every node, at the recorded coordinates.
    teacher_x: Vec<Vec<f64>>,
    mu_picked: Vec<f64>,
    /// Teacher step `f`'s `(state weight, noise weight)` when it draws noise.
    teacher_steps: Vec<Option<(f64, f64)>>,
    /// Teacher step `f`'s draw, when it draws one.
    draws: Vec<Option<T>>,
    draws_picked: Vec<Option<Vec<f64>>>,
    picks: &'a [usize],
}

/// A proposed student step onto a teacher time.
struct Proposal<T> {
    /// RMS distance of its result to the teacher's state, at the recorded coordinates.
    distance: f64,
    /// The teacher time it starts from.
    from: usize,
    x_picked: Vec<f64>,
    /// Its full result, when computing the recorded coordinates needed it (a thresholded
    /// final step).
    x: Option<T>,
    /// The step as the pass runs it, and its predictor (which the next step's correction reads).
    step: PlannedStep,
    predictor: PlannedStep,
    /// Its history cells `(layer, time)`, most recent first.
    hist: Vec<(usize, usize)>,
}

/// The best student state found at one node after `k` steps.
struct Cell<T> {
    /// The node it came from after `k − 1` steps.
    parent: usize,
    /// The predictor of the step that made it (`None` for the start state).
    predictor: Option<PlannedStep>,
    /// Its state, until the next layer is built.
    x: Option<T>,
    /// Its converted output, while a later step can read it.
    q: Option<T>,
    /// Its raw network output, kept for the cells a final step can start from.
    net: Option<T>,
    x_picked: Vec<f64>,
    q_picked: Vec<f64>,
}

impl<T: SamplerTensor> Search<'_, T> {
    /// The student's history nodes ending at `(k, i)`, most recent first: `(layer, node)`.
    fn history(
        layers: &[Vec<Option<Cell<T>>>],
        k: usize,
        i: usize,
        len: usize,
    ) -> Vec<(usize, usize)> {
        let mut out = vec![(k, i)];
        let (mut k, mut i) = (k, i);
        while out.len() < len && k > 0 {
            i = layers[k][i].as_ref().map_or(0, |c| c.parent);
            k -= 1;
            out.push((k, i));
        }
        out
    }

    /// The weighted terms of the student step `step` from `hist[0]` (teacher time `i`) to
    /// teacher time `j`: the state, outputs and `μ` of its history cells and, for the SDE, the
    /// teacher's draws. `Ok(None)` for a thresholded replacement, which is not linear.
    fn terms(
        &self,
        step: &PlannedStep,
        hist: &[(usize, usize)],
        i: usize,
        j: usize,
    ) -> Result<Option<Vec<(f64, Term)>>> {
        match step.update {
            Update::Replace { threshold, .. } if threshold && self.thresholding.is_some() => {
                Ok(None)
            }
            Update::Replace { convert, .. } => Ok(Some(vec![
                (convert.net, Term::Net(hist[0])),
                (convert.x, Term::X(hist[0])),
                (convert.mu, Term::Mu),
            ])),
            Update::Linear {
                coeffs,
                target: Target::State,
                reuse_noise: false,
            } => {
                let mut terms = vec![(coeffs.x, Term::X(hist[0])), (coeffs.mu, Term::Mu)];
                for (l, &w) in coeffs.q.iter().enumerate() {
                    if w != 0.0 {
                        let h = hist.get(l).ok_or(Error::StepOrder {
                            what: "a calibration step reads more outputs than its path has",
                        })?;
                        terms.push((w, Term::Q(*h)));
                    }
                }
                if let Some(w) = coeffs.noise {
                    for (f, v) in coupled_weights(&self.teacher_steps, i, j, w) {
                        terms.push((v, Term::Draw(f)));
                    }
                }
                Ok(Some(terms))
            }
            _ => Err(Error::StepOrder {
                what: "a multistep plan step that is not a state update",
            }),
        }
    }

    /// The student step `(k − 1, i) → (k, j)`, scored at the recorded coordinates.
    fn candidate(
        &self,
        layers: &[Vec<Option<Cell<T>>>],
        mu: &T,
        k: usize,
        i: usize,
        j: usize,
    ) -> Result<Proposal<T>> {
        let hist = Self::history(layers, k - 1, i, HISTORY);
        let hist_nodes: Vec<Node> = hist.iter().map(|&(_, n)| self.nodes[n]).collect();
        let predictor = self.stepper.step(
            k,
            (self.times[i], self.times[j]),
            &hist_nodes,
            self.nodes[j],
        )?;
        let prev = cell(layers, hist[0])?.predictor;
        let step = self
            .stepper
            .corrected(k, prev.as_ref(), predictor, &hist_nodes);
        let (x_picked, x) = match self.terms(&step, &hist, i, j)? {
            Some(terms) => {
                let mut x = vec![0.0; self.mu_picked.len()];
                for (w, term) in terms {
                    let v: &[f64] = match term {
                        Term::X(c) => &cell(layers, c)?.x_picked,
                        Term::Q(c) => &cell(layers, c)?.q_picked,
                        Term::Mu => &self.mu_picked,
                        Term::Draw(f) => self.draws_picked[f].as_deref().unwrap_or_default(),
                        Term::Net(_) => {
                            // Only the final step replaces, and its state is computed whole.
                            let state = self.state(layers, mu, &step, &hist, i, j)?;
                            return self.proposal(state, i, j, step, predictor, hist);
                        }
                    };
                    for (out, v) in x.iter_mut().zip(v) {
                        *out += w * v;
                    }
                }
                (x, None)
            }
            None => {
                let state = self.state(layers, mu, &step, &hist, i, j)?;
                return self.proposal(state, i, j, step, predictor, hist);
            }
        };
        Ok(Proposal {
            distance: rms_distance(&x_picked, &self.teacher_x[j]),
            from: i,
            x_picked,
            x,
            step,
            predictor,
            hist,
        })
    }

    /// A proposal whose full state is known.
    fn proposal(
        &self,
        state: T,
        i: usize,
        j: usize,
        step: PlannedStep,
        predictor: PlannedStep,
        hist: Vec<(usize, usize)>,
    ) -> Result<Proposal<T>> {
        let host = state.to_host_f64()?;
        let x_picked: Vec<f64> = self.picks.iter().map(|&p| host[p]).collect();
        Ok(Proposal {
            distance: rms_distance(&x_picked, &self.teacher_x[j]),
            from: i,
            x_picked,
            x: Some(state),
            step,
            predictor,
            hist,
        })
    }

    /// The full student state of a step.
    fn state(
        &self,
        layers: &[Vec<Option<Cell<T>>>],
        mu: &T,
        step: &PlannedStep,
        hist: &[(usize, usize)],
        i: usize,
        j: usize,
    ) -> Result<T> {
        let terms = match self.terms(step, hist, i, j)? {
            Some(terms) => terms,
            None => {
                // The thresholded replacement `x = threshold(a.net·net + a.x·x + a.mu·μ)`.
                let Update::Replace { convert, .. } = step.update else {
                    unreachable!("only a replacement is nonlinear")
                };
                vec![
                    (convert.net, Term::Net(hist[0])),
                    (convert.x, Term::X(hist[0])),
                    (convert.mu, Term::Mu),
                ]
            }
        };
        let mut parts: Vec<(f64, &T)> = Vec::new();
        for (w, term) in terms {
            let t = match term {
                Term::X(c) => live(&cell(layers, c)?.x)?,
                Term::Q(c) => live(&cell(layers, c)?.q)?,
                Term::Net(c) => live(&cell(layers, c)?.net)?,
                Term::Mu => mu,
                Term::Draw(f) => live(&self.draws[f])?,
            };
            parts.push((w, t));
        }
        let mut x = lincomb(&parts, Parallelism::Sequential)?;
        if let (
            Update::Replace {
                threshold: true, ..
            },
            Some(t),
        ) = (step.update, self.thresholding)
        {
            x.threshold_per_sample(t.ratio(), t.floor(), t.max(), Parallelism::Sequential)?;
        }
        Ok(x)
    }

    /// Builds, layer by layer, the student state closest to the teacher's at every node, each
    /// from the best state of the layer before; returns the `m`-step path ending at the last
    /// node. Network evaluations: one per node of layers `1 … m − 1`.
    fn run<M: ScoreModel<T>>(
        &self,
        model: &mut M,
        mu: &T,
        (x_start, first_output, first_net): (T, T, T),
        m: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<f64>, f64)> {
        let last = self.nodes.len() - 1;
        let mut layers: Vec<Vec<Option<Cell<T>>>> = Vec::with_capacity(m + 1);
        let mut start: Vec<Option<Cell<T>>> = (0..=last).map(|_| None).collect();
        start[0] = Some(Cell {
            parent: 0,
            predictor: None,
            x_picked: self.teacher_x[0].clone(),
            q_picked: first_output
                .to_host_f64()
                .map(|h| self.picks.iter().map(|&i| h[i]).collect())?,
            x: Some(x_start),
            q: Some(first_output),
            net: (m == 1).then_some(first_net),
        });
        layers.push(start);
        for k in 1..=m {
            let (lo, hi) = if k == m {
                (last, last)
            } else {
                (k, last - (m - k))
            };
            let mut layer: Vec<Option<Cell<T>>> = (0..=last).map(|_| None).collect();
            for (j, slot) in layer.iter_mut().enumerate().take(hi + 1).skip(lo) {
                let mut best: Option<Proposal<T>> = None;
                for i in 0..j {
                    if layers[k - 1][i].is_none() {
                        continue;
                    }
                    let p = self.candidate(&layers, mu, k, i, j)?;
                    if best.as_ref().is_none_or(|b| p.distance < b.distance) {
                        best = Some(p);
                    }
                }
                let Some(Proposal {
                    distance,
                    from: i,
                    x_picked,
                    x,
                    step,
                    predictor,
                    hist,
                }) = best
                else {
                    continue;
                };
                if !distance.is_finite() {
                    return Err(Error::NonFinite {
                        what: "state",
                        step: k,
                        time: self.times[j],
                    });
                }
                let x = match x {
                    Some(x) => x,
                    None => self.state(&layers, mu, &step, &hist, i, j)?,
                };
                let (q, net, q_picked) = if k < m {
                    let net =
                        model
                            .predict(&x, mu, self.times[j])
                            .map_err(|source| Error::Model {
                                step: k + 1,
                                time: self.times[j],
                                source: source.into_inner(),
                            })?;
                    check_same_shape("model output", &crate::tensor::shape(mu), &net)?;
                    let (c, threshold) = self.stepper.convert(self.nodes[j]);
                    let mut q = lincomb(
                        &[(c.net, &net), (c.x, &x), (c.mu, mu)],
                        Parallelism::Sequential,
                    )?;
                    if let (true, Some(t)) = (threshold, self.thresholding) {
                        q.threshold_per_sample(
                            t.ratio(),
                            t.floor(),
                            t.max(),
                            Parallelism::Sequential,
                        )?;
                    }
                    let host = q.to_host_f64()?;
                    if host.iter().any(|v| !v.is_finite()) {
                        return Err(Error::NonFinite {
                            what: "model output",
                            step: k + 1,
                            time: self.times[j],
                        });
                    }
                    let q_picked = self.picks.iter().map(|&p| host[p]).collect();
                    // Only a cell of layer m − 1 can start the final step, which may replace
                    // the state with a conversion of the raw output.
                    (Some(q), (k + 1 == m).then_some(net), q_picked)
                } else {
                    (None, None, Vec::new())
                };
                *slot = Some(Cell {
                    parent: i,
                    predictor: Some(predictor),
                    x: Some(x),
                    q,
                    net,
                    x_picked,
                    q_picked,
                });
            }
            layers.push(layer);
            // States of layer k − 1 and outputs older than the longest history are done with.
            for cell in layers[k - 1].iter_mut().flatten() {
                cell.x = None;
                cell.net = None;
            }
            if k >= HISTORY {
                for cell in layers[k - HISTORY].iter_mut().flatten() {
                    cell.q = None;
                }
            }
            progress(k);
        }
        let end = layers[m][last].as_ref().ok_or(Error::StepOrder {
            what: "the calibration search did not reach the teacher's last time",
        })?;
        let distance = rms_distance(&end.x_picked, &self.teacher_x[last]);
        let path = Self::history(&layers, m, last, m + 1);
        let mut times: Vec<f64> = path.iter().map(|&(_, n)| self.times[n]).collect();
        times.reverse();
        Ok((times, distance))
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

/// `count` distinct coordinates of `len`, sorted, from `seed` (all when `count ≥ len`):
/// Floyd's sampling on the crate's Philox stream, so the subset is the same on every platform
/// and every version of the `rand` crate.
fn coordinates(len: usize, count: usize, seed: u64) -> Vec<usize> {
    if count >= len {
        return (0..len).collect();
    }
    let key = [seed as u32, (seed >> 32) as u32];
    let mut picked = std::collections::BTreeSet::new();
    for (draw, j) in (len - count..len).enumerate() {
        let d = draw as u64;
        let r = philox4x32_10([d as u32, (d >> 32) as u32, 0, 0], key);
        let bits = u64::from(r[0]) | (u64::from(r[1]) << 32);
        // Uniform on 0..=j by a 64 × 64-bit multiply (bias below 2⁻³²).
        let t = ((u128::from(bits) * (j as u128 + 1)) >> 64) as usize;
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    picked.into_iter().collect()
}

/// Root mean square of `a − b`.
fn rms_distance(a: &[f64], b: &[f64]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (sum / a.len().max(1) as f64).sqrt()
}

/// Per teacher step, its `(state weight, noise weight)` and its draw, when it draws noise.
type TeacherNoise<T> = (Vec<Option<(f64, f64)>>, Vec<Option<T>>);

/// The teacher's stochastic steps and their draws, by step.
fn teacher_noise<T>(plan: &Plan, draws: Vec<T>) -> Result<TeacherNoise<T>> {
    let mut draws = draws.into_iter();
    let mut weights = Vec::with_capacity(plan.steps.len());
    let mut by_step = Vec::with_capacity(plan.steps.len());
    for s in &plan.steps {
        let w = match s.update {
            Update::Linear { coeffs, .. } => coeffs.noise.map(|n| (coeffs.x, n)),
            _ => None,
        };
        let draw = match w {
            Some(_) => Some(draws.next().ok_or(Error::StepOrder {
                what: "the teacher pass drew fewer noise tensors than it has stochastic steps",
            })?),
            None => None,
        };
        weights.push(w);
        by_step.push(draw);
    }
    Ok((weights, by_step))
}

/// A network that keeps a copy of its first output.
struct FirstOutput<'a, M, T> {
    inner: &'a mut M,
    net: Option<Result<T>>,
}

impl<T: SamplerTensor, M: ScoreModel<T>> ScoreModel<T> for FirstOutput<'_, M, T> {
    fn fit_target(&self) -> crate::param::FitTarget {
        self.inner.fit_target()
    }

    fn predict(&mut self, x: &T, mu: &T, t: f64) -> std::result::Result<T, crate::ModelError> {
        let net = self.inner.predict(x, mu, t)?;
        if self.net.is_none() {
            self.net = Some(copy(&net));
        }
        Ok(net)
    }

    fn input_rank(&self) -> Option<usize> {
        self.inner.input_rank()
    }
}

/// A noise source that keeps a copy of every draw.
struct Recorder<'a, N, T> {
    inner: &'a mut N,
    draws: Vec<T>,
}

impl<T: SamplerTensor, N: NoiseSource<T>> NoiseSource<T> for Recorder<'_, N, T> {
    fn fill_standard_normal(&mut self, out: &mut T, par: Parallelism) -> Result<()> {
        self.inner.fill_standard_normal(out, par)?;
        self.draws.push(copy(out)?);
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
        // Every coordinate is equally likely: over 2000 seeds, each of 10 is picked about
        // 2000 · 3/10 = 600 times (binomial std ≈ 20.5; the bound is 5 of them).
        let mut counts = [0usize; 10];
        for seed in 0..2000 {
            let c = coordinates(10, 3, seed);
            assert_eq!(c.len(), 3);
            for i in c {
                counts[i] += 1;
            }
        }
        assert!(counts.iter().all(|&n| n.abs_diff(600) < 103), "{counts:?}");
    }
}
