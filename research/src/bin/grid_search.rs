//! Searches sampling grids that minimise the MR Sampler's integration error, in the spirit of
//! "Align Your Steps": for each step count, Nelder–Mead over the interior times of the grid,
//! minimising the solver's pathwise error against a converged solve on a family of exact
//! Gaussian-mixture problems (DA-CLIP schedule). Pass a printed grid to `nfe_quality --grid
//! custom:…` to measure it; `docs/benchmarks.md` records what tuned grids gave.
//!
//! ```text
//! cargo run --release -p mrsampler-research --bin grid_search -- [--steps 3..10] [--solver ode3-unic]
//!                                               [--problems 32] [--samples 256] [--iters 1500]
//!                                               [--benchmark]
//! ```
//!
//! * Problem family (seeded, disjoint from the `nfe_quality` benchmark laws): 4 coordinates,
//!   1–3 isotropic components with means in `[0.1, 0.9]`, stds log-uniform in
//!   `[0.015, 0.12]`, weights in `[0.2, 1]` (normalised), and a degraded mean μ uniform in
//!   `[0, 1]` per coordinate.
//! * Error of a grid on a problem: the RMS difference between the sampler's output and a
//!   converged solve (ODE-3, 400 uniform-λ steps) from the same prior draws; both use the
//!   prior correction. The cost is the mean over problems of the log error, so that every
//!   problem counts by its relative improvement.
//! * Grid coordinates: `t = T·v^7`, with `v` running from 1 to 0 in `M` increments given by a
//!   softmax of the `M − 1` free parameters (0 gives the Karras-like spacing of `v`).
//!   Printed per step count: the tuned times and the cost of the tuned grid against
//!   linspace, uniform-λ and karras-t.
//! * `--benchmark` tunes on the `nfe_quality` mixture law itself (a ceiling for what a grid
//!   can do there, not a grid to ship).
//!
//! Solvers: `ode2`, `ode3`, `ode2-unic`, `ode3-unic` (data form, exact mode).

#[allow(dead_code)] // the Gaussian law is nfe_quality's only
use std::sync::Arc;

use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;
use mrsampler::OdeMultistep;
use mrsampler::oracle::GmmOracle;
use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{MrSampler, Sampler, SeededNoise};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const D: usize = 4;
const RHO: f64 = 7.0;

struct Problem {
    oracle: GmmOracle,
    mu: ArrayD<f64>,
    reference: ArrayD<f64>,
    seed: u64,
}

#[derive(Clone, Copy)]
struct Candidate {
    order: usize,
    unic: bool,
}

impl Candidate {
    /// `ode2`, `ode3`, `ode2-unic` or `ode3-unic`.
    fn parse(s: &str) -> Option<Self> {
        let (base, unic) = match s.strip_suffix("-unic") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let order = match base {
            "ode2" => 2,
            "ode3" => 3,
            _ => return None,
        };
        Some(Self { order, unic })
    }

    fn sampler(
        &self,
        schedule: &Arc<dyn Schedule>,
        grid: TimeGrid,
        m: usize,
    ) -> mrsampler::Result<MrSampler> {
        MrSampler::from_arc(schedule.clone(), m)?
            .with_solver(OdeMultistep {
                corrector: self.unic,
                ..OdeMultistep::new(self.order)
            })?
            .with_prior_correction(true)?
            .with_grid(grid)
    }
}

/// The converged solve every grid is compared with.
fn reference_sampler(schedule: &Arc<dyn Schedule>) -> mrsampler::Result<MrSampler> {
    MrSampler::from_arc(schedule.clone(), 400)?
        .with_solver(mrsampler::Solver::ode(3))?
        .with_grid(TimeGrid::UniformLambda)?
        .with_prior_correction(true)
}

/// The mixture law and μ of the `nfe_quality` benchmark (for measuring how far a grid tuned
/// on the benchmark itself can go; not for presets).
fn benchmark(schedule: &Arc<dyn Schedule>, samples: usize) -> mrsampler::Result<Vec<Problem>> {
    use mrsampler_research::{GMM_MEANS, GMM_S, GMM_W, MU};
    let mut oracle = GmmOracle::new(
        GMM_W.to_vec(),
        GMM_MEANS.iter().map(|m| m.to_vec()).collect(),
        GMM_S.to_vec(),
        schedule.clone(),
    )?;
    let mu = ArrayD::from_shape_fn(IxDyn(&[samples, D]), |i| MU[i[1]]);
    let reference = reference_sampler(schedule)?
        .sample(&mut oracle, &mu, None, &mut SeededNoise::new(7))?
        .x_unclipped;
    Ok(vec![Problem {
        oracle,
        mu,
        reference,
        seed: 7,
    }])
}

