//! Golden values and identities of `docs/math.md` §9 (numbers from an independent computation, not from this
//! crate).

use std::sync::Arc;

use mrsampler::Mode;
use mrsampler::Solver;
use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{
    CountingModel, FitTarget, FnModel, MrSampler, Parameterization, Sampler, SamplerTensor,
    SeededNoise,
};
use ndarray::{Array1, ArrayD, IxDyn};

const SIGMA_INF: f64 = 50.0 / 255.0;

fn arr(v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.to_vec()).unwrap()
}

/// `docs/math.md` §9.7: Gaussian data N(0.7, 0.1²), μ = 0.3, reference mode, outputs before the clip.
fn gaussian_run(
    grid: TimeGrid,
    m: usize,
    param: Parameterization,
    order: usize,
    denoise_last: bool,
) -> Vec<f64> {
    // The shipped lambda_min (−5, a no-op on this schedule); the Karras grids do not take one.
    let karras = matches!(grid, TimeGrid::KarrasN { .. } | TimeGrid::KarrasT { .. });
    let lambda_min = (!karras).then_some(-5.0);
    let sampler = MrSampler::new(IrSdeSchedule::da_clip(), m)
        .unwrap()
        .with_mode(Mode::Reference)
        .unwrap()
        .with_grid(grid)
        .unwrap()
        .with_solver(Solver::ode(order))
        .unwrap()
        .with_parameterization(param)
        .unwrap()
        .with_lambda_min(lambda_min)
        .unwrap()
        .with_denoise_last(denoise_last)
        .unwrap();
    let mut oracle = GaussianOracle::new(
        vec![0.7; 3],
        vec![0.01; 3],
        sampler.model_schedule().unwrap(),
    )
    .unwrap();
    let mu = arr(&[0.3; 3]);
    let x0 = arr(&[
        0.3 - SIGMA_INF,
        0.3 + 0.5 * SIGMA_INF,
        0.3 + 2.0 * SIGMA_INF,
    ]);
    let out = sampler
        .sample(&mut oracle, &mu, Some(x0), &mut SeededNoise::new(0))
        .unwrap();
    out.x_unclipped.to_host_f64().unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{what}: got {got:?}, want {want:?}");
    }
}

#[test]
fn gaussian_golden_outputs() {
    use Parameterization::{Data, Noise};
    let ll = || TimeGrid::UniformLambda;
    let cases: [(TimeGrid, usize, Parameterization, usize, [f64; 3]); 9] = [
        (
            ll(),
            10,
            Data,
            2,
            [0.5913635768, 0.7553711397, 0.9193787027],
        ),
        (
            ll(),
            10,
            Noise,
            2,
            [0.6067440443, 0.7451775942, 0.8836111442],
        ),
        (
            TimeGrid::Linspace,
            10,
            Data,
            1,
            [0.6180878184, 0.7396775145, 0.8612672105],
        ),
        (
            TimeGrid::Linspace,
            10,
            Noise,
            1,
            [0.6180878184, 0.7396775145, 0.8612672105],
        ),
        (
            TimeGrid::Linspace,
            20,
            Data,
            3,
            [0.6071339508, 0.7449885463, 0.8828431418],
        ),
        (
            TimeGrid::Linspace,
            20,
            Noise,
            3,
            [0.598619245, 0.7491169396, 0.8996146341],
        ),
        (ll(), 5, Data, 2, [0.6285995408, 0.7347604114, 0.8409212821]),
        (
            TimeGrid::KarrasN { rho: 7.0 },
            10,
            Data,
            2,
            [0.5760521203, 0.7614858921, 0.946919664],
        ),
        (
            ll(),
            20,
            Data,
            3,
            [0.6029067027, 0.7552952376, 0.9076837726],
        ),
    ];
    for (grid, m, param, order, want) in cases {
        let what = format!("{grid:?} M={m} {param:?} order {order}");
        assert_close(
            &gaussian_run(grid, m, param, order, false),
            &want,
            2e-10,
            &what,
        );
    }
    let dl = gaussian_run(ll(), 10, Data, 2, true);
    assert_close(
        &dl,
        &[0.5960686265, 0.757826492, 0.9195843574],
        2e-10,
        "denoise_last",
    );
}

