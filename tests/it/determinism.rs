//! The same seed gives bitwise-identical output across repeated runs, thread counts and
//! batch compositions.

use mrsampler::Solver;
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{FitTarget, FnModel, ModelError, MrSampler, Parallelism, PhiloxNoise, Sampler};
use ndarray::{ArrayD, Axis, IxDyn, concatenate};

type Net = fn(&ArrayD<f32>, &ArrayD<f32>, f64) -> Result<ArrayD<f32>, ModelError>;

/// A nonlinear stand-in network (elementwise, so each sample is independent of the others).
fn net() -> FnModel<Net> {
    FnModel::new(FitTarget::Noise, |x, mu, t| {
        Ok(ndarray::Zip::from(x)
            .and(mu)
            .map_collect(|&a, &m| 0.8 * (0.7 * (a - m)).tanh() + 0.01 * t as f32))
    })
}

fn sampler(par: Parallelism) -> MrSampler {
    MrSampler::new(IrSdeSchedule::da_clip(), 10)
        .unwrap()
        .with_solver(Solver::sde(2))
        .unwrap()
        .with_grid(TimeGrid::UniformLambda)
        .unwrap()
        .with_parallelism(par)
        .unwrap()
}

fn mu(batch: usize, offset: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[batch, 3, 64, 64]), |i| {
        ((i[0] + offset) * 7 + i[1] * 3 + i[2] + i[3]) as f32 % 11.0 / 11.0
    })
}

#[test]
fn repeated_runs_and_thread_counts_are_bitwise_identical() {
    let m = mu(3, 0);
    let reference = sampler(Parallelism::Sequential)
        .sample(&mut net(), &m, None, &mut PhiloxNoise::new(42))
        .unwrap()
        .x;
    for par in [
        Parallelism::Sequential,
        Parallelism::Rayon(1),
        Parallelism::Rayon(2),
        Parallelism::Rayon(3),
        Parallelism::Rayon(0),
    ] {
        for _ in 0..2 {
            let x = sampler(par)
                .sample(&mut net(), &m, None, &mut PhiloxNoise::new(42))
                .unwrap()
                .x;
            assert_eq!(x, reference, "{par:?}");
        }
    }
}

#[test]
fn a_sample_does_not_depend_on_its_batch() {
    // Shared seed: sample b uses stream b, so appending samples changes nothing before them.
    let small = mu(2, 0);
    let big = concatenate(Axis(0), &[small.view(), mu(3, 5).view()]).unwrap();
    let s = sampler(Parallelism::Rayon(0));
    let a = s
        .sample(&mut net(), &small, None, &mut PhiloxNoise::new(7))
        .unwrap()
        .x;
    let b = s
        .sample(&mut net(), &big, None, &mut PhiloxNoise::new(7))
        .unwrap()
        .x;
    assert_eq!(a, b.slice_axis(Axis(0), (0..2).into()).to_owned());
    // Per-sample seeds: a request keeps its result wherever it sits in a batch.
    let r1 = mu(1, 9);
    let r2 = mu(1, 4);
    let alone = s
        .sample(
            &mut net(),
            &r1,
            None,
            &mut PhiloxNoise::per_sample(vec![111]),
        )
        .unwrap()
        .x;
    let pair = concatenate(Axis(0), &[r2.view(), r1.view()]).unwrap();
    let batched = s
        .sample(
            &mut net(),
            &pair,
            None,
            &mut PhiloxNoise::per_sample(vec![222, 111]),
        )
        .unwrap()
        .x;
    assert_eq!(alone, batched.slice_axis(Axis(0), (1..2).into()).to_owned());
}
