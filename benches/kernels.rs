//! Kernel and whole-step benchmarks of the ndarray backend (f32).
//!
//! ```text
//! cargo bench --bench kernels
//! ```
//!
//! * `lincomb`: the fused 6-stream kernel (`x ← a·x + 5 terms`) against a plain copy of the
//!   same number of bytes, in the same run.
//! * `step`: one ODE-2-data and one SDE-2-data step (noise included) with a zero-cost model,
//!   at 4×3×512×512 and 1×3×1024×1024.
//! * `noise`: Philox normal generation.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mrsampler::Solver;
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    FitTarget, MrSampler, NoiseSource, Parallelism, PhiloxNoise, Run, Sampler, SamplerTensor,
};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

const SHAPES: [[usize; 4]; 2] = [[4, 3, 512, 512], [1, 3, 1024, 1024]];

fn tensor(shape: &[usize], v: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(shape), v)
}

/// Parallel copy with the kernels' split.
fn copy(dst: &mut [f32], src: &[f32]) {
    let parts = rayon::current_num_threads();
    let chunk = dst.len().div_ceil(parts);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

fn lincomb(c: &mut Criterion) {
    let shape = SHAPES[0];
    let n: usize = shape.iter().product();
    let mut g = c.benchmark_group("lincomb");
    // 5 reads + 1 read-modify-write.
    g.throughput(Throughput::Bytes((7 * n * 4) as u64));
    let ts: Vec<ArrayD<f32>> = (0..5).map(|k| tensor(&shape, 0.1 * k as f32)).collect();
    let mut x = tensor(&shape, 1.0);
    let par = Parallelism::default();
    g.bench_function("fused_6_streams", |b| {
        b.iter(|| {
            let terms: Vec<(f64, &ArrayD<f32>)> = ts.iter().map(|t| (0.3, t)).collect();
            x.linear_combination(Some(0.9), &terms, par).unwrap();
        })
    });
    // Same byte count as a copy: 3.5 buffers read, 3.5 written ≈ 7 tensor passes.
    let srcs: Vec<Vec<f32>> = (0..4).map(|_| vec![0.5f32; n]).collect();
    let mut dsts: Vec<Vec<f32>> = (0..4).map(|_| vec![0.0f32; n]).collect();
    g.bench_function("copy_same_bytes", |b| {
        b.iter(|| {
            for (d, s) in dsts.iter_mut().zip(&srcs).take(3) {
                copy(d, s);
            }
            let half = n / 2;
            copy(&mut dsts[3][..half], &srcs[3][..half]);
        })
    });
    g.finish();
}

fn step_run(solver: Solver, shape: &[usize], noise: &mut PhiloxNoise) -> Run<ArrayD<f32>> {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 100_000)
        .unwrap()
        .with_solver(solver)
        .unwrap()
        .with_grid(TimeGrid::Linspace)
        .unwrap();
    let mu = tensor(shape, 0.4);
    s.start(FitTarget::Noise, &mu, None, noise).unwrap()
}

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("step");
    g.sample_size(20);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        // The fused ODE-2 step streams 6 tensors: net, x, μ, q₁ in; q₀, x out.
        g.throughput(Throughput::Bytes((6 * n * 4) as u64));
        let label = format!("{}x{}x{}x{}", shape[0], shape[1], shape[2], shape[3]);
        for (name, solver) in [("ode2_data", Solver::ode(2)), ("sde2_data", Solver::sde(2))] {
            let mut noise = PhiloxNoise::new(0);
            let mut run = step_run(solver, &shape, &mut noise);
            let net = tensor(&shape, 0.05);
            // Warm-up: fill the history and the noise buffer.
            for _ in 0..3 {
                run.advance(&net, &mut noise).unwrap();
            }
            g.bench_with_input(BenchmarkId::new(name, &label), &shape, |b, _| {
                b.iter(|| run.advance(&net, &mut noise).unwrap())
            });
        }
    }
    g.finish();
}

fn noise(c: &mut Criterion) {
    let shape = SHAPES[0];
    let n: usize = shape.iter().product();
    let mut g = c.benchmark_group("noise");
    g.throughput(Throughput::Bytes((n * 4) as u64));
    let mut out = tensor(&shape, 0.0);
    let mut src = PhiloxNoise::new(3);
    g.bench_function("philox_normal_f32", |b| {
        b.iter(|| {
            src.fill_standard_normal(&mut out, Parallelism::default())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, lincomb, step, noise);
criterion_main!(benches);
