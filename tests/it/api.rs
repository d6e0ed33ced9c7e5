//! The public API: step-level driving, observers, errors on bad input, f32, determinism,
//! baselines.

use mrsampler::Mode;
use mrsampler::Solver;
use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::{CumulativeFrom, IrSdeSchedule, TimeGrid};
use mrsampler::{
    Baseline, BaselineSampler, Error, FitTarget, FnModel, ModelError, MrSampler, Parameterization,
    ReplayNoise, Sampler, SeededNoise, StepView, Thresholding,
};
use ndarray::{ArrayD, IxDyn};

fn mu(shape: &[usize]) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(shape),
        (0..n).map(|i| 0.2 + 0.1 * (i % 5) as f64).collect(),
    )
    .unwrap()
}

fn oracle(s: &MrSampler, d: usize) -> GaussianOracle {
    GaussianOracle::new(vec![0.6; d], vec![0.02; d], s.model_schedule().unwrap()).unwrap()
}

#[test]
fn step_api_equals_sample() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 8)
        .unwrap()
        .with_solver(Solver::sde(2))
        .unwrap();
    let m = mu(&[2, 3]);
    let whole = s
        .sample(&mut oracle(&s, 3), &m, None, &mut SeededNoise::new(5))
        .unwrap();
    let mut noise = SeededNoise::new(5);
    let mut run = s.start(FitTarget::Data, &m, None, &mut noise).unwrap();
    let mut o = oracle(&s, 3);
    while let Some(p) = run.pending() {
        let out = mrsampler::ScoreModel::predict(&mut o, run.eval_state(), run.mu(), p.t).unwrap();
        run.advance(&out, &mut noise).unwrap();
    }
    assert!(run.pending().is_none());
    let stepped = run.finish().unwrap();
    assert_eq!(whole.x, stepped.x);
    assert_eq!(whole.stats, stepped.stats);
}

#[test]
fn observer_sees_every_step() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 6)
        .unwrap()
        .with_parameterization(Parameterization::Noise)
        .unwrap();
    let tau = s.timesteps().unwrap();
    let mut seen = Vec::new();
    let mut obs = |v: &StepView<'_, ArrayD<f64>>| {
        seen.push((
            v.step,
            v.t,
            v.t_next,
            v.order,
            v.x0_hat.iter().all(|x| (0.0..1.5).contains(x)),
        ));
    };
    let m = mu(&[1, 4]);
    let out = s
        .sample_observed(
            &mut oracle(&s, 4),
            &m,
            None,
            &mut SeededNoise::new(2),
            &mut obs,
        )
        .unwrap();
    assert_eq!(seen.len(), 6);
    for (k, (step, t, t_next, order, plausible)) in seen.iter().enumerate() {
        assert_eq!((*step, *t, *t_next), (k + 1, tau[k], tau[k + 1]));
        assert_eq!(*order, out.stats.orders[k]);
        assert!(plausible, "x̂₀ of the oracle stays near the data");
    }
}

#[test]
fn same_seed_same_output_and_f32_tracks_f64() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 10)
        .unwrap()
        .with_solver(Solver::sde(2))
        .unwrap();
    let m = mu(&[2, 2, 3]);
    let a = s
        .sample(&mut oracle(&s, 6), &m, None, &mut SeededNoise::new(1))
        .unwrap();
    let b = s
        .sample(&mut oracle(&s, 6), &m, None, &mut SeededNoise::new(1))
        .unwrap();
    let c = s
        .sample(&mut oracle(&s, 6), &m, None, &mut SeededNoise::new(2))
        .unwrap();
    assert_eq!(a.x, b.x);
    assert_ne!(a.x, c.x);
    let m32 = m.mapv(|v| v as f32);
    let f = s
        .sample(&mut oracle(&s, 6), &m32, None, &mut SeededNoise::new(1))
        .unwrap();
    for (x, y) in a.x.iter().zip(f.x.iter()) {
        assert!((x - *y as f64).abs() < 1e-5, "{x} vs {y}");
    }
}