/// `docs/math.md` §9.7: the exact PF-ODE endpoint at τ = 0.
#[test]
fn gaussian_exact_endpoint() {
    let sch: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
    let o = GaussianOracle::new(vec![0.7], vec![0.01], sch).unwrap();
    let starts = [
        0.3 - SIGMA_INF,
        0.3 + 0.5 * SIGMA_INF,
        0.3 + 2.0 * SIGMA_INF,
    ];
    let want = [0.59893512, 0.74896379, 0.89899245];
    for (x, w) in starts.iter().zip(want) {
        assert!((o.pf_ode_map(0, *x, 0.3, 100.0, 0.0) - w).abs() < 1e-8);
    }
}

/// `docs/math.md` §9.3: a point mass is reproduced to machine precision by every exact-mode ODE
/// step; the reference's λ interpolation costs ≈3.1e-3 (data) on linear-lambda M = 10.
#[test]
fn point_mass_exactness() {
    let (x0s, mu) = (0.8, 0.3);
    let z0 = [-1.2, 0.1, 0.9, 2.0];
    for mode in [Mode::Exact, Mode::Reference] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            for order in 1..=3 {
                let grids = match mode {
                    Mode::Exact => vec![
                        TimeGrid::Linspace,
                        TimeGrid::UniformLambda,
                        TimeGrid::KarrasN { rho: 7.0 },
                        TimeGrid::KarrasT { rho: 7.0 },
                        TimeGrid::Trailing,
                        TimeGrid::Leading { offset: 0.0 },
                    ],
                    Mode::Reference => vec![TimeGrid::Linspace, TimeGrid::UniformLambda],
                };
                for grid in grids {
                    let s = MrSampler::new(IrSdeSchedule::da_clip(), 10)
                        .unwrap()
                        .with_mode(mode)
                        .unwrap()
                        .with_grid(grid.clone())
                        .unwrap()
                        .with_solver(Solver::ode(order))
                        .unwrap()
                        .with_parameterization(param)
                        .unwrap()
                        .with_data_range(None)
                        .unwrap();
                    let view = s.model_schedule().unwrap();
                    let tau = s.timesteps().unwrap();
                    let (t0, tm) = (tau[0], *tau.last().unwrap());
                    let start: Vec<f64> = z0
                        .iter()
                        .map(|z| {
                            view.alpha(t0) * x0s + (1.0 - view.alpha(t0)) * mu + view.sigma(t0) * z
                        })
                        .collect();
                    let want: Vec<f64> = z0
                        .iter()
                        .map(|z| {
                            view.alpha(tm) * x0s + (1.0 - view.alpha(tm)) * mu + view.sigma(tm) * z
                        })
                        .collect();
                    let mut model = FnModel::new(
                        FitTarget::Data,
                        move |x: &ArrayD<f64>, _: &ArrayD<f64>, _| Ok(x.mapv(|_| x0s)),
                    );
                    let out = s
                        .sample(
                            &mut model,
                            &arr(&[mu; 4]),
                            Some(arr(&start)),
                            &mut SeededNoise::new(1),
                        )
                        .unwrap();
                    let got = out.x.to_host_f64().unwrap();
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0, f64::max);
                    let what = format!("{mode:?} {grid:?} {param:?} order {order}: error {err:e}");
                    match (mode, &grid, param) {
                        (Mode::Exact, ..) | (Mode::Reference, TimeGrid::Linspace, _) => {
                            assert!(err <= 1e-13, "{what}")
                        }
                        (Mode::Reference, _, Parameterization::Data) => {
                            assert!((2.5e-3..3.7e-3).contains(&err), "{what}")
                        }
                        (Mode::Reference, _, Parameterization::Noise) => {
                            assert!((5e-6..2e-4).contains(&err), "{what}")
                        }
                    }
                }
            }
        }
    }
}

/// `docs/math.md` §9.4: on an integer grid the order-1 data and noise steps coincide (DDIM identity).
#[test]
fn ddim_identity() {
    for mode in [Mode::Exact, Mode::Reference] {
        let run = |param| {
            let s = MrSampler::new(IrSdeSchedule::da_clip(), 10)
                .unwrap()
                .with_mode(mode)
                .unwrap()
                .with_solver(Solver::ode(1))
                .unwrap()
                .with_parameterization(param)
                .unwrap();
            let mut o = GaussianOracle::new(
                vec![0.6, 0.2],
                vec![0.02, 0.05],
                s.model_schedule().unwrap(),
            )
            .unwrap();
            let mu = arr(&[0.3, 0.5, 0.1, 0.9])
                .into_shape_with_order(IxDyn(&[2, 2]))
                .unwrap();
            let x = arr(&[0.1, 0.7, 0.4, 0.2])
                .into_shape_with_order(IxDyn(&[2, 2]))
                .unwrap();
            s.sample(&mut o, &mu, Some(x), &mut SeededNoise::new(0))
                .unwrap()
                .x_unclipped
        };
        let (a, b) = (run(Parameterization::Data), run(Parameterization::Noise));
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() < 1e-13, "{mode:?}: {x} vs {y}");
        }
    }
}

