//! One test per row of `docs/errors.md`: every class of bad input returns its typed error.

use std::sync::Arc;

use mrsampler::schedule::{IrSdeSchedule, Schedule, ThetaSchedule, TimeGrid};
use mrsampler::{
    Baseline, BaselineSampler, Error, FitTarget, FnModel, Mode, ModelError, MrSampler, NoNoise,
    ReplayNoise, Sampler, ScoreModel, SeededNoise, Solver, Thresholding,
};
use ndarray::{ArrayD, IxDyn};

fn mu() -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[2, 3]), 0.4)
}

fn sampler() -> MrSampler {
    MrSampler::new(IrSdeSchedule::da_clip(), 5).unwrap()
}

type Net = fn(&ArrayD<f64>, &ArrayD<f64>, f64) -> Result<ArrayD<f64>, ModelError>;

fn zero_noise() -> FnModel<Net> {
    FnModel::new(FitTarget::Noise, |x, _, _| Ok(x * 0.0))
}

#[test]
fn model_output_shape_mismatch() {
    let mut net = FnModel::new(FitTarget::Noise, |_: &ArrayD<f64>, _: &ArrayD<f64>, _| {
        Ok(ArrayD::zeros(IxDyn(&[1, 3])))
    });
    let e = sampler()
        .sample(&mut net, &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                what: "model output",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn start_state_shape_mismatch() {
    let e = sampler()
        .sample(
            &mut zero_noise(),
            &mu(),
            Some(ArrayD::zeros(IxDyn(&[3, 3]))),
            &mut SeededNoise::new(0),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                what: "start state",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn noise_element_count_mismatch() {
    let s = sampler().with_solver(Solver::sde(1)).unwrap();
    let e = s
        .sample(
            &mut zero_noise(),
            &mu(),
            Some(mu()),
            &mut ReplayNoise::new(vec![vec![0.0; 5]; 5]),
        )
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
}

#[test]
fn non_finite_mu_and_start_state() {
    let bad = mu().mapv(|_| f64::NAN);
    let e = sampler()
        .sample(&mut zero_noise(), &bad, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                what: "mu",
                step: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = sampler()
        .sample(
            &mut zero_noise(),
            &mu(),
            Some(bad),
            &mut SeededNoise::new(0),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                what: "start state",
                step: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn non_finite_model_output_names_step_and_time() {
    let mut calls = 0;
    let mut net = FnModel::new(
        FitTarget::Noise,
        move |x: &ArrayD<f64>, _: &ArrayD<f64>, _| {
            calls += 1;
            Ok(if calls == 4 {
                x.mapv(|_| f64::INFINITY)
            } else {
                x * 0.0
            })
        },
    );
    let s = sampler();
    let e = s
        .sample(&mut net, &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    let t3 = s.timesteps().unwrap()[3];
    assert!(
        matches!(e, Error::NonFinite { what: "model output", step: 4, time } if time == t3),
        "{e}"
    );
    assert!(e.to_string().contains("step 4"));
}

#[test]
fn non_finite_state_names_step() {
    // A finite but huge noise prediction overflows once converted (x̂₀ = (x − σ ε̂)/α ...).
    let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, _: &ArrayD<f64>, _| {
        Ok(x.mapv(|_| 1e308))
    });
    let e = sampler()
        .sample(&mut net, &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { what: "state", .. }), "{e}");
}

#[test]
fn zero_steps() {
    assert!(matches!(
        MrSampler::new(IrSdeSchedule::da_clip(), 0),
        Err(Error::InvalidSetting {
            setting: "num_steps",
            ..
        })
    ));
    assert!(matches!(
        sampler().with_num_steps(0),
        Err(Error::InvalidSetting {
            setting: "num_steps",
            ..
        })
    ));
    assert!(BaselineSampler::new(IrSdeSchedule::da_clip(), Baseline::Posterior, 0).is_err());
}

#[test]
fn unsupported_order() {
    for solver in [
        Solver::ode(0),
        Solver::ode(4),
        Solver::sde(0),
        Solver::sde(3),
    ] {
        let e = sampler().with_solver(solver).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidSetting {
                    setting: "order",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn fewer_steps_than_order_in_reference_mode() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 2)
        .unwrap()
        .with_solver(Solver::ode(3))
        .unwrap()
        .with_mode(Mode::Reference)
        .unwrap();
    let e = s
        .sample(&mut zero_noise(), &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(e, Error::TooFewSteps { steps: 2, order: 3 }),
        "{e}"
    );
}

#[test]
fn custom_grids_must_decrease_strictly_inside_the_schedule() {
    for (grid, mode) in [
        (vec![100.0, 40.0, 60.0, 0.0], Mode::Exact),
        (vec![100.0, 40.0, 60.0, 0.0], Mode::Reference),
        (vec![100.0, 50.0, 50.0, 0.0], Mode::Exact),
        (vec![100.0, 50.0, 50.0, 0.0], Mode::Reference),
        (vec![120.0, 50.0, 20.0, 0.0], Mode::Exact),
        (vec![100.0, 50.0, 20.0, -1.0], Mode::Exact),
        // The reference would extrapolate α and σ linearly outside [0, T].
        (vec![120.0, 50.0, 20.0, 0.0], Mode::Reference),
        (vec![100.0, 50.0, 20.0, -1.0], Mode::Reference),
    ] {
        let s = sampler()
            .with_grid(TimeGrid::Custom(grid.clone()))
            .unwrap()
            .with_mode(mode)
            .unwrap();
        let e = s
            .sample(&mut zero_noise(), &mu(), None, &mut SeededNoise::new(0))
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidGrid { .. }),
            "{grid:?} {mode:?}: {e}"
        );
    }
    assert!(matches!(
        sampler().with_grid(TimeGrid::Custom(vec![f64::NAN, 0.0])),
        Err(Error::InvalidGrid { .. })
    ));
    assert!(matches!(
        sampler().with_grid(TimeGrid::Custom(vec![1.0])),
        Err(Error::InvalidGrid { .. })
    ));
}

#[test]
fn generated_grid_with_duplicates() {
    // ⌊100/201⌋ = 0: every leading time is 0.
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 200)
        .unwrap()
        .with_grid(TimeGrid::Leading { offset: 0.0 })
        .unwrap();
    let e = s
        .sample(&mut zero_noise(), &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidGrid { .. }), "{e}");
}

/// Reference mode runs what the reference runs: the leading grid with more steps than the
/// schedule has indices repeats time 0, a first-order step of zero length is the identity, and
/// a higher-order step over repeated times (where the reference divides by zero) is refused.
#[test]
fn reference_leading_grid_with_repeated_times() {
    let leading = |order: usize| {
        MrSampler::new(IrSdeSchedule::da_clip(), 200)
            .unwrap()
            .with_mode(Mode::Reference)
            .unwrap()
            .with_solver(Solver::ode(order))
            .unwrap()
            .with_grid(TimeGrid::Leading { offset: 0.0 })
            .unwrap()
    };
    let x = mu().mapv(|v| v + 0.1);
    let out = leading(1)
        .sample(
            &mut zero_noise(),
            &mu(),
            Some(x.clone()),
            &mut SeededNoise::new(0),
        )
        .unwrap();
    assert_eq!(out.stats.nfe, 200);
    assert_eq!(
        out.x_unclipped, x,
        "200 steps of zero length change nothing"
    );
    let e = leading(2)
        .sample(&mut zero_noise(), &mu(), Some(x), &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidGrid { .. }), "{e}");
}

/// Exact mode: a trailing grid whose reference formula runs out of times above 0 after
/// `lambda_min` clipping is an error (every exact grid has M + 1 strictly decreasing times);
/// reference mode runs the shorter grid as the reference does.
#[test]
fn exact_trailing_grid_clipped_by_lambda_min() {
    let trailing = |m: usize, mode: Mode| {
        MrSampler::new(IrSdeSchedule::da_clip(), m)
            .unwrap()
            .with_mode(mode)
            .unwrap()
            .with_grid(TimeGrid::Trailing)
            .unwrap()
            .with_lambda_min(Some(-2.0))
            .unwrap()
    };
    let mut shortened = 0;
    for m in [5, 10, 20, 40] {
        let reference = trailing(m, Mode::Reference).timesteps().unwrap();
        let exact = trailing(m, Mode::Exact).timesteps();
        // The reference formula keeps the times above 0; exact mode needs M of them, then 0.
        if reference.len() < m {
            shortened += 1;
            assert!(
                matches!(exact, Err(Error::InvalidGrid { .. })),
                "M = {m}: {exact:?}"
            );
        } else {
            assert_eq!(exact.unwrap().len(), m + 1);
        }
    }
    assert!(
        shortened > 0,
        "no step count ran out of times: the test checks nothing"
    );
}

#[test]
fn lambda_min_leaving_no_grid() {
    let s = sampler().with_lambda_min(Some(50.0)).unwrap();
    let e = s
        .sample(&mut zero_noise(), &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidSetting {
                setting: "lambda_min",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        sampler().with_lambda_min(Some(f64::NAN)),
        Err(Error::InvalidSetting {
            setting: "lambda_min",
            ..
        })
    ));
}

#[test]
fn invalid_schedule_parameters() {
    let cases: [(ThetaSchedule, usize, f64, f64, &str); 7] = [
        (ThetaSchedule::Cosine, 0, 0.005, 50.0, "T"),
        (ThetaSchedule::Cosine, 4_444_444_444, 0.005, 50.0, "T"),
        (ThetaSchedule::Cosine, 100, 0.0, 50.0, "eps"),
        (ThetaSchedule::Cosine, 100, 1.0, 50.0, "eps"),
        (ThetaSchedule::Cosine, 100, 0.005, 0.0, "max_sigma"),
        (ThetaSchedule::Cosine, 100, 0.005, -3.0, "max_sigma"),
        (ThetaSchedule::Linear, 100, 0.005, f64::NAN, "max_sigma"),
    ];
    for (th, t, eps, ms, param) in cases {
        match IrSdeSchedule::new(th, t, eps, ms) {
            Err(Error::InvalidSchedule { param: p, .. }) => assert_eq!(p, param),
            other => panic!("{param}: {other:?}"),
        }
    }
    assert!(matches!(
        "sigmoid".parse::<ThetaSchedule>(),
        Err(Error::InvalidSchedule {
            param: "theta_schedule",
            ..
        })
    ));
}

/// A user schedule that breaks the invariants is rejected when a sampler is built.
#[test]
fn invalid_user_schedule() {
    #[derive(Debug)]
    struct Broken;
    impl Schedule for Broken {
        fn sigma_inf(&self) -> f64 {
            0.0
        }
        fn t_max(&self) -> f64 {
            1.0
        }
        fn alpha(&self, t: f64) -> f64 {
            1.0 - 0.5 * t
        }
        fn sigma(&self, t: f64) -> f64 {
            t
        }
        fn theta(&self, _: f64) -> f64 {
            1.0
        }
        fn t_of_lambda(&self, _: f64) -> f64 {
            0.5
        }
    }
    let e = MrSampler::from_arc(Arc::new(Broken), 5).unwrap_err();
    assert!(matches!(e, Error::InvalidSchedule { .. }), "{e}");
    assert!(e.to_string().contains("sigma_inf"));
}

#[test]
fn invalid_thresholding() {
    for (ratio, floor, max) in [
        (1.2, 1.0, 1.5),
        (-0.1, 1.0, 1.5),
        (0.9, 0.0, 1.5),
        (0.9, 1.0, 0.5),
        (0.9, 1.0, f64::INFINITY),
    ] {
        assert!(
            matches!(
                Thresholding::bounded(ratio, floor, max),
                Err(Error::InvalidSetting { .. })
            ),
            "{ratio} {floor} {max}"
        );
    }
}

#[test]
fn invalid_grid_parameters() {
    for grid in [
        TimeGrid::KarrasN { rho: 0.0 },
        TimeGrid::KarrasT { rho: f64::NAN },
        TimeGrid::Leading {
            offset: f64::INFINITY,
        },
    ] {
        assert!(sampler().with_grid(grid.clone()).is_err(), "{grid:?}");
    }
    assert!(matches!(
        sampler().with_data_range(Some((1.0, 0.0))),
        Err(Error::InvalidSetting { .. })
    ));
}

#[test]
fn too_few_replayed_noise_draws() {
    let s = sampler().with_solver(Solver::sde(2)).unwrap();
    let e = s
        .sample(
            &mut zero_noise(),
            &mu(),
            Some(mu()),
            &mut ReplayNoise::new(vec![vec![0.0; 6]; 3]),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoiseExhausted {
                needed: 4,
                available: 3
            }
        ),
        "{e}"
    );
}

#[test]
fn model_errors_are_wrapped_with_the_step() {
    let mut net = FnModel::new(
        FitTarget::Noise,
        |_: &ArrayD<f64>, _: &ArrayD<f64>, t: f64| -> Result<ArrayD<f64>, ModelError> {
            Err(ModelError::msg(format!("cannot run at t = {t}")))
        },
    );
    let e = sampler()
        .sample(&mut net, &mu(), None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::Model { step: 1, .. }), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn reference_mode_needs_a_discrete_schedule() {
    #[derive(Debug)]
    struct Smooth;
    impl Schedule for Smooth {
        fn sigma_inf(&self) -> f64 {
            1.0
        }
        fn t_max(&self) -> f64 {
            1.0
        }
        fn alpha(&self, t: f64) -> f64 {
            (-t * 3.0).exp()
        }
        fn sigma(&self, t: f64) -> f64 {
            (1.0 - self.alpha(t).powi(2)).sqrt()
        }
        fn theta(&self, _: f64) -> f64 {
            3.0
        }
        fn t_of_lambda(&self, l: f64) -> f64 {
            (0.5 * (-2.0 * l).exp().ln_1p() / 3.0).clamp(0.0, 1.0)
        }
    }
    // Refused when the settings are checked (`check`, or planning), before any sampling.
    let e = MrSampler::from_arc(Arc::new(Smooth), 4)
        .unwrap()
        .with_mode(Mode::Reference)
        .and_then(MrSampler::check)
        .unwrap_err();
    assert!(matches!(e, Error::ScheduleMismatch { .. }), "{e}");
    let b = BaselineSampler::from_arc(Arc::new(Smooth), Baseline::Posterior, 4)
        .unwrap()
        .with_mode(Mode::Reference)
        .and_then(BaselineSampler::check);
    assert!(matches!(b, Err(Error::ScheduleMismatch { .. })));
}

#[test]
fn step_api_misuse() {
    let s = sampler();
    let run = s
        .start(FitTarget::Noise, &mu(), None, &mut SeededNoise::new(0))
        .unwrap();
    assert!(matches!(run.finish(), Err(Error::StepOrder { .. })));
    let mut run = s
        .start(FitTarget::Noise, &mu(), None, &mut SeededNoise::new(0))
        .unwrap();
    for _ in 0..5 {
        run.advance(&(mu() * 0.0), &mut SeededNoise::new(0))
            .unwrap();
    }
    assert!(matches!(
        run.advance(&mu(), &mut SeededNoise::new(0)),
        Err(Error::StepOrder { .. })
    ));
    assert!(run.data_prediction(&mu()).is_err());
}

/// A network that declares its rank gets μ checked against it before the first evaluation.
#[test]
fn rank_is_checked_at_the_door() {
    struct Image;
    impl ScoreModel<ArrayD<f64>> for Image {
        fn fit_target(&self) -> FitTarget {
            FitTarget::Noise
        }
        fn predict(
            &mut self,
            _: &ArrayD<f64>,
            _: &ArrayD<f64>,
            _: f64,
        ) -> Result<ArrayD<f64>, mrsampler::ModelError> {
            panic!("must not be called with a μ of the wrong rank")
        }
        fn input_rank(&self) -> Option<usize> {
            Some(4)
        }
    }
    let chw = ArrayD::<f64>::zeros(IxDyn(&[3, 4, 4]));
    let e = sampler()
        .sample(&mut Image, &chw, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(&e, Error::RankMismatch { expected: 4, found } if found == &[3, 4, 4]),
        "{e}"
    );
    assert!(e.to_string().contains("batch axis"), "{e}");
}

/// ODE passes given a start state draw nothing: `NoNoise` will do, and says so when a pass
/// does need noise.
#[test]
fn ode_with_a_start_state_needs_no_noise() {
    let x = mu().mapv(|v| v + 0.05);
    let out = sampler()
        .sample(&mut zero_noise(), &mu(), Some(x), &mut NoNoise)
        .unwrap();
    assert_eq!(out.stats.nfe, 5);
    let e = sampler()
        .sample(&mut zero_noise(), &mu(), None, &mut NoNoise)
        .unwrap_err();
    assert!(matches!(e, Error::NoiseExhausted { .. }), "{e}");
    let sde = sampler().with_solver(Solver::sde(2)).unwrap();
    let e = sde
        .sample(&mut zero_noise(), &mu(), Some(mu()), &mut NoNoise)
        .unwrap_err();
    assert!(matches!(e, Error::NoiseExhausted { .. }), "{e}");
}
