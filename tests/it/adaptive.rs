//! The adaptive-step ODE solver: against the exact probability-flow map of the Gaussian oracle
//! (closed form), its evaluation accounting, its limit step, and its errors.

use std::sync::Arc;

use crate::common::LinearLambda;
use mrsampler::oracle::{GaussianOracle, GmmOracle};
use mrsampler::schedule::{CumulativeFrom, IrSdeSchedule, Schedule};
use mrsampler::{
    AdaptiveSampler, EmbeddedPair, Error, FitTarget, FnModel, Parameterization, Sampler,
    SamplerTensor, SeededNoise, Stats,
};
use ndarray::{ArrayD, IxDyn};

const MU: f64 = 0.3;
const ZS: [f64; 4] = [-2.0, -0.5, 0.8, 1.7];

/// Max error against the exact PF-ODE map from t = 8 to 0, and the statistics.
fn run(pair: EmbeddedPair, param: Parameterization, rtol: f64) -> (f64, Stats) {
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let s = AdaptiveSampler::from_arc(sch.clone())
        .unwrap()
        .with_pair(pair)
        .unwrap()
        .with_parameterization(param)
        .unwrap()
        .with_tolerance(rtol, rtol * 1e-2)
        .unwrap()
        .with_max_nfe(100_000)
        .unwrap()
        .with_data_range(None)
        .unwrap();
    let mut o = GaussianOracle::new(vec![0.7], vec![0.15 * 0.15], sch)
        .unwrap()
        .with_fit_target(FitTarget::Noise);
    let (mean, var) = o.marginal(0, MU, 8.0);
    let start: Vec<f64> = ZS.iter().map(|z| mean + var.sqrt() * z).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[4, 1]), start.clone()).unwrap();
    let mu = ArrayD::from_elem(IxDyn(&[4, 1]), MU);
    let out = s
        .sample(&mut o, &mu, Some(x), &mut SeededNoise::new(0))
        .unwrap();
    let got = out.x.to_host_f64().unwrap();
    let err = start
        .iter()
        .zip(&got)
        .map(|(x, g)| (g - o.pf_ode_map(0, *x, MU, 8.0, 0.0)).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{pair:?} {param:?} rtol {rtol:e}: error {err:.3e}, {} NFE, {} accepted, {} rejected",
        out.stats.nfe, out.stats.steps, out.stats.rejected_steps
    );
    (err, out.stats)
}

/// Tightening the tolerance tightens the error against the closed-form flow and costs more
/// evaluations, for both pairs and both forms; the global error stays below the relative
/// tolerance.
#[test]
fn error_follows_the_tolerance() {
    for pair in [EmbeddedPair::Orders12, EmbeddedPair::Orders23] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let mut prev: Option<(f64, usize)> = None;
            for rtol in [1e-2, 1e-3, 1e-4] {
                let (err, stats) = run(pair, param, rtol);
                assert!(
                    err < rtol,
                    "{pair:?} {param:?} rtol {rtol}: error {err:e} ({} NFE)",
                    stats.nfe
                );
                if let Some((e0, n0)) = prev {
                    assert!(err < e0, "{pair:?} {param:?}: {err:e} !< {e0:e}");
                    assert!(stats.nfe > n0, "{pair:?} {param:?}: NFE {}", stats.nfe);
                }
                prev = Some((err, stats.nfe));
            }
        }
    }
}

/// The work per tolerance decade reflects the pair's order: the order-3 pair needs fewer
/// evaluations than the order-2 pair for the same tight tolerance.
#[test]
fn higher_pair_is_cheaper_at_tight_tolerance() {
    let (_, s12) = run(EmbeddedPair::Orders12, Parameterization::Data, 1e-4);
    let (_, s23) = run(EmbeddedPair::Orders23, Parameterization::Data, 1e-4);
    assert!(s23.nfe < s12.nfe, "23: {} vs 12: {}", s23.nfe, s12.nfe);
}

