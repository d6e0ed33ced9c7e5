//! Property tests (deterministic runner): schedules, point-mass exactness on every grid, the
//! reference third-order defect, SDE weak convergence.

use std::sync::Arc;

use crate::common::{LinearLambda, config, slope};
use mrsampler::oracle::{GaussianOracle, Start, gaussian_output_law_from};
use mrsampler::schedule::{CumulativeFrom, IrSdeSchedule, Schedule, ThetaSchedule, TimeGrid};
use mrsampler::{
    FitTarget, FnModel, Mode, MrSampler, NoNoise, OdeMultistep, OrderRule, Parameterization,
    Sampler, SamplerTensor, SeededNoise, Solver, ThirdOrder,
};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

fn theta_schedule() -> impl Strategy<Value = ThetaSchedule> {
    prop_oneof![
        Just(ThetaSchedule::Cosine),
        Just(ThetaSchedule::Linear),
        Just(ThetaSchedule::Constant)
    ]
}

fn any_schedule() -> impl Strategy<Value = IrSdeSchedule> {
    (
        theta_schedule(),
        1usize..1500,
        1e-4f64..0.5,
        prop_oneof![0.01f64..0.99, 1.0f64..255.0],
        any::<bool>(),
    )
        .prop_map(|(th, t, eps, ms, one)| {
            let c = if one {
                CumulativeFrom::One
            } else {
                CumulativeFrom::Zero
            };
            IrSdeSchedule::new(th, t, eps, ms)
                .unwrap()
                .with_cumulative_from(c)
        })
}

