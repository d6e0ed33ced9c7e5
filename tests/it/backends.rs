//! One conformance suite, instantiated for every backend (in the style of burn's
//! `testgen_all!`): every shipped vector replayed, plus oracle properties.
//!
//! f64 backends must match the vectors at the vectors' own tolerance (1e-12 relative unless a
//! case says otherwise). f32 backends are held to `F32_TOL = 1e-4` relative to max(1, |x|):
//! each operation rounds to f32 (relative 6e-8) and the toy network drives states to |x| ≈ 100
//! through step coefficients up to ~40 (σ/α at the first step), so errors of a few hundred
//! ulps are expected; the largest measured over all 144 cases is 1.74e-5 on ndarray, candle
//! and burn alike (6× below the tolerance).
#![cfg(feature = "conformance")]

use mrsampler::SamplerTensor;
use mrsampler::conformance::{Case, check, parse_file, run_case};

/// Relative tolerance for f32 backends (see the file comment).
pub const F32_TOL: f64 = 1e-4;

fn cases() -> Vec<(String, serde_json::Value)> {
    let mut all = Vec::new();
    for file in [
        "toy_reference.json",
        "toy_exact.json",
        "baselines.json",
        "oracles.json",
    ] {
        let text =
            std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        for (i, raw) in parse_file(&text).unwrap().into_iter().enumerate() {
            all.push((Case::name_of(&raw, i), raw));
        }
    }
    all
}

/// Replays every vector on `proto`'s backend; `flatten` reshapes cases to `[batch, rest]`
/// (for backends with a static rank); `tol` overrides the tolerance (f32).
pub fn replay_all<T: SamplerTensor>(proto: &T, flatten: bool, tol: Option<f64>) -> usize {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, raw) in cases() {
        let mut case = Case::from_json(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        if flatten {
            let rest: usize = case.shape[1..].iter().product();
            case.shape = vec![case.shape[0], rest];
        }
        if let Some(t) = tol {
            case.tolerance = case.tolerance.max(t);
        }
        let result = run_case(&case, proto);
        for m in check(&case, &result) {
            failures.push(format!("{name}: {m}"));
        }
        n += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

macro_rules! backend_suite {
    ($name:ident, $proto:expr, $flatten:expr, $tol:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn replays_every_vector() {
                assert_eq!(replay_all(&$proto, $flatten, $tol), 144);
            }

            /// Exact mode reproduces a point mass on every grid and order (`docs/math.md` §9.3), on this
            /// backend.
            #[test]
            fn point_mass_is_exact() {
                use mrsampler::Solver;
                use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
                use mrsampler::{
                    FitTarget, FnModel, MrSampler, Parameterization, Sampler, SeededNoise,
                };
                let proto = $proto;
                let tol = $tol.unwrap_or(1e-13);
                for grid in [
                    TimeGrid::Linspace,
                    TimeGrid::UniformLambda,
                    TimeGrid::KarrasT { rho: 7.0 },
                ] {
                    for order in 1..=3 {
                        let s = MrSampler::new(IrSdeSchedule::da_clip(), 12)
                            .unwrap()
                            .with_grid(grid.clone())
                            .unwrap()
                            .with_solver(Solver::ode(order))
                            .unwrap()
                            .with_parameterization(Parameterization::Data)
                            .unwrap()
                            .with_data_range(None)
                            .unwrap();
                        let v = s.model_schedule().unwrap();
                        let tau = s.timesteps().unwrap();
                        let (x0, mu, z) = (0.8, 0.3, [-1.0, 0.2, 1.4, 0.6]);
                        let at = |t: f64, zi: f64| {
                            v.alpha(t) * x0 + (1.0 - v.alpha(t)) * mu + v.sigma(t) * zi
                        };
                        let start: Vec<f64> = z.iter().map(|&zi| at(tau[0], zi)).collect();
                        let want: Vec<f64> = z.iter().map(|&zi| at(tau[12], zi)).collect();
                        let x = proto.new_from_host(&[2, 2], &start).unwrap();
                        let m = proto.new_from_host(&[2, 2], &[mu; 4]).unwrap();
                        let target = proto.new_from_host(&[2, 2], &[x0; 4]).unwrap();
                        let mut model =
                            FnModel::new(
                                FitTarget::Data,
                                move |_: &_, _: &_, _| Ok(target.clone()),
                            );
                        let out = s
                            .sample(&mut model, &m, Some(x), &mut SeededNoise::new(0))
                            .unwrap();
                        for (g, w) in out.x.to_host_f64().unwrap().iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= tol * w.abs().max(1.0),
                                "{grid:?} order {order}: {g} vs {w}"
                            );
                        }
                    }
                }
            }

            /// The same Philox noise gives the same SDE run as a reference on the ndarray f64
            /// backend taken through other code paths: the Philox draws replayed from the host
            /// (`ReplayNoise`) and μ and the start state in a strided (non-contiguous) layout,
            /// which the fused kernel does not take (so even the ndarray f64 suite compares two
            /// different computations).
            #[test]
            fn sde_with_philox_matches_ndarray() {
                use mrsampler::Solver;
                use mrsampler::oracle::GaussianOracle;
                use mrsampler::schedule::IrSdeSchedule;
                use mrsampler::{
                    MrSampler, NoiseSource, Parallelism, PhiloxNoise, ReplayNoise, Sampler,
                };
                let proto = $proto;
                let tol = $tol.unwrap_or(1e-12);
                let s = MrSampler::new(IrSdeSchedule::da_clip(), 10)
                    .unwrap()
                    .with_solver(Solver::sde(2))
                    .unwrap();
                let mu: Vec<f64> = (0..24).map(|i| 0.2 + 0.03 * i as f64).collect();
                let start: Vec<f64> = (0..24).map(|i| 0.1 + 0.04 * i as f64).collect();
                let oracle = || {
                    GaussianOracle::new(vec![0.6; 12], vec![0.02; 12], s.model_schedule().unwrap())
                        .unwrap()
                };
                let nd = {
                    // A (2, 12) array stored column-major: the transpose of a (12, 2) one.
                    let strided = |v: &[f64]| {
                        let data: Vec<f64> = (0..24).map(|k| v[(k % 2) * 12 + k / 2]).collect();
                        let a = ndarray::Array2::from_shape_vec((12, 2), data)
                            .unwrap()
                            .reversed_axes()
                            .into_dyn();
                        assert!(!a.is_standard_layout());
                        a
                    };
                    let mut philox = PhiloxNoise::new(5);
                    let draws: Vec<Vec<f64>> = (0..10)
                        .map(|_| {
                            let mut d = ndarray::ArrayD::<f64>::zeros(vec![2, 12]);
                            philox
                                .fill_standard_normal(&mut d, Parallelism::Sequential)
                                .unwrap();
                            d.iter().copied().collect()
                        })
                        .collect();
                    let (m, x) = (strided(&mu), strided(&start));
                    assert_eq!(m[[1, 3]], mu[15]);
                    s.sample(&mut oracle(), &m, Some(x), &mut ReplayNoise::new(draws))
                        .unwrap()
                        .x
                        .to_host_f64()
                        .unwrap()
                };
                let m = proto.new_from_host(&[2, 12], &mu).unwrap();
                let x = proto.new_from_host(&[2, 12], &start).unwrap();
                let got = s
                    .sample(&mut oracle(), &m, Some(x), &mut PhiloxNoise::new(5))
                    .unwrap()
                    .x
                    .to_host_f64()
                    .unwrap();
                for (g, w) in got.iter().zip(&nd) {
                    assert!((g - w).abs() <= tol * w.abs().max(1.0), "{g} vs {w}");
                }
            }
        }
    };
}