/// Evaluation accounting: a fresh attempt costs one evaluation per stage of the pair plus the
/// one at its start; a retry reuses the start; the schedule here has finite λ at t = 0 (no
/// limit step). Accepted times decrease from t_max to t_min.
#[test]
fn statistics_add_up() {
    for (pair, per) in [(EmbeddedPair::Orders12, 2), (EmbeddedPair::Orders23, 3)] {
        let (_, st) = run(pair, Parameterization::Data, 1e-5);
        assert_eq!(st.nfe, per * st.steps + (per - 1) * st.rejected_steps);
        assert_eq!(st.timesteps.len(), st.steps + 1);
        assert_eq!(st.orders, vec![pair.order(); st.steps]);
        assert!(st.timesteps.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(st.timesteps[0], 8.0);
        assert_eq!(*st.timesteps.last().unwrap(), 0.0);
    }
}

/// Point-mass data: every order integrates it exactly (the flow is
/// `x_t = α_t x₀ + (1 − α_t)μ + σ_t ẑ` with `ẑ` fixed by the start), so the error estimate is
/// 0, nothing is rejected and the steps grow. With `σ(0) > 0` (DA-CLIP's default convention)
/// the solve ends on that closed form at t = 0; with `σ(0) = 0` the last evaluation is the limit
/// step, which returns the data point.
#[test]
fn point_mass_and_limit_step() {
    for from in [CumulativeFrom::Zero, CumulativeFrom::One] {
        let sch: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip().with_cumulative_from(from));
        let x0 = [0.8, 0.2];
        let mut o = GmmOracle::new(vec![1.0], vec![x0.to_vec()], vec![0.0], sch.clone()).unwrap();
        let s = AdaptiveSampler::from_arc(sch.clone())
            .unwrap()
            .with_tolerance(1e-6, 1e-8)
            .unwrap()
            .with_data_range(None)
            .unwrap();
        let mu = [0.4, 0.6];
        let start = [0.9, -0.3];
        let out = s
            .sample(
                &mut o,
                &ArrayD::from_shape_vec(IxDyn(&[1, 2]), mu.to_vec()).unwrap(),
                Some(ArrayD::from_shape_vec(IxDyn(&[1, 2]), start.to_vec()).unwrap()),
                &mut SeededNoise::new(3),
            )
            .unwrap();
        let x = out.x.to_host_f64().unwrap();
        let (tt, t0) = (sch.t_max(), sch.t_min());
        for i in 0..2 {
            let z =
                (start[i] - sch.alpha(tt) * x0[i] - (1.0 - sch.alpha(tt)) * mu[i]) / sch.sigma(tt);
            let want = sch.alpha(t0) * x0[i] + (1.0 - sch.alpha(t0)) * mu[i] + sch.sigma(t0) * z;
            assert!((x[i] - want).abs() < 1e-12, "{from:?}: {x:?}");
        }
        assert_eq!(out.stats.rejected_steps, 0);
        assert_eq!(*out.stats.timesteps.last().unwrap(), 0.0);
        let limit = from == CumulativeFrom::One;
        assert_eq!(*out.stats.orders.last().unwrap(), if limit { 1 } else { 3 });
        // The step grows 5× per accepted step from 0.05: far fewer than the 100 steps of T.
        assert!(out.stats.nfe < 25, "{} NFE", out.stats.nfe);
    }
}