/// λ strictly decreasing, α² + (σ/σ∞)² = 1, and t(λ(t)) = t, at random real times.
#[test]
fn schedule_monotone_and_invertible() {
    let mut runner = TestRunner::new(config(256));
    runner
        .run(
            &(
                any_schedule(),
                proptest::collection::vec(0.0f64..1.0, 2..20),
            ),
            |(s, us)| {
                let tmax = s.t_max();
                let mut ts: Vec<f64> = us.iter().map(|u| u * tmax).collect();
                ts.sort_by(f64::total_cmp);
                ts.dedup_by(|a, b| (*a - *b).abs() < 1e-9 * tmax);
                for w in ts.windows(2) {
                    prop_assert!(s.lambda(w[1]) < s.lambda(w[0]), "λ not decreasing at {w:?}");
                }
                for &t in &ts {
                    let (a, sg) = (s.alpha(t), s.sigma(t));
                    prop_assert!((a * a + (sg / s.sigma_inf()).powi(2) - 1.0).abs() < 1e-12);
                    let l = s.lambda(t);
                    if l.is_finite() && sg > 1e-150 {
                        // dt/dλ is bounded by 1/min(θ)·…; test in λ, which is what the grid inverts.
                        let back = s.t_of_lambda(l);
                        prop_assert!(
                            (s.lambda(back) - l).abs() <= 1e-9 * (1.0 + l.abs()),
                            "t={t} λ={l} back={back}"
                        );
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Exact mode: a point mass is reproduced to ≤ 1e-13 (relative to max(1, |x|)) on every named
/// grid, every ODE order, data and noise form, any step count (`docs/math.md` §9.3).
#[test]
fn point_mass_exact_on_every_grid() {
    let grids = [
        TimeGrid::Linspace,
        TimeGrid::Leading { offset: 0.0 },
        TimeGrid::Trailing,
        TimeGrid::KarrasN { rho: 7.0 },
        TimeGrid::KarrasT { rho: 7.0 },
        TimeGrid::UniformLambda,
    ];
    let strategy = (
        0usize..grids.len(),
        1usize..=3,
        any::<bool>(),
        1usize..40,
        -0.5f64..1.5,
        -0.5f64..1.5,
        proptest::collection::vec(-3.0f64..3.0, 3),
    );
    let mut runner = TestRunner::new(config(300));
    runner
        .run(&strategy, |(g, order, noise_form, m, x0, mu, z)| {
            let param = if noise_form {
                Parameterization::Noise
            } else {
                Parameterization::Data
            };
            let s = MrSampler::new(IrSdeSchedule::da_clip(), m)
                .unwrap()
                .with_grid(grids[g].clone())
                .unwrap()
                .with_solver(Solver::ode(order))
                .unwrap()
                .with_parameterization(param)
                .unwrap()
                .with_data_range(None)
                .unwrap();
            let tau = match s.timesteps() {
                Ok(t) => t,
                Err(_) => return Ok(()), // leading with M ≥ T/2 has duplicate times: rejected
            };
            let view = s.model_schedule().unwrap();
            let at = |t: f64, zi: f64| {
                view.alpha(t) * x0 + (1.0 - view.alpha(t)) * mu + view.sigma(t) * zi
            };
            let start: Vec<f64> = z.iter().map(|&zi| at(tau[0], zi)).collect();
            let want: Vec<f64> = z.iter().map(|&zi| at(tau[m], zi)).collect();
            let mut model = FnModel::new(
                FitTarget::Data,
                move |x: &ArrayD<f64>, _: &ArrayD<f64>, _| Ok(x.mapv(|_| x0)),
            );
            let arr = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&[1, 3]), v).unwrap();
            let out = s
                .sample(
                    &mut model,
                    &arr(vec![mu; 3]),
                    Some(arr(start)),
                    &mut SeededNoise::new(0),
                )
                .unwrap();
            // The noise form multiplies the state by α(τ_M)/α(τ_0) (up to 200 here) and cancels
            // it against the noise term; its rounding error scales with that amplification.
            let amplification = if noise_form {
                view.alpha(tau[m]) / view.alpha(tau[0])
            } else {
                1.0
            };
            for (g, w) in out.x.to_host_f64().unwrap().iter().zip(&want) {
                let tol = 1e-13 * w.abs().max(1.0) * amplification.max(1.0);
                prop_assert!((g - w).abs() <= tol, "{g} vs {w}");
            }
            Ok(())
        })
        .unwrap();
}

/// The reference's third-order coefficient (D2 without the factor 2) is only second order;
/// the exact-mode coefficient is third order (`docs/math.md` §4.2). Measured through the
/// public API on the smooth schedule from an exact start, on a grid uniform in λ.
#[test]
fn reference_third_order_is_second_order() {
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let mut o = GaussianOracle::new(vec![0.7], vec![0.15 * 0.15], sch.clone()).unwrap();
    let (mu, z) = (0.3, 1.3);
    let mut run = |m: usize, third: ThirdOrder| -> f64 {
        let times: Vec<f64> = (0..=m)
            .map(|k| sch.t_of_lambda(-3.0 + 8.0 * k as f64 / m as f64))
            .collect();
        let (t0, tm) = (times[0], times[m]);
        let (mean, var) = o.marginal(0, mu, t0);
        let x_start = mean + var.sqrt() * z;
        let s = MrSampler::from_arc(sch.clone(), m)
            .unwrap()
            .with_solver(OdeMultistep {
                third_order: Some(third),
                ..OdeMultistep::new(3)
            })
            .unwrap()
            .with_grid(TimeGrid::Custom(times))
            .unwrap();
        let mu_t = ArrayD::from_elem(IxDyn(&[1, 1]), mu);
        let x_t = ArrayD::from_elem(IxDyn(&[1, 1]), x_start);
        let out = s.sample(&mut o, &mu_t, Some(x_t), &mut NoNoise).unwrap();
        (out.x[[0, 0]] - o.pf_ode_map(0, x_start, mu, t0, tm)).abs()
    };
    let ms = [20usize, 40, 80, 160];
    let reference: Vec<f64> = ms.iter().map(|&m| run(m, ThirdOrder::HalfD2)).collect();
    let exact: Vec<f64> = ms.iter().map(|&m| run(m, ThirdOrder::Taylor)).collect();
    let (sr, se) = (slope(&ms, &reference), slope(&ms, &exact));
    assert!(
        (1.7..2.4).contains(&sr),
        "reference third order: slope {sr} ({reference:?})"
    );
    assert!(se >= 2.8, "exact third order: slope {se} ({exact:?})");
}

/// SDE-1 and SDE-2 (data form) converge weakly: started from the exact marginal, the errors of
/// the output mean and variance against the exact marginal at the last grid time (λ = 5)
/// decrease as the step count doubles.
#[test]
fn sde_weak_convergence_of_mean_and_variance() {
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let o =
        GaussianOracle::new(vec![0.7, 0.25], vec![0.15 * 0.15, 0.05 * 0.05], sch.clone()).unwrap();
    for order in [1, 2] {
        let errs: Vec<(f64, f64)> = [10usize, 20, 40, 80, 160]
            .iter()
            .map(|&m| {
                let s = MrSampler::from_arc(sch.clone(), m)
                    .unwrap()
                    .with_solver(Solver::sde(order))
                    .unwrap()
                    .with_grid(TimeGrid::UniformLambda)
                    .unwrap();
                let mu = [0.3, 0.6];
                let law = gaussian_output_law_from(&s, &o, &mu, Start::ExactMarginal).unwrap();
                let want: Vec<(f64, f64)> = (0..2).map(|i| o.marginal(i, mu[i], 0.0)).collect();
                let em = (0..2)
                    .map(|i| (law.mean[i] - want[i].0).abs())
                    .fold(0.0, f64::max);
                let ev = (0..2)
                    .map(|i| (law.var[i] - want[i].1).abs())
                    .fold(0.0, f64::max);
                (em, ev)
            })
            .collect();
        // The data-form SDE mean is exact for Gaussian data (each step's mean is the exact
        // conditional mean), so its error is rounding; the variance error must shrink.
        for w in errs.windows(2) {
            assert!(
                w[1].0 < w[0].0 || w[1].0 < 1e-14,
                "SDE-{order} mean: {errs:?}"
            );
            assert!(w[1].1 < w[0].1, "SDE-{order} variance: {errs:?}");
        }
        // Weak order ≥ 1 on the variance: halving the step at least about halves the error.
        let ratio = errs[3].1 / errs[4].1;
        assert!(
            ratio > 1.8,
            "SDE-{order}: variance error ratio {ratio} ({errs:?})"
        );
    }
}

/// Reference and exact modes agree on integer grids up to the documented differences: on
/// linspace with M ≥ 15 and order ≤ 2 they take the same steps under the specification's
/// order rule (`docs/math.md` §7).
#[test]
fn modes_agree_where_they_should() {
    let m = 20;
    let s = MrSampler::new(IrSdeSchedule::da_clip(), m)
        .unwrap()
        .with_data_range(None)
        .unwrap();
    let r = s.clone().with_mode(Mode::Reference).unwrap();
    let s = s
        .with_solver(Solver::Ode(OdeMultistep {
            order_rule: Some(OrderRule::LowerOrderFinal),
            ..OdeMultistep::new(2)
        }))
        .unwrap();
    let x = ArrayD::<f64>::from_shape_vec(IxDyn(&[1, 2]), vec![0.4, 0.1]).unwrap();
    let mu = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0.3, 0.5]).unwrap();
    let mut oe = GaussianOracle::new(
        vec![0.6, 0.2],
        vec![0.02, 0.05],
        s.model_schedule().unwrap(),
    )
    .unwrap();
    let mut or = GaussianOracle::new(
        vec![0.6, 0.2],
        vec![0.02, 0.05],
        r.model_schedule().unwrap(),
    )
    .unwrap();
    let a = s
        .sample(&mut oe, &mu, Some(x.clone()), &mut SeededNoise::new(0))
        .unwrap();
    let b = r
        .sample(&mut or, &mu, Some(x), &mut SeededNoise::new(0))
        .unwrap();
    for (u, v) in a.x.iter().zip(b.x.iter()) {
        assert!((u - v).abs() < 1e-12, "{u} vs {v}");
    }
    assert_eq!(a.stats.orders, b.stats.orders);
}
