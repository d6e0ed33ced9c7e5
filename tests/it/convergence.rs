//! Global convergence order of the exact-mode ODE solvers on a smooth problem (`docs/math.md` §9.9,
//! §4.2), with a user-defined continuous MR schedule and the Gaussian oracle.

use std::sync::Arc;

use crate::common::{LinearLambda, slope};
use mrsampler::Solver;
use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::{Schedule, TimeGrid};
use mrsampler::{
    CoupledNoise, FitTarget, MrSampler, NoNoise, OdeMultistep, Parameterization, PhiloxNoise,
    Sampler, SamplerTensor,
};
use ndarray::{ArrayD, IxDyn};

fn error_at(m: usize, order: usize, param: Parameterization, corrector: bool) -> f64 {
    let solver = OdeMultistep {
        corrector,
        ..OdeMultistep::new(order)
    };
    error_with(m, solver.into(), param)
}

fn error_with(m: usize, solver: Solver, param: Parameterization) -> f64 {
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let s = MrSampler::from_arc(sch.clone(), m)
        .unwrap()
        .with_grid(TimeGrid::UniformLambda)
        .unwrap()
        .with_solver(solver)
        .unwrap()
        .with_parameterization(param)
        .unwrap();
    let mut o = GaussianOracle::new(vec![0.7], vec![0.15 * 0.15], sch).unwrap();
    let mu = 0.3;
    let zs = [-2.0, -0.5, 0.8, 1.7];
    let (mean, var) = o.marginal(0, mu, 8.0);
    let start: Vec<f64> = zs.iter().map(|z| mean + var.sqrt() * z).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[4, 1]), start.clone()).unwrap();
    let mu_t = ArrayD::from_elem(IxDyn(&[4, 1]), mu);
    let out = s.sample(&mut o, &mu_t, Some(x), &mut NoNoise).unwrap();
    let got = out.x.to_host_f64().unwrap();
    start
        .iter()
        .zip(&got)
        .map(|(x, g)| (g - o.pf_ode_map(0, *x, mu, 8.0, 0.0)).abs())
        .fold(0.0, f64::max)
}

fn order_of(order: usize, param: Parameterization) -> (f64, Vec<f64>) {
    let ms = [16usize, 24, 32, 48, 64, 96, 128];
    let errs: Vec<f64> = ms
        .iter()
        .map(|&m| error_at(m, order, param, false))
        .collect();
    (slope(&ms, &errs), errs)
}

#[test]
fn exact_mode_orders_are_one_two_three() {
    for param in [Parameterization::Data, Parameterization::Noise] {
        for (order, min_slope) in [(1, 0.9), (2, 1.8), (3, 2.8)] {
            let (slope, errs) = order_of(order, param);
            assert!(
                slope >= min_slope,
                "{param:?} ODE-{order}: slope {slope:.3} < {min_slope}, errors {errs:?}"
            );
            assert!(
                slope < order as f64 + 1.5,
                "{param:?} ODE-{order}: slope {slope:.3} suspiciously high"
            );
        }
    }
}

/// The UniC corrector raises the order by one at no extra evaluation: ODE-1 + UniC-1 is second
/// order, ODE-2 + UniC-2 third order (data form, exact mode).
#[test]
fn unic_corrector_raises_the_order() {
    let ms = [16usize, 24, 32, 48, 64, 96, 128];
    for (order, min_slope) in [(1, 1.8), (2, 2.8)] {
        let errs: Vec<f64> = ms
            .iter()
            .map(|&m| error_at(m, order, Parameterization::Data, true))
            .collect();
        let sl = slope(&ms, &errs);
        assert!(
            sl >= min_slope,
            "ODE-{order} + UniC: slope {sl:.3} ({errs:?})"
        );
    }
}

