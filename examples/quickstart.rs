//! Quick start: sample a Gaussian-oracle "network" with several samplers and print the error
//! of the result against the exact data law, per number of network evaluations (NFE).
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The data law is `N(m, diag c)` over 4 coordinates; the oracle is its exact posterior mean,
//! so every error below is the sampler's own discretization error. The error is the
//! Wasserstein-2 distance between the Gaussian fitted to 20 000 samples and the data law,
//! averaged over coordinates (Monte Carlo floor ≈ 1e-3).

use std::sync::Arc;

use mrsampler::Mode;
use mrsampler::Solver;
use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{Baseline, BaselineSampler, MrSampler, Sampler, SeededNoise};
use ndarray::{Array2, ArrayD, Axis};

const M: [f64; 4] = [0.45, 0.7, 0.3, 0.62];
const C: [f64; 4] = [0.012, 0.02, 0.04, 0.008];
const N: usize = 20_000;

/// Per-coordinate W2 between N(mean, var) fitted to the samples and N(M, C), averaged.
fn w2(x: &ArrayD<f64>) -> f64 {
    let x = x.view().into_shape_with_order((N, 4)).expect("batch × 4");
    let x: Array2<f64> = x.to_owned();
    let mean = x.mean_axis(Axis(0)).expect("non-empty");
    let var = x.var_axis(Axis(0), 0.0);
    (0..4)
        .map(|i| ((mean[i] - M[i]).powi(2) + (var[i].sqrt() - C[i].sqrt()).powi(2)).sqrt())
        .sum::<f64>()
        / 4.0
}

fn main() -> Result<(), mrsampler::Error> {
    let schedule: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
    let mu = ArrayD::from_shape_fn(vec![N, 4], |i| 0.2 + 0.15 * (i[1] as f64));
    let nfes = [5, 10, 20, 50, 100];

    type Row = (
        &'static str,
        Box<dyn Fn(usize) -> Result<f64, mrsampler::Error>>,
    );
    let mrs = |mode: Mode, solver: Solver, grid: TimeGrid| {
        let schedule = schedule.clone();
        let mu = mu.clone();
        move |nfe: usize| -> Result<f64, mrsampler::Error> {
            let s = MrSampler::from_arc(schedule.clone(), nfe)?
                .with_mode(mode)?
                .with_solver(solver)?
                .with_grid(grid.clone())?
                .with_data_range(None)?;
            let mut oracle = GaussianOracle::new(M.to_vec(), C.to_vec(), s.model_schedule()?)?;
            let out = s.sample(&mut oracle, &mu, None, &mut SeededNoise::new(7))?;
            Ok(w2(&out.x))
        }
    };
    let baseline = |mode: Mode, kind: Baseline| {
        let schedule = schedule.clone();
        let mu = mu.clone();
        move |nfe: usize| -> Result<f64, mrsampler::Error> {
            // The reference's unit steps at strided indices (which never cover the horizon
            // below K = T) are an error unless asked for: here they are, to show the defect.
            let s = BaselineSampler::from_arc(schedule.clone(), kind, nfe)?;
            let s = match mode {
                Mode::Reference => s.with_reference_unit_steps(true)?,
                _ => s.with_mode(mode)?,
            };
            let mut oracle = GaussianOracle::new(M.to_vec(), C.to_vec(), schedule.clone())?;
            let out = s.sample(&mut oracle, &mu, None, &mut SeededNoise::new(7))?;
            Ok(w2(&out.x))
        }
    };
    let rows: Vec<Row> = vec![
        (
            "MRS ODE-2 data, uniform-λ",
            Box::new(mrs(Mode::Exact, Solver::ode(2), TimeGrid::UniformLambda)),
        ),
        (
            "MRS ODE-3 data, uniform-λ",
            Box::new(mrs(Mode::Exact, Solver::ode(3), TimeGrid::UniformLambda)),
        ),
        (
            "MRS ODE-2 data, linspace",
            Box::new(mrs(Mode::Exact, Solver::ode(2), TimeGrid::Linspace)),
        ),
        (
            "MRS SDE-2 data, uniform-λ",
            Box::new(mrs(Mode::Exact, Solver::sde(2), TimeGrid::UniformLambda)),
        ),
        (
            "MRS ODE-2 data, linspace (reference)",
            Box::new(mrs(Mode::Reference, Solver::ode(2), TimeGrid::Linspace)),
        ),
        (
            "posterior sampling (strided)",
            Box::new(baseline(Mode::Exact, Baseline::Posterior)),
        ),
        (
            "posterior sampling (reference, unit steps)",
            Box::new(baseline(Mode::Reference, Baseline::Posterior)),
        ),
        (
            "Euler-Maruyama (strided)",
            Box::new(baseline(Mode::Exact, Baseline::EulerMaruyama)),
        ),
    ];

    println!("W2 error against the data law (lower is better; Monte Carlo floor ~1e-3)\n");
    print!("| sampler | ");
    for n in nfes {
        print!("NFE {n} | ");
    }
    println!("\n|---|{}", "---|".repeat(nfes.len()));
    for (name, run) in &rows {
        print!("| {name} | ");
        for n in nfes {
            print!("{:.2e} | ", run(n)?);
        }
        println!();
    }
    Ok(())
}
