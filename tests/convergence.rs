//! Global convergence order of the exact-mode ODE solvers on a smooth problem (`docs/math.md` §9.9,
//! §4.2), with a user-defined continuous MR schedule and the Gaussian oracle.

use std::sync::Arc;

mod common;

use common::{LinearLambda, slope};
use mrsampler::Solver;
use mrsampler::oracle::GaussianOracle;
use mrsampler::schedule::{Schedule, TimeGrid};
use mrsampler::{MrSampler, NoNoise, OdeMultistep, Parameterization, Sampler, SamplerTensor};
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