/// Singlestep updates of order p (p evaluations per step, stages written from stages) converge
/// with global order p in the evaluation count, in both forms.
#[test]
fn singlestep_orders_are_one_two_three() {
    // M evaluations make M/p steps: the range starts where ODE-3 with 16 steps would.
    let ms = [48usize, 72, 96, 144, 192, 288];
    for param in [Parameterization::Data, Parameterization::Noise] {
        for (order, min_slope) in [(1, 0.9), (2, 1.8), (3, 2.8)] {
            let errs: Vec<f64> = ms
                .iter()
                .map(|&m| error_with(m, Solver::ode_singlestep(order), param))
                .collect();
            let sl = slope(&ms, &errs);
            assert!(
                sl >= min_slope && sl < order as f64 + 1.5,
                "{param:?} singlestep-{order}: slope {sl:.3} ({errs:?})"
            );
        }
    }
}

/// Mean |x_M − x_fine| over 256 paths when the `M`-step SDE pass draws `noise_for(M)` and the
/// fine pass plain Philox noise with the same seed, from the same start states.
fn sde_distance_to_fine(m: usize, order: usize, param: Parameterization, coupled: bool) -> f64 {
    const FINE: usize = 2048;
    let sch: Arc<dyn Schedule> = Arc::new(LinearLambda);
    let sampler = |steps: usize| {
        MrSampler::from_arc(sch.clone(), steps)
            .unwrap()
            .with_grid(TimeGrid::UniformLambda)
            .unwrap()
            .with_solver(Solver::sde(order))
            .unwrap()
            .with_parameterization(param)
            .unwrap()
    };
    let (coarse, fine) = (sampler(m), sampler(FINE));
    let mut o = GaussianOracle::new(vec![0.7], vec![0.15 * 0.15], sch.clone()).unwrap();
    let n = 256;
    let mu = ArrayD::from_elem(IxDyn(&[n, 1]), 0.3);
    let z = ArrayD::from_shape_fn(IxDyn(&[n, 1]), |i| {
        ((i[0] as f64 + 0.5) / n as f64 - 0.5) * 4.0
    });
    let start = coarse.prior_state(&mu, &z).unwrap();
    let reference = fine
        .sample(&mut o, &mu, Some(start.clone()), &mut PhiloxNoise::new(11))
        .unwrap()
        .x;
    let x = if coupled {
        let mut noise = CoupledNoise::new(
            &coarse.plan(FitTarget::Noise).unwrap(),
            &fine.plan(FitTarget::Noise).unwrap(),
            PhiloxNoise::new(11),
        )
        .unwrap();
        coarse
            .sample(&mut o, &mu, Some(start), &mut noise)
            .unwrap()
            .x
    } else {
        coarse
            .sample(&mut o, &mu, Some(start), &mut PhiloxNoise::new(11))
            .unwrap()
            .x
    };
    (&x - &reference).mapv(f64::abs).mean().unwrap()
}

/// With the coarse pass on the fine pass's Brownian path (`CoupledNoise`, docs/math.md §8.3) the
/// SDE solvers converge strongly to the fine result: the distance falls with a measured order
/// of at least one (the noise is additive, the linear part exact). With independent noise it
/// does not fall at all.
#[test]
fn coupled_noise_gives_strong_convergence() {
    let ms = [16usize, 32, 64, 128, 256];
    for param in [Parameterization::Data, Parameterization::Noise] {
        for order in [1, 2] {
            let errs: Vec<f64> = ms
                .iter()
                .map(|&m| sde_distance_to_fine(m, order, param, true))
                .collect();
            let s = slope(&ms, &errs);
            assert!(
                s >= 0.9,
                "{param:?} SDE-{order}: strong order {s:.3}, errors {errs:?}"
            );
            assert!(
                s < 3.0,
                "{param:?} SDE-{order}: slope {s:.3} suspiciously high"
            );
        }
    }
    let uncoupled: Vec<f64> = ms
        .iter()
        .map(|&m| sde_distance_to_fine(m, 2, Parameterization::Data, false))
        .collect();
    assert!(
        slope(&ms, &uncoupled).abs() < 0.3,
        "independent noise should not converge pathwise: {uncoupled:?}"
    );
}
