//! Stochastic Heun with and without a shared Brownian increment: output mean and std on the
//! Gaussian oracle (data `N(0.7, 0.1²)`, μ = 0.3, DA-CLIP schedule) per step count and seed.
//! The exact law at the grid's end has std ≈ 0.100. `docs/benchmarks.md` records the table.
//!
//! ```text
//! cargo run --release -p mrsampler-research --bin heun_brownian
//! ```

use std::sync::Arc;

use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::IrSdeSchedule;
use mrsampler::{Baseline, BaselineSampler, Sampler, SeededNoise};
use ndarray::{ArrayD, IxDyn};

fn main() -> Result<(), mrsampler::Error> {
    let sch = IrSdeSchedule::da_clip();
    let n = 20_000;
    let mu = ArrayD::<f64>::from_elem(IxDyn(&[n, 1]), 0.3);
    let mut oracle = GaussianOracle::new(vec![0.7], vec![0.01], Arc::new(sch.clone()))?;
    println!("| K | seed 0 mean / std | seed 1 mean / std | seed 2 mean / std |");
    println!("|---|---|---|---|");
    for k in [10, 20, 40, 80, 160] {
        let sampler = BaselineSampler::new(sch.clone(), Baseline::Heun { stochastic: true }, k)?;
        let mut line = format!("| {k} |");
        for seed in 0..3 {
            let out = sampler.sample(&mut oracle, &mu, None, &mut SeededNoise::new(seed))?;
            let mean = out.x.mean().unwrap_or(f64::NAN);
            let std = out
                .x
                .mapv(|v| (v - mean).powi(2))
                .mean()
                .unwrap_or(f64::NAN)
                .sqrt();
            line += &format!(" {mean:.4} / {std:.4} |");
        }
        println!("{line}");
    }
    Ok(())
}
