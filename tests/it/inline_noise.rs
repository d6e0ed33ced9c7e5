//! A counter-based draw generated inside the fused step (`NoiseSource::counter_draw`) gives
//! bitwise the result of the same draw filled into a tensor first: same stream, same
//! arithmetic, in every solver that draws noise, for `f32` and `f64`, any thread count, batch
//! and odd sizes (partial Philox blocks at sample and chunk boundaries).

use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    Baseline, BaselineSampler, CounterDraw, FitTarget, FnModel, ModelError, MrSampler, NoiseSource,
    Parallelism, PhiloxNoise, Sampler, Solver,
};

/// The samplers that draw noise.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Mrs(Solver),
    Base(Baseline),
}

const KINDS: [Kind; 5] = [
    Kind::Mrs(Solver::sde(1)),
    Kind::Mrs(Solver::sde(2)),
    Kind::Base(Baseline::EulerMaruyama),
    Kind::Base(Baseline::Posterior),
    // Its corrector reuses the predictor's draw: that draw must be a tensor.
    Kind::Base(Baseline::Heun { stochastic: true }),
];
use ndarray::{ArrayD, Dimension, IxDyn};

/// `PhiloxNoise` without its counter draw: the sampler must fill a tensor.
struct FillOnly(PhiloxNoise);

impl<T> NoiseSource<T> for FillOnly
where
    PhiloxNoise: NoiseSource<T>,
{
    fn fill_standard_normal(&mut self, out: &mut T, par: Parallelism) -> mrsampler::Result<()> {
        self.0.fill_standard_normal(out, par)
    }
}

/// Counts the draws handed to the kernel, to show that the in-kernel path is taken.
struct Counting(PhiloxNoise, usize);

impl<T> NoiseSource<T> for Counting
where
    PhiloxNoise: NoiseSource<T>,
{
    fn fill_standard_normal(&mut self, out: &mut T, par: Parallelism) -> mrsampler::Result<()> {
        self.0.fill_standard_normal(out, par)
    }

    fn counter_draw(&mut self, shape: &[usize]) -> mrsampler::Result<Option<CounterDraw<'_>>> {
        self.1 += 1;
        NoiseSource::<T>::counter_draw(&mut self.0, shape)
    }
}

macro_rules! runner {
    ($name:ident, $e:ty) => {
        fn $name<N: NoiseSource<ArrayD<$e>>>(
            kind: Kind,
            shape: &[usize],
            par: Parallelism,
            noise: &mut N,
        ) -> Vec<u64> {
            let mu = ArrayD::<$e>::from_shape_fn(IxDyn(shape), |i| {
                (i.as_array_view().sum() % 7) as $e / 7.0
            });
            let mut net = FnModel::new(
                FitTarget::Noise,
                |x: &ArrayD<$e>, m: &ArrayD<$e>, t: f64| -> Result<ArrayD<$e>, ModelError> {
                    Ok(ndarray::Zip::from(x)
                        .and(m)
                        .map_collect(|&a, &b| 0.8 * (0.7 * (a - b)).tanh() + 1e-3 * t as $e))
                },
            );
            let x = match kind {
                Kind::Mrs(solver) => MrSampler::new(IrSdeSchedule::da_clip(), 6)
                    .unwrap()
                    .with_solver(solver)
                    .unwrap()
                    .with_grid(TimeGrid::UniformLambda)
                    .unwrap()
                    .with_parallelism(par)
                    .unwrap()
                    .sample(&mut net, &mu, None, noise),
                Kind::Base(b) => BaselineSampler::new(IrSdeSchedule::da_clip(), b, 6)
                    .unwrap()
                    .with_parallelism(par)
                    .unwrap()
                    .sample(&mut net, &mu, None, noise),
            }
            .unwrap()
            .x;
            x.iter().map(|v| v.to_bits() as u64).collect()
        }
    };
}

runner!(run_f32, f32);
runner!(run_f64, f64);