fn nan_after(
    k: usize,
) -> impl FnMut(&ArrayD<f64>, &ArrayD<f64>, f64) -> Result<ArrayD<f64>, ModelError> {
    let mut calls = 0;
    move |x, _, _| {
        calls += 1;
        Ok(if calls > k {
            x.mapv(|_| f64::NAN)
        } else {
            x * 0.1
        })
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 5).unwrap();
    let m = mu(&[1, 3]);
    // Non-finite model output names the step.
    let mut net = FnModel::new(FitTarget::Noise, nan_after(2));
    match s.sample(&mut net, &m, None, &mut SeededNoise::new(0)) {
        Err(Error::NonFinite {
            what: "model output",
            step: 3,
            time,
        }) => {
            assert!((time - s.timesteps().unwrap()[2]).abs() < 1e-12)
        }
        other => panic!("{other:?}"),
    }
    // Shape mismatch of the model output.
    let mut net = FnModel::new(FitTarget::Noise, |_: &ArrayD<f64>, _: &ArrayD<f64>, _| {
        Ok(ArrayD::zeros(IxDyn(&[2, 3])))
    });
    assert!(matches!(
        s.sample(&mut net, &m, None, &mut SeededNoise::new(0)),
        Err(Error::ShapeMismatch {
            what: "model output",
            ..
        })
    ));
    // Start state shape and NaN μ.
    let mut ok = FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, _: &ArrayD<f64>, _| {
        Ok(x * 0.0)
    });
    assert!(matches!(
        s.sample(
            &mut ok,
            &m,
            Some(ArrayD::zeros(IxDyn(&[3]))),
            &mut SeededNoise::new(0)
        ),
        Err(Error::ShapeMismatch {
            what: "start state",
            ..
        })
    ));
    let bad_mu = m.mapv(|_| f64::INFINITY);
    assert!(matches!(
        s.sample(&mut ok, &bad_mu, None, &mut SeededNoise::new(0)),
        Err(Error::NonFinite { what: "mu", .. })
    ));
    // The model's own error is passed through with the step.
    let mut failing = FnModel::new(
        FitTarget::Noise,
        |_: &ArrayD<f64>, _: &ArrayD<f64>, _| -> Result<ArrayD<f64>, ModelError> {
            Err(ModelError::msg("out of memory"))
        },
    );
    let e = s
        .sample(&mut failing, &m, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::Model { step: 1, .. }));
    assert!(e.to_string().contains("out of memory"));
    // Too few replayed draws.
    let sde = s.clone().with_solver(Solver::sde(1)).unwrap();
    let e = sde
        .sample(
            &mut ok,
            &m,
            Some(m.clone()),
            &mut ReplayNoise::new(vec![vec![0.0; 3]]),
        )
        .unwrap_err();
    assert!(matches!(
        e,
        Error::NoiseExhausted {
            needed: 2,
            available: 1
        }
    ));
    // Step API misuse.
    let mut run = s
        .start(FitTarget::Noise, &m, None, &mut SeededNoise::new(0))
        .unwrap();
    let z = m.clone();
    run.advance(&z, &mut SeededNoise::new(0)).unwrap();
    let run2 = s
        .start(FitTarget::Noise, &m, None, &mut SeededNoise::new(0))
        .unwrap();
    assert!(matches!(run2.finish(), Err(Error::StepOrder { .. })));
}

#[test]
fn exact_mode_allows_fewer_steps_than_order_reference_does_not() {
    let m = mu(&[1, 2]);
    for steps in 1..=2 {
        let s = MrSampler::new(IrSdeSchedule::da_clip(), steps)
            .unwrap()
            .with_solver(Solver::ode(3))
            .unwrap();
        let out = s
            .sample(&mut oracle(&s, 2), &m, None, &mut SeededNoise::new(0))
            .unwrap();
        assert_eq!(out.stats.nfe, steps);
        assert!(out.stats.orders.iter().all(|&o| o == 1));
        let r = s.with_mode(Mode::Reference).unwrap();
        assert!(matches!(
            r.sample(&mut oracle(&r, 2), &m, None, &mut SeededNoise::new(0)),
            Err(Error::TooFewSteps { .. })
        ));
    }
}

