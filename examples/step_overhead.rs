//! Per-step cost of the sampler itself (a zero-cost model), against the memory copy floor.
//!
//! ```text
//! cargo run --release --example step_overhead -- [--shape 4,3,512,512] [--threads N] [--runs 7]
//! ```
//!
//! Prints one JSON line:
//! `{"shape": [...], "dtype": "f32", "threads": N, "ode2_data_ms_per_step": X,
//!   "sde2_data_ms_per_step": Y, "noise_fill_ms": W, "copy_floor_ms": Z,
//!   "copy_floor_sequential_ms": V}`, each the best of
//! `--runs` timings of 20 consecutive steps (or fills). The SDE step generates its noise inside
//! the fused kernel (a counter draw of `PhiloxNoise`); `noise_fill_ms` is the same draw filled
//! into a tensor, what a step with a non-counter-based source adds. The copy floor is the time
//! to stream as many tensor-sized buffers as the fused ODE-2 data step reads and writes (4
//! read, 2 written: three copies), split across the same threads, the three copies advancing
//! together block by block as the step's streams do. `copy_floor_sequential_ms` is the same
//! three copies one after another (the floor's definition until 2026-12-07): one pair of
//! buffers at a time can stay in a large L3 cache, which made that floor bimodal on the dev
//! machine (`docs/benchmarks.md`).

use mrsampler::Solver;
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{FitTarget, MrSampler, NoiseSource, Parallelism, PhiloxNoise, Sampler};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

const STEPS: usize = 20;
/// Elements each copy of the floor moves before the next buffer's turn (16 KiB of `f32`).
const BLOCK: usize = 4096;

fn parse() -> Result<(Vec<usize>, usize, usize), String> {
    let mut shape = vec![4, 3, 512, 512];
    let mut threads = rayon::current_num_threads();
    let mut runs = 7;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--shape" => {
                shape = it
                    .next()
                    .ok_or("--shape takes e.g. 4,3,512,512")?
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("bad --shape: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--threads takes a count")?
            }
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--runs takes a count")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if shape.is_empty() || shape.contains(&0) {
        return Err("--shape needs positive sizes".into());
    }
    Ok((shape, threads.max(1), runs.max(1)))
}

/// Best time per step over `runs` runs of `STEPS` steps.
fn time_steps(solver: Solver, shape: &[usize], par: Parallelism, runs: usize) -> f64 {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 10_000)
        .expect("valid")
        .with_solver(solver)
        .expect("valid")
        .with_grid(TimeGrid::Linspace)
        .expect("valid")
        .with_parallelism(par)
        .expect("valid");
    let mu = ArrayD::<f32>::from_elem(IxDyn(shape), 0.4);
    let net = ArrayD::<f32>::from_elem(IxDyn(shape), 0.05);
    let mut noise = PhiloxNoise::new(0);
    let mut run = s
        .start(FitTarget::Noise, &mu, None, &mut noise)
        .expect("starts");
    for _ in 0..3 {
        run.advance(&net, &mut noise).expect("steps");
    }
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        for _ in 0..STEPS {
            run.advance(&net, &mut noise).expect("steps");
        }
        best = best.min(t.elapsed().as_secs_f64() / STEPS as f64);
    }
    best * 1e3
}

/// Best time of one noise fill of `shape` in `f32`.
fn time_noise(shape: &[usize], par: Parallelism, runs: usize) -> f64 {
    let mut z = ArrayD::<f32>::zeros(IxDyn(shape));
    let mut noise = PhiloxNoise::new(0);
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        for _ in 0..STEPS {
            noise.fill_standard_normal(&mut z, par).expect("fills");
        }
        best = best.min(t.elapsed().as_secs_f64() / STEPS as f64);
    }
    std::hint::black_box(&z);
    best * 1e3
}

/// The copy floor: three copies of `n` floats split into `parts`; `together`: block by block
/// across the three (the definition), else one whole copy after another (the definition
/// before 2026-12-07, printed for comparison).
fn copy_floor(n: usize, parts: usize, runs: usize, together: bool) -> f64 {
    let src: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0.5f32; n]);
    let mut dst: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0.0f32; n]);
    let chunk = n.div_ceil(parts);
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        for _ in 0..STEPS {
            if !together {
                for (d, s) in dst.iter_mut().zip(&src) {
                    d.par_chunks_mut(chunk)
                        .zip(s.par_chunks(chunk))
                        .for_each(|(d, s)| d.copy_from_slice(s));
                }
                continue;
            }
            // The three copies advance together, block by block, so that all six buffers
            // stream at once as in the step (copied one after another, one pair at a time
            // can stay in a large L3 cache and the floor would not be a memory floor).
            let [d0, d1, d2] = &mut dst;
            d0.par_chunks_mut(chunk)
                .zip(d1.par_chunks_mut(chunk))
                .zip(d2.par_chunks_mut(chunk))
                .zip(src[0].par_chunks(chunk))
                .zip(src[1].par_chunks(chunk))
                .zip(src[2].par_chunks(chunk))
                .for_each(|(((((d0, d1), d2), s0), s1), s2)| {
                    for (((a, b), c), ((x, y), z)) in d0
                        .chunks_mut(BLOCK)
                        .zip(d1.chunks_mut(BLOCK))
                        .zip(d2.chunks_mut(BLOCK))
                        .zip(s0.chunks(BLOCK).zip(s1.chunks(BLOCK)).zip(s2.chunks(BLOCK)))
                    {
                        a.copy_from_slice(x);
                        b.copy_from_slice(y);
                        c.copy_from_slice(z);
                    }
                });
        }
        best = best.min(t.elapsed().as_secs_f64() / STEPS as f64);
    }
    std::hint::black_box(&dst);
    best * 1e3
}

fn main() {
    let (shape, threads, runs) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let n: usize = shape.iter().product();
    let par = Parallelism::Rayon(threads);
    let [ode, sde, fill, floor, one_by_one] = pool.install(|| {
        [
            time_steps(Solver::ode(2), &shape, par, runs),
            time_steps(Solver::sde(2), &shape, par, runs),
            time_noise(&shape, par, runs),
            copy_floor(n, par.parts_for(n), runs, true),
            copy_floor(n, par.parts_for(n), runs, false),
        ]
    });
    println!(
        r#"{{"shape": {shape:?}, "dtype": "f32", "threads": {threads}, "ode2_data_ms_per_step": {ode:.3}, "sde2_data_ms_per_step": {sde:.3}, "noise_fill_ms": {fill:.3}, "copy_floor_ms": {floor:.3}, "copy_floor_sequential_ms": {one_by_one:.3}}}"#
    );
}