#[test]
fn budget_and_settings_are_checked() {
    let s = AdaptiveSampler::new(IrSdeSchedule::da_clip()).unwrap();
    assert!(s.clone().with_tolerance(-1.0, 0.1).is_err());
    assert!(s.clone().with_tolerance(0.1, 0.0).is_err());
    assert!(s.clone().with_tolerance(f64::NAN, 0.1).is_err());
    assert!(s.clone().with_initial_step(0.0).is_err());
    assert!(s.clone().with_safety(1.5).is_err());
    assert!(s.clone().with_max_nfe(1).is_err());
    assert!(s.clone().with_data_range(Some((1.0, 0.0))).is_err());

    // A network with sharp time dependence and a tiny tolerance exhausts a small budget.
    let tight = s
        .with_tolerance(1e-9, 1e-12)
        .unwrap()
        .with_max_nfe(12)
        .unwrap();
    let mut net = FnModel::new(
        FitTarget::Noise,
        |x: &ArrayD<f64>, mu: &ArrayD<f64>, t: f64| Ok((x - mu) * (0.3 * t).sin()),
    );
    let mu = ArrayD::from_elem(IxDyn(&[1, 4]), 0.5);
    let e = tight
        .sample(&mut net, &mu, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(e, Error::BudgetExceeded { max_nfe: 12, .. }),
        "{e}"
    );

    // A tolerance below rounding cannot be met: a typed error, not NaN or a hang (f32 creeps
    // on with steps whose difference rounds to 0 until the budget ends; f64 with a zero rtol and
    // an atol of 1e-300 shrinks its step to nothing).
    let mut net32 = FnModel::new(
        FitTarget::Noise,
        |x: &ArrayD<f32>, mu: &ArrayD<f32>, _t: f64| Ok((x - mu) * 0.3),
    );
    let mu32 = ArrayD::<f32>::from_elem(IxDyn(&[1, 16]), 0.5);
    let e = AdaptiveSampler::new(IrSdeSchedule::da_clip())
        .unwrap()
        .with_tolerance(1e-13, 1e-15)
        .unwrap()
        .with_max_nfe(5000)
        .unwrap()
        .sample(&mut net32, &mu32, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::StepSizeUnderflow { .. } | Error::BudgetExceeded { .. }
        ),
        "{e}"
    );
    let e = AdaptiveSampler::new(IrSdeSchedule::da_clip())
        .unwrap()
        .with_tolerance(0.0, 1e-300)
        .unwrap()
        .with_max_nfe(5000)
        .unwrap()
        .sample(&mut net, &mu, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::StepSizeUnderflow { .. }), "{e}");

    // A network that returns NaN is reported, not propagated.
    let mut bad = FnModel::new(
        FitTarget::Noise,
        |x: &ArrayD<f64>, _: &ArrayD<f64>, _t: f64| Ok(x.mapv(|_| f64::NAN)),
    );
    let e = AdaptiveSampler::new(IrSdeSchedule::da_clip())
        .unwrap()
        .sample(&mut bad, &mu, None, &mut SeededNoise::new(0))
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
}

/// The adaptive sampler is a `Sampler` over `Run`: driving its step API by hand gives the same
/// result as `sample`, an observer sees every evaluation (rejected attempts included), and the
/// plan grows as steps are accepted.
#[test]
fn step_api_and_observers() {
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let s = AdaptiveSampler::from_arc(sch.clone())
        .unwrap()
        .with_tolerance(1e-3, 1e-5)
        .unwrap();
    let oracle = || {
        GaussianOracle::new(vec![0.7], vec![0.15 * 0.15], sch.clone())
            .unwrap()
            .with_fit_target(FitTarget::Noise)
    };
    let mu = ArrayD::from_elem(IxDyn(&[4, 1]), MU);
    let start = ArrayD::from_shape_vec(IxDyn(&[4, 1]), vec![0.1, 0.25, 0.4, 0.6]).unwrap();
    let whole = s
        .sample(
            &mut oracle(),
            &mu,
            Some(start.clone()),
            &mut mrsampler::NoNoise,
        )
        .unwrap();
    let plan = s.plan(FitTarget::Noise).unwrap();
    assert!(plan.is_adaptive());
    assert_eq!(
        plan.num_evaluations(),
        None,
        "an adaptive plan's evaluations are decided while it runs"
    );
    assert_eq!(plan.timesteps(), None);
    assert_eq!(plan.start_time(), sch.t_max());

    let mut o = oracle();
    let mut run = s
        .start(
            FitTarget::Noise,
            &mu,
            Some(start.clone()),
            &mut mrsampler::NoNoise,
        )
        .unwrap();
    let mut calls = 0;
    while let Some(p) = run.pending() {
        let net = mrsampler::ScoreModel::predict(&mut o, run.eval_state(), run.mu(), p.t).unwrap();
        run.advance(&net, &mut mrsampler::NoNoise).unwrap();
        calls += 1;
    }
    assert!(run.num_evaluations() > 3);
    let by_hand = run.finish().unwrap();
    assert_eq!(by_hand.x, whole.x);
    assert_eq!(calls, whole.stats.nfe);
    assert_eq!(by_hand.stats, whole.stats);

    let mut seen = Vec::new();
    let observed = s
        .sample_observed(
            &mut oracle(),
            &mu,
            Some(start),
            &mut mrsampler::NoNoise,
            &mut |v: &mrsampler::StepView<'_, ArrayD<f64>>| seen.push(v.step),
        )
        .unwrap();
    assert_eq!(observed.x, whole.x);
    assert_eq!(seen, (1..=whole.stats.nfe).collect::<Vec<_>>());
    assert!(whole.stats.rejected_steps > 0 || whole.stats.steps > 1);
}