#[test]
fn in_kernel_noise_is_the_filled_noise_bit_for_bit() {
    // 3·5·7·11 = 1155 elements per sample: not a multiple of 4, so samples start inside Philox
    // blocks; 2·3·70·70 crosses the kernel's 4096-element noise chunks.
    let shapes: [&[usize]; 3] = [&[2, 3, 5, 7, 11], &[2, 3, 70, 70], &[1, 1, 3]];
    let pars = [
        Parallelism::Sequential,
        Parallelism::Rayon(2),
        Parallelism::Rayon(3),
    ];
    for kind in KINDS {
        for shape in shapes {
            for par in pars {
                let mut counting = Counting(PhiloxNoise::new(5), 0);
                let inline = run_f32(kind, shape, par, &mut counting);
                let filled = run_f32(kind, shape, par, &mut FillOnly(PhiloxNoise::new(5)));
                // Heun's corrector reuses the predictor's draw, so its draws stay tensors.
                let reuses = matches!(kind, Kind::Base(Baseline::Heun { .. }));
                assert_eq!(
                    counting.1 == 0,
                    reuses,
                    "{kind:?}: in-kernel draws {}",
                    counting.1
                );
                assert_eq!(inline, filled, "f32 {kind:?} {shape:?} {par:?}");
                let inline = run_f64(kind, shape, par, &mut PhiloxNoise::new(5));
                let filled = run_f64(kind, shape, par, &mut FillOnly(PhiloxNoise::new(5)));
                assert_eq!(inline, filled, "f64 {kind:?} {shape:?} {par:?}");
            }
        }
    }
    // Per-sample seeds.
    let mut per = PhiloxNoise::per_sample(vec![3, 9]);
    let inline = run_f32(KINDS[1], shapes[0], pars[1], &mut per);
    let mut per = FillOnly(PhiloxNoise::per_sample(vec![3, 9]));
    let filled = run_f32(KINDS[1], shapes[0], pars[1], &mut per);
    assert_eq!(inline, filled);
}

/// A counter draw read back in pieces at arbitrary offsets equals one fill of the tensor.
#[test]
fn counter_draw_pieces_equal_the_fill() {
    let shape = [3, 2, 9, 7];
    let n: usize = shape.iter().product();
    let mut filled = ArrayD::<f32>::zeros(IxDyn(&shape));
    let mut a = PhiloxNoise::new(77);
    NoiseSource::<ArrayD<f32>>::fill_standard_normal(&mut a, &mut filled, Parallelism::Sequential)
        .unwrap();
    NoiseSource::<ArrayD<f32>>::fill_standard_normal(&mut a, &mut filled, Parallelism::Sequential)
        .unwrap();
    let mut b = PhiloxNoise::new(77);
    let _ = NoiseSource::<ArrayD<f32>>::counter_draw(&mut b, &shape).unwrap();
    let draw = NoiseSource::<ArrayD<f32>>::counter_draw(&mut b, &shape)
        .unwrap()
        .expect("Philox hands out counter draws");
    assert_eq!(draw.sample_len(), n / 3);
    let mut pieces = vec![0f32; n];
    let mut at = 0;
    for len in [1, 2, 5, 3, 4, 130, 7].iter().cycle() {
        if at >= n {
            break;
        }
        let end = (at + len).min(n);
        draw.fill_f32(&mut pieces[at..end], at).unwrap();
        at = end;
    }
    let want = filled.as_slice().unwrap();
    for (i, (p, w)) in pieces.iter().zip(want).enumerate() {
        assert_eq!(p.to_bits(), w.to_bits(), "element {i}");
    }
    // A range past the draw's end is an error, not a panic.
    assert_eq!(draw.len(), n);
    assert!(draw.fill_f32(&mut [0.0; 4], n - 3).is_err());
    assert!(draw.fill_f64(&mut [0.0; 1], usize::MAX).is_err());
    // Per-sample seeds must match the batch.
    let mut wrong = PhiloxNoise::per_sample(vec![1, 2]);
    assert!(NoiseSource::<ArrayD<f32>>::counter_draw(&mut wrong, &shape).is_err());
}