fn family(
    schedule: &Arc<dyn Schedule>,
    count: usize,
    samples: usize,
) -> mrsampler::Result<Vec<Problem>> {
    let mut rng = StdRng::seed_from_u64(0x6772_6964);
    let reference = reference_sampler(schedule)?;
    (0..count)
        .map(|p| {
            let k = 1 + p % 3;
            let weights: Vec<f64> = (0..k).map(|_| rng.random_range(0.2..1.0)).collect();
            let means: Vec<Vec<f64>> = (0..k)
                .map(|_| (0..D).map(|_| rng.random_range(0.1..0.9)).collect())
                .collect();
            let stds: Vec<f64> = (0..k)
                .map(|_| (rng.random_range(0.015f64.ln()..0.12f64.ln())).exp())
                .collect();
            let mu_row: Vec<f64> = (0..D).map(|_| rng.random_range(0.0..1.0)).collect();
            let mut oracle = GmmOracle::new(weights, means, stds, schedule.clone())?;
            let mu = ArrayD::from_shape_fn(IxDyn(&[samples, D]), |i| mu_row[i[1]]);
            let seed = 1000 + p as u64;
            let reference = reference
                .sample(&mut oracle, &mu, None, &mut SeededNoise::new(seed))?
                .x_unclipped;
            Ok(Problem {
                oracle,
                mu,
                reference,
                seed,
            })
        })
        .collect()
}

/// Grid times for the free parameters `z` (`M − 1` of them).
fn times(z: &[f64], t_max: f64, t_min: f64) -> Vec<f64> {
    let w: Vec<f64> = std::iter::once(0.0)
        .chain(z.iter().copied())
        .map(f64::exp)
        .collect();
    let total: f64 = w.iter().sum();
    let mut v = 1.0;
    let mut out = vec![t_max];
    for wi in &w[..w.len() - 1] {
        v -= wi / total;
        out.push(t_min + (t_max - t_min) * v.max(0.0).powf(RHO));
    }
    out.push(t_min);
    out
}

/// The free parameters that reproduce `grid` (inverse of [`times`]).
fn params_of(grid: &[f64], t_max: f64, t_min: f64) -> Vec<f64> {
    let v: Vec<f64> = grid
        .iter()
        .map(|t| ((t - t_min) / (t_max - t_min)).max(0.0).powf(1.0 / RHO))
        .collect();
    let inc: Vec<f64> = v.windows(2).map(|w| (w[0] - w[1]).max(1e-9)).collect();
    inc[1..].iter().map(|d| (d / inc[0]).ln()).collect()
}

#[derive(Clone)]
struct Cost<'a> {
    schedule: Arc<dyn Schedule>,
    problems: &'a [Problem],
    solver: Candidate,
    m: usize,
}

impl Cost<'_> {
    /// Mean log RMS error over the family, and the per-problem errors.
    fn of_grid(&self, grid: TimeGrid) -> (f64, Vec<f64>) {
        let Ok(s) = self.solver.sampler(&self.schedule, grid, self.m) else {
            return (f64::INFINITY, vec![]);
        };
        let errs: Vec<f64> = self
            .problems
            .iter()
            .map(|p| {
                let mut o = p.oracle.clone();
                match s.sample(&mut o, &p.mu, None, &mut SeededNoise::new(p.seed)) {
                    Ok(out) => {
                        let d = &out.x_unclipped - &p.reference;
                        (d.mapv(|v| v * v).mean().unwrap_or(f64::INFINITY)).sqrt()
                    }
                    Err(_) => f64::INFINITY,
                }
            })
            .collect();
        let cost = errs.iter().map(|e| e.max(1e-300).ln()).sum::<f64>() / errs.len() as f64;
        (cost, errs)
    }
}

