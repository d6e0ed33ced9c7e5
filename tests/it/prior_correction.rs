//! The prior mean correction (`MrSampler::with_prior_correction`) against closed forms.

use std::sync::Arc;

use mrsampler::oracle::{GaussianOracle, gaussian_output_law};
use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{MrSampler, Sampler, SeededNoise, Solver};
use ndarray::{ArrayD, IxDyn};

const M: [f64; 3] = [0.7, 0.2, 0.45];
const C: [f64; 3] = [0.01, 0.04, 0.002];
const MU: [f64; 3] = [0.1, 0.8, 0.5];

fn converged(prior_correction: bool, solver: Solver) -> MrSampler {
    MrSampler::new(IrSdeSchedule::da_clip(), 1000)
        .unwrap()
        .with_solver(solver)
        .unwrap()
        .with_grid(TimeGrid::UniformLambda)
        .unwrap()
        .with_prior_correction(prior_correction)
        .unwrap()
        .with_data_range(None)
        .unwrap()
}

/// The exact flow maps the marginal at `T`, `N(μ + α_T(m − μ), α_T²c + σ_T²)`, onto the one
/// at the grid's end `t = 0`, `N(μ + α₀(m − μ), α₀²c + σ₀²)`, with slope
/// `√(α₀²c + σ₀²) / √(α_T²c + σ_T²)`. Started from `μ + σ_T z` its mean is off by that slope
/// times `α_T(m − μ)`; the correction removes that offset, with multistep and with
/// singlestep updates (whose first step's three updates all read the start state).
#[test]
fn removes_the_prior_mean_offset_of_the_exact_flow() {
    for solver in [Solver::ode(3), Solver::ode_singlestep(3)] {
        check_prior_offset(solver);
    }
}

fn check_prior_offset(solver: Solver) {
    let sch = IrSdeSchedule::da_clip();
    let (t, end) = (sch.t_max(), sch.t_min());
    let (a, s) = (sch.alpha(t), sch.sigma(t));
    let (a0, s0) = (sch.alpha(end), sch.sigma(end));
    let o = GaussianOracle::new(M.to_vec(), C.to_vec(), Arc::new(sch)).unwrap();
    let plain = gaussian_output_law(&converged(false, solver), &o, &MU).unwrap();
    let fixed = gaussian_output_law(&converged(true, solver), &o, &MU).unwrap();
    for i in 0..3 {
        let end_mean = MU[i] + a0 * (M[i] - MU[i]);
        let end_var = a0 * a0 * C[i] + s0 * s0;
        let slope = end_var.sqrt() / (a * a * C[i] + s * s).sqrt();
        let offset = slope * a * (M[i] - MU[i]);
        let (e_plain, e_fixed) = (plain.mean[i] - end_mean, fixed.mean[i] - end_mean);
        assert!(
            (e_plain + offset).abs() <= 1e-3 * offset.abs(),
            "{solver:?} coordinate {i}: uncorrected mean error {e_plain:e}, closed form {:e}",
            -offset
        );
        assert!(
            e_fixed.abs() <= 1e-3 * offset.abs(),
            "{solver:?} coordinate {i}: corrected mean error {e_fixed:e} (uncorrected {:e})",
            -offset
        );
        // Variances: the prior's σ_T² instead of α_T²c + σ_T², widened by the correction's
        // dependence on z (x̂₀ = m + k(x − μ − α_T(m − μ)), k = α_T c/(α_T²c + σ_T²)).
        let v_t = a * a * C[i] + s * s;
        let k = a * C[i] / v_t;
        for (law, start_var) in [(&plain, s * s), (&fixed, (s * (1.0 + a * k)).powi(2))] {
            let want = end_var * start_var / v_t;
            assert!(
                (law.var[i] / want - 1.0).abs() < 1e-7,
                "{solver:?} variance {i}"
            );
        }
    }
}

/// One first-order data-form step from `x₀` at `T` to `t₁`, corrected, is
/// `x₁ − μ = (σ₁/σ₀)(x₀ − μ) + α₁(x̂₀ − μ)`.
#[test]
fn corrected_first_step_closed_form() {
    let sch = Arc::new(IrSdeSchedule::da_clip());
    let (t0, t1) = (sch.t_max(), 40.0);
    // Two steps; only the first is checked, through the step-level `Run`.
    let s = MrSampler::from_arc(sch.clone(), 2)
        .unwrap()
        .with_grid(TimeGrid::Custom(vec![t0, t1, 0.0]))
        .unwrap()
        .with_solver(Solver::ode(1))
        .unwrap()
        .with_prior_correction(true)
        .unwrap()
        .with_data_range(None)
        .unwrap();
    let mut o = GaussianOracle::new(M.to_vec(), C.to_vec(), sch.clone()).unwrap();
    let x0 = [0.3, 0.55, 0.9];
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), x0.to_vec()).unwrap();
    let mu = ArrayD::from_shape_vec(IxDyn(&[1, 3]), MU.to_vec()).unwrap();
    let mut run = s
        .start(
            mrsampler::FitTarget::Data,
            &mu,
            Some(x),
            &mut SeededNoise::new(0),
        )
        .unwrap();
    let p = run.pending().unwrap();
    let net = {
        use mrsampler::ScoreModel;
        o.predict(run.eval_state(), run.mu(), p.t).unwrap()
    };
    run.advance(&net, &mut SeededNoise::new(0)).unwrap();
    let (s0, s1, a1) = (sch.sigma(t0), sch.sigma(t1), sch.alpha(t1));
    for i in 0..3 {
        let xhat = o.posterior_mean_scalar(i, x0[i], MU[i], t0);
        let want = MU[i] + s1 / s0 * (x0[i] - MU[i]) + a1 * (xhat - MU[i]);
        let got = run.state()[[0, i]];
        assert!(
            (got - want).abs() < 1e-13,
            "coordinate {i}: {got} vs {want}"
        );
    }
}