backend_suite!(
    ndarray_f64,
    ndarray::ArrayD::<f64>::zeros(vec![1]),
    false,
    None::<f64>
);
backend_suite!(
    ndarray_f32,
    ndarray::ArrayD::<f32>::zeros(vec![1]),
    false,
    Some(F32_TOL)
);

#[cfg(feature = "candle")]
backend_suite!(
    candle_f64,
    candle_core::Tensor::zeros(1, candle_core::DType::F64, &candle_core::Device::Cpu).unwrap(),
    false,
    None::<f64>
);
#[cfg(feature = "candle")]
backend_suite!(
    candle_f32,
    candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    false,
    Some(F32_TOL)
);

#[cfg(feature = "burn")]
backend_suite!(
    burn_ndarray_f64,
    burn::tensor::Tensor::<burn::backend::NdArray<f64>, 2>::zeros([1, 1], &Default::default()),
    true,
    None::<f64>
);
#[cfg(feature = "burn")]
backend_suite!(
    burn_ndarray_f32,
    burn::tensor::Tensor::<burn::backend::NdArray<f32>, 2>::zeros([1, 1], &Default::default()),
    true,
    Some(F32_TOL)
);

/// A start state of another element type than μ is refused at the sampler's door.
#[cfg(feature = "candle")]
#[test]
fn start_state_dtype_must_match_mu() {
    use candle_core::{DType, Device, Tensor};
    use mrsampler::schedule::IrSdeSchedule;
    use mrsampler::{Error, FitTarget, MrSampler, NoNoise, Sampler};
    let mu = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 4, 4), DType::F64, &Device::Cpu).unwrap();
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 4).unwrap();
    let e = s
        .start(FitTarget::Noise, &mu, Some(x), &mut NoNoise)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::DTypeMismatch {
                what: "start state",
                expected: "f32",
                found: "f64"
            }
        ),
        "{e}"
    );
}