/// With `CumulativeFrom::One` the last step into σ = 0 is the limit step `x = x̂₀`.
#[test]
fn limit_step_returns_the_data_prediction() {
    let sch = IrSdeSchedule::da_clip().with_cumulative_from(CumulativeFrom::One);
    for param in [Parameterization::Data, Parameterization::Noise] {
        let s = MrSampler::new(sch.clone(), 10)
            .unwrap()
            .with_parameterization(param)
            .unwrap()
            .with_grid(TimeGrid::UniformLambda)
            .unwrap();
        let m = mu(&[1, 3]);
        let mut last_x0 = None;
        let mut obs = |v: &StepView<'_, ArrayD<f64>>| last_x0 = Some(v.x0_hat.clone());
        let out = s
            .sample_observed(
                &mut oracle(&s, 3),
                &m,
                None,
                &mut SeededNoise::new(4),
                &mut obs,
            )
            .unwrap();
        assert_eq!(*out.stats.timesteps.last().unwrap(), 0.0);
        let x0 = last_x0.unwrap();
        for (a, b) in out.x_unclipped.iter().zip(x0.iter()) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}

#[test]
fn thresholding_bounds_data_predictions() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 5)
        .unwrap()
        .with_thresholding(Some(Thresholding::new(0.9, 1.5).unwrap()))
        .unwrap()
        .with_data_range(None)
        .unwrap();
    let mut wild = FnModel::new(FitTarget::Data, |x: &ArrayD<f64>, _: &ArrayD<f64>, _| {
        Ok(x.mapv(|_| 40.0))
    });
    let mut max_out: f64 = 0.0;
    let mut obs = |v: &StepView<'_, ArrayD<f64>>| {
        max_out = v.model_output.iter().fold(max_out, |a, b| a.max(b.abs()));
    };
    s.sample_observed(
        &mut wild,
        &mu(&[1, 8]),
        None,
        &mut SeededNoise::new(0),
        &mut obs,
    )
    .unwrap();
    assert!(max_out <= 1.0 + 1e-15, "{max_out}");
}

/// Strided baselines converge to the same law as the MR Sampler on the Gaussian oracle; the
/// reference posterior sampler with K = 10 barely leaves the prior (`docs/math.md` §6.1, §6.2).
#[test]
fn baselines_strided_vs_reference() {
    let sch = IrSdeSchedule::da_clip();
    let n = 4000;
    let m = ArrayD::from_elem(IxDyn(&[n, 1]), 0.3);
    let stats = |x: &ArrayD<f64>| {
        let mean = x.mean().unwrap();
        (
            mean,
            (x.mapv(|v| (v - mean).powi(2)).mean().unwrap()).sqrt(),
        )
    };
    let mut o =
        GaussianOracle::new(vec![0.7], vec![0.01], std::sync::Arc::new(sch.clone())).unwrap();
    for kind in [Baseline::Posterior, Baseline::EulerMaruyama] {
        let b = BaselineSampler::new(sch.clone(), kind, 50).unwrap();
        let out = b
            .sample(&mut o, &m, None, &mut SeededNoise::new(8))
            .unwrap();
        let (mean, std) = stats(&out.x);
        assert!(
            (mean - 0.7).abs() < 0.02 && (std - 0.1).abs() < 0.02,
            "{kind:?}: {mean} {std}"
        );
    }
    for stochastic in [false, true] {
        let h = BaselineSampler::new(sch.clone(), Baseline::Heun { stochastic }, 40).unwrap();
        let out = h
            .sample(&mut o, &m, None, &mut SeededNoise::new(8))
            .unwrap();
        let (mean, std) = stats(&out.x);
        assert!(
            // The stochastic corrector reuses the predictor's Brownian increment; with a
            // fresh draw (the reference's form) the std was 0.115 here.
            (mean - 0.7).abs() < 0.02 && (std - 0.1).abs() < 0.01,
            "Heun {stochastic}: {mean} {std}"
        );
    }
    // The reference's unit steps at K < T are refused unless asked for.
    let r = BaselineSampler::new(sch, Baseline::Posterior, 10).unwrap();
    let e = r
        .clone()
        .with_mode(Mode::Reference)
        .and_then(BaselineSampler::check)
        .unwrap_err();
    assert!(e.to_string().contains("exact mode"), "{e}");
    let r = r.with_reference_unit_steps(true).unwrap();
    let out = r
        .sample(&mut o, &m, None, &mut SeededNoise::new(8))
        .unwrap();
    let (_, std) = stats(&out.x);
    assert!(std > 0.15, "reference posterior@10 stays noisy: std {std}");
}

