//! Reduced-precision weights and computation against f32: forward time and the output's
//! relative error, for one checkpoint on the CPU.
//!
//! ```text
//! cargo run --release -p mrsampler-models --example precision -- CHECKPOINT SIZE [REPEATS]
//! ```
//!
//! Loads the checkpoint (configuration inferred) in f32, f16 and bf16, runs one
//! `[1, C, SIZE, SIZE]` input (smooth, in `[0, 1]`, with `x_t = μ + 0.3·noise` at `t = 50`) and
//! prints one row per dtype: median seconds of `REPEATS` forwards after a warm-up, and
//! `max |out − out_f32| / max |out_f32|`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mrsampler_models::{LoadOptions, Network};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(size)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: precision CHECKPOINT SIZE [REPEATS]");
        std::process::exit(2);
    };
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let load = |dtype| {
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        Network::load(path, &opts).unwrap()
    };
    let reference = load(DType::F32);
    let c = reference.channels();
    let mu = Tensor::rand(0f32, 1f32, (1, c, size, size), &Device::Cpu).unwrap();
    let xt = (&mu + (Tensor::randn(0f32, 0.3, (1, c, size, size), &Device::Cpu).unwrap())).unwrap();
    println!("| dtype | s per forward | relative error vs f32 |");
    println!("|---|---|---|");
    let mut want = None;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let net = if dtype == DType::F32 {
            reference.clone()
        } else {
            load(dtype)
        };
        let run = || {
            net.forward(&xt.to_dtype(dtype)?, &mu.to_dtype(dtype)?, &[50.0])?
                .to_dtype(DType::F32)
                .map_err(mrsampler_models::Error::from)
        };
        let out = match run() {
            Ok(out) => out,
            Err(e) => {
                println!("| {dtype:?} | fails: {e} | |");
                continue;
            }
        };
        let mut times: Vec<f64> = (0..repeats)
            .map(|_| {
                let t = Instant::now();
                run().unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let want = want.get_or_insert_with(|| out.clone());
        let max = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let err = max(&(&out - &*want).unwrap()) / max(want);
        println!("| {dtype:?} | {:.3} | {err:.2e} |", times[times.len() / 2]);
    }
}
