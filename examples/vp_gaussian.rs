//! Standard (VP / DDPM) diffusion with the MR Sampler: μ = 0 and σ∞ = 1 make every MR Sampler
//! step a DPM-Solver(++) step. The "network" is the exact Gaussian oracle under a DDPM linear-β
//! schedule (T = 1000), so the printed error is the sampler's alone.
//!
//! ```text
//! cargo run --release --example vp_gaussian
//! ```

use std::sync::Arc;

use mrsampler::Solver;
use mrsampler::oracle::{GaussianOracle, Start, gaussian_output_law_from};
use mrsampler::schedule::{Betas, Schedule, TimeGrid, VpSchedule};
use mrsampler::{Baseline, BaselineSampler, MrSampler, PhiloxNoise, Sampler};
use ndarray::{ArrayD, IxDyn};

fn main() -> Result<(), mrsampler::Error> {
    let schedule: Arc<dyn Schedule> = Arc::new(VpSchedule::ddpm(
        Betas::Linear {
            start: 1e-4,
            end: 0.02,
        },
        1000,
    )?);
    let (m, c) = (vec![0.5, -0.3, 0.1, 0.8], vec![0.04, 0.09, 0.01, 0.25]);
    let oracle = GaussianOracle::new(m.clone(), c.clone(), schedule.clone())?;
    let mu = [0.0; 4];

    println!("Exact W2 (mean over 4 coordinates) between the output law and N(m, diag c); grid");
    println!("ends at t = -1 (the clean end), as diffusers' final_sigmas_type = \"zero\".\n");
    println!("| sampler | NFE 5 | NFE 10 | NFE 20 | NFE 50 |");
    println!("|---|---|---|---|---|");
    let w2 = |law: mrsampler::oracle::GaussianLaw| {
        let per = law.w2_per_coordinate(&m, &c);
        per.iter().sum::<f64>() / per.len() as f64
    };
    for (name, solver) in [
        ("DPM-Solver++(2M) (MRS ODE-2 data)", Solver::ode(2)),
        ("DPM-Solver++(3M), Taylor third order", Solver::ode(3)),
        ("SDE-DPM-Solver++(2M) (MRS SDE-2 data)", Solver::sde(2)),
    ] {
        let mut row = format!("| {name} |");
        for nfe in [5, 10, 20, 50] {
            let s = MrSampler::from_arc(schedule.clone(), nfe)?
                .with_solver(solver)?
                .with_grid(TimeGrid::UniformLambda)?
                .with_data_range(None)?;
            row += &format!(
                " {:.2e} |",
                w2(gaussian_output_law_from(
                    &s,
                    &oracle,
                    &mu,
                    Start::ExactMarginal
                )?)
            );
        }
        println!("{row}");
    }
    let mut row = "| DDPM ancestral (posterior sampling, strided) |".to_string();
    for nfe in [5, 10, 20, 50] {
        let s = BaselineSampler::from_arc(schedule.clone(), Baseline::Posterior, nfe)?;
        row += &format!(
            " {:.2e} |",
            w2(gaussian_output_law_from(
                &s,
                &oracle,
                &mu,
                Start::ExactMarginal
            )?)
        );
    }
    println!("{row}");

    // The same sampler on an actual batch, with no μ to supply.
    let x_t = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| {
        0.3 * (i[0] as f64 - 1.0) + 0.1 * i[1] as f64
    });
    let s = MrSampler::from_arc(schedule.clone(), 10)?.with_data_range(None)?;
    let mut model = oracle.clone();
    let out = s.sample_standard(&mut model, x_t, &mut PhiloxNoise::new(0))?;
    println!(
        "\nsample_standard: {} evaluations, first row {:?}",
        out.stats.nfe,
        out.x
            .index_axis(ndarray::Axis(0), 0)
            .iter()
            .copied()
            .collect::<Vec<f64>>()
    );
    Ok(())
}