#[test]
fn velocity_and_score_models_agree_with_data_model() {
    let s = MrSampler::new(IrSdeSchedule::da_clip(), 10)
        .unwrap()
        .with_data_range(None)
        .unwrap();
    let view = s.model_schedule().unwrap();
    let si = view.sigma_inf();
    let m = mu(&[1, 3]);
    let base = s
        .sample(&mut oracle(&s, 3), &m, None, &mut SeededNoise::new(3))
        .unwrap();
    for fit in [FitTarget::Velocity, FitTarget::Score, FitTarget::Noise] {
        let mut o = oracle(&s, 3);
        let v2 = view.clone();
        let mut net = FnModel::new(fit, move |x: &ArrayD<f64>, mu: &ArrayD<f64>, t: f64| {
            let x0 = mrsampler::ScoreModel::predict(&mut o, x, mu, t)?;
            let (a, sg) = (v2.alpha(t), v2.sigma(t));
            let eps = (x - mu - (&x0 - mu) * a) / sg;
            Ok(match fit {
                FitTarget::Velocity => &eps * (a * si) - (&x0 - mu) * (sg / si),
                FitTarget::Score => -&eps / sg,
                _ => eps,
            })
        });
        let out = s
            .sample(&mut net, &m, None, &mut SeededNoise::new(3))
            .unwrap();
        for (a, b) in base.x.iter().zip(out.x.iter()) {
            assert!((a - b).abs() < 1e-10, "{fit:?}: {a} vs {b}");
        }
    }
}

/// `prior_state` builds the start state a sampler would draw from `z`: passing it gives the
/// same pass as replaying `z` as the prior draw, in both modes (σ(τ₀) in exact mode, σ∞ in
/// reference mode).
#[test]
fn prior_state_matches_the_sampler_s_own_draw() {
    use mrsampler::{Mode, ReplayNoise};
    let mu = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| 0.1 * (i[0] + i[1]) as f64);
    let z: Vec<f64> = (0..6).map(|k| -1.0 + 0.37 * k as f64).collect();
    let zt = ArrayD::from_shape_vec(IxDyn(&[2, 3]), z.clone()).unwrap();
    let net = || {
        FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, m: &ArrayD<f64>, _| {
            Ok((x - m) * 3.0)
        })
    };
    for mode in [Mode::Exact, Mode::Reference] {
        let s = MrSampler::new(IrSdeSchedule::da_clip(), 6)
            .unwrap()
            .with_mode(mode)
            .unwrap();
        let x_t = s.prior_state(&mu, &zt).unwrap();
        let given = s
            .sample(&mut net(), &mu, Some(x_t), &mut mrsampler::NoNoise)
            .unwrap();
        let drawn = s
            .sample(
                &mut net(),
                &mu,
                None,
                &mut ReplayNoise::new(vec![z.clone()]),
            )
            .unwrap();
        assert_eq!(given.x_unclipped, drawn.x_unclipped, "{mode:?}");
    }
}

/// The setters check each setting on its own and the combination is checked when planning, so
/// a valid configuration is reachable in any order: here through a state (the corrector with
/// the noise form) that no order could pass through before, giving the same plan.
#[test]
fn setter_order_does_not_matter() {
    use mrsampler::{FitTarget, OdeMultistep, Parameterization};
    let corrector = OdeMultistep {
        corrector: true,
        ..OdeMultistep::new(2)
    };
    let direct = MrSampler::new(IrSdeSchedule::da_clip(), 8)
        .unwrap()
        .with_solver(corrector)
        .unwrap();
    let detour = MrSampler::new(IrSdeSchedule::da_clip(), 8)
        .unwrap()
        .with_parameterization(Parameterization::Noise)
        .unwrap()
        .with_solver(corrector)
        .unwrap()
        .with_parameterization(Parameterization::Data)
        .unwrap();
    assert_eq!(
        direct.plan(FitTarget::Noise).unwrap(),
        detour.plan(FitTarget::Noise).unwrap()
    );
    // The invalid state in between is refused where it is planned or checked.
    let invalid = detour
        .with_parameterization(Parameterization::Noise)
        .unwrap();
    assert!(matches!(
        invalid.plan(FitTarget::Noise),
        Err(mrsampler::Error::Conflict { .. })
    ));
    assert!(invalid.check().is_err());
}