/// `docs/math.md` §9.6: shifting x, μ and the data by c shifts the output by c (clip and thresholding
/// off), for every solver, with the same noise.
#[test]
fn affine_equivariance() {
    let c = 0.37;
    for solver in [
        (Solver::ode(1)),
        (Solver::ode(3)),
        (Solver::sde(1)),
        (Solver::sde(2)),
    ] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let s = MrSampler::new(IrSdeSchedule::da_clip(), 12)
                .unwrap()
                .with_solver(solver)
                .unwrap()
                .with_parameterization(param)
                .unwrap()
                .with_grid(TimeGrid::UniformLambda)
                .unwrap()
                .with_data_range(None)
                .unwrap();
            let run = |shift: f64| {
                let mut o = GaussianOracle::new(
                    vec![0.6 + shift, 0.2 + shift],
                    vec![0.02, 0.05],
                    s.model_schedule().unwrap(),
                )
                .unwrap();
                let mu = arr(&[0.3 + shift, 0.5 + shift]);
                let x = arr(&[0.1 + shift, 0.7 + shift]);
                s.sample(&mut o, &mu, Some(x), &mut SeededNoise::new(9))
                    .unwrap()
                    .x
            };
            let (a, b) = (run(0.0), run(c));
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x + c - y).abs() < 1e-12,
                    "{solver:?} {param:?}: {x} + c vs {y}"
                );
            }
        }
    }
}

/// `docs/math.md` §9.10: the network sees τ_0 … τ_{M−1}, never τ_M, and exactly M times.
#[test]
fn network_sees_grid_times_except_the_last() {
    for grid in [
        TimeGrid::Linspace,
        TimeGrid::UniformLambda,
        TimeGrid::KarrasT { rho: 7.0 },
    ] {
        for dl in [false, true] {
            let s = MrSampler::new(IrSdeSchedule::da_clip(), 7)
                .unwrap()
                .with_grid(grid.clone())
                .unwrap()
                .with_denoise_last(dl)
                .unwrap();
            let tau = s.timesteps().unwrap();
            let mut m = CountingModel::new(FnModel::new(
                FitTarget::Noise,
                |x: &ArrayD<f32>, _: &ArrayD<f32>, _| Ok(x * 0.1),
            ));
            let mu = ArrayD::<f32>::from_elem(IxDyn(&[2, 3]), 0.5);
            let out = s
                .sample(&mut m, &mu, None, &mut SeededNoise::new(3))
                .unwrap();
            assert_eq!(m.calls(), 7);
            assert_eq!(out.stats.nfe, 7);
            assert_eq!(m.times(), &tau[..7]);
        }
    }
}

/// `docs/math.md` §9.11: the prior has mean μ and std σ∞ (reference) or σ(τ_0) (exact).
#[test]
fn prior_moments() {
    let n = 20000;
    for mode in [Mode::Reference, Mode::Exact] {
        let s = MrSampler::new(IrSdeSchedule::da_clip(), 5)
            .unwrap()
            .with_mode(mode)
            .unwrap()
            .with_grid(TimeGrid::Custom(vec![50.0, 25.0, 10.0, 0.0]))
            .unwrap();
        let mu = Array1::from_elem(n, 0.25).into_dyn();
        let run = Sampler::start::<ArrayD<f64>, _>(
            &s,
            FitTarget::Noise,
            &mu,
            None,
            &mut SeededNoise::new(11),
        )
        .unwrap();
        let x = run.state();
        let mean = x.iter().map(|v| v - 0.25).sum::<f64>() / n as f64;
        let std = (x.iter().map(|v| (v - 0.25 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let want = match mode {
            Mode::Reference => SIGMA_INF,
            Mode::Exact => IrSdeSchedule::da_clip().sigma(s.timesteps().unwrap()[0]),
        };
        // 20000 draws: mean error ~ 0.0014·σ, std error ~ 0.005·σ relative.
        assert!(
            mean.abs() < 5.0 * want / (n as f64).sqrt(),
            "{mode:?} mean {mean}"
        );
        assert!(
            (std / want - 1.0).abs() < 0.025,
            "{mode:?} std {std} vs {want}"
        );
        if mode == Mode::Exact {
            // The grid starts at τ_0 = 50, where σ = 0.93 σ∞.
            assert!(want < 0.95 * SIGMA_INF);
        }
    }
}