impl CostFunction for Cost<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, z: &Self::Param) -> Result<f64, argmin::core::Error> {
        if z.iter().any(|v| !v.is_finite() || v.abs() > 30.0) {
            return Ok(f64::INFINITY);
        }
        let t = times(z, self.schedule.t_max(), self.schedule.t_min());
        Ok(self.of_grid(TimeGrid::Custom(t)).0)
    }
}

struct Args {
    steps: Vec<usize>,
    solver: Candidate,
    solver_name: String,
    problems: usize,
    samples: usize,
    iters: u64,
    benchmark: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        steps: (3..=10).collect(),
        solver: Candidate {
            order: 3,
            unic: true,
        },
        solver_name: "ode3-unic".into(),
        problems: 32,
        samples: 256,
        iters: 1500,
        benchmark: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = || it.next().ok_or(format!("{x} takes a value"));
        match x.as_str() {
            "--steps" => {
                let v = value()?;
                a.steps = match v.split_once("..") {
                    Some((lo, hi)) => {
                        let lo: usize = lo.parse().map_err(|_| "bad --steps")?;
                        let hi: usize = hi.parse().map_err(|_| "bad --steps")?;
                        (lo..=hi).collect()
                    }
                    None => vec![v.parse().map_err(|_| "bad --steps")?],
                };
                if a.steps.iter().any(|&m| m < 2) {
                    return Err("--steps: at least 2 steps".into());
                }
            }
            "--solver" => {
                let v = value()?;
                a.solver =
                    Candidate::parse(&v).ok_or("--solver: ode2, ode3, ode2-unic or ode3-unic")?;
                a.solver_name = v;
            }
            "--problems" => a.problems = value()?.parse().map_err(|_| "bad --problems")?,
            "--samples" => a.samples = value()?.parse().map_err(|_| "bad --samples")?,
            "--benchmark" => a.benchmark = true,
            "--iters" => a.iters = value()?.parse().map_err(|_| "bad --iters")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let schedule: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
    let (t_max, t_min) = (schedule.t_max(), schedule.t_min());
    let problems = if args.benchmark {
        benchmark(&schedule, args.samples * args.problems)?
    } else {
        family(&schedule, args.problems, args.samples)?
    };
    println!(
        "solver {} (data form, exact mode, prior correction); {} problems × {} samples",
        args.solver_name,
        problems.len(),
        problems[0].mu.shape()[0]
    );
    for &m in &args.steps {
        let cost = Cost {
            schedule: schedule.clone(),
            problems: &problems,
            solver: args.solver,
            m,
        };
        let mut baselines = vec![];
        let mut best: Option<(f64, Vec<f64>)> = None;
        for (name, g) in [
            ("linspace", TimeGrid::Linspace),
            ("uniform-lambda", TimeGrid::UniformLambda),
            ("karras-t", TimeGrid::KarrasT { rho: 7.0 }),
        ] {
            let (c, _) = cost.of_grid(g.clone());
            baselines.push((name, c));
            let s = args.solver.sampler(&schedule, g, m)?;
            let tau = s.timesteps()?;
            let z = params_of(&tau, t_max, t_min);
            if best.as_ref().is_none_or(|(b, _)| c < *b) {
                best = Some((c, z));
            }
        }
        let (_, z0) = best.expect("three starts");
        // Initial simplex around the best standard grid.
        let mut simplex = vec![z0.clone()];
        for i in 0..z0.len() {
            let mut v = z0.clone();
            v[i] += 0.7;
            simplex.push(v);
        }
        let solver = NelderMead::new(simplex).with_sd_tolerance(1e-7)?;
        let res = Executor::new(cost.clone(), solver)
            .configure(|s| s.max_iters(args.iters))
            .run()?;
        let z = res.state().best_param.clone().unwrap_or(z0);
        let tau = times(&z, t_max, t_min);
        let (c, errs) = cost.of_grid(TimeGrid::Custom(tau.clone()));
        let mean_err = errs.iter().sum::<f64>() / errs.len() as f64;
        println!("\nM = {m}: tuned cost {c:.3} (mean RMS error {mean_err:.3e})");
        for (name, b) in &baselines {
            println!("  {name:>15}: cost {b:.3}");
        }
        let ts: Vec<String> = tau.iter().map(|t| format!("{t:.4}")).collect();
        println!("  times: custom:{}", ts.join(","));
    }
    Ok(())
}
