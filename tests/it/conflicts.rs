//! Every `Error::Conflict` the crate raises, in one place: each row sets two settings that do
//! not go together, in both setter orders (setters never refuse a combination; `check`, `plan`
//! and `cost` do), and the error names the refused setting. Settings that do go together where
//! a neighbouring row's do not are accepted.

use std::sync::Arc;

use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{
    AdaptiveSampler, Baseline, BaselineSampler, Calibrator, Error, FitTarget, Mode, MrSampler,
    OdeMultistep, OrderRule, Parameterization, Result, Sampler, SdeMultistep, SecondOrder, Solver,
    ThirdOrder, Thresholding,
};

fn schedule() -> Arc<dyn Schedule> {
    Arc::new(IrSdeSchedule::da_clip())
}

fn mrs(steps: usize) -> MrSampler {
    MrSampler::from_arc(schedule(), steps).unwrap()
}

type Setter = fn(MrSampler) -> Result<MrSampler>;

/// The refusal of `first` then `second` and of `second` then `first` on `mrs(steps)`, both
/// at `check` and at `plan`; each names `setting`.
fn refused_both_ways(steps: usize, first: Setter, second: Setter, setting: &str) {
    let ab = first(mrs(steps)).and_then(second);
    let ba = second(mrs(steps)).and_then(first);
    for (order, built) in [("a, b", ab), ("b, a", ba)] {
        let built = built.unwrap_or_else(|e| panic!("{setting} ({order}): a setter refused: {e}"));
        for result in [
            built.clone().check().map(|_| ()),
            built.plan(FitTarget::Noise).map(|_| ()),
        ] {
            match result {
                Err(e @ Error::Conflict { .. }) => {
                    assert!(e.to_string().contains(setting), "{setting} ({order}): {e}")
                }
                other => panic!("{setting} ({order}): expected a conflict, got {other:?}"),
            }
        }
    }
}

#[test]
fn mr_sampler_conflicts() {
    let reference: Setter = |s| s.with_mode(Mode::Reference);
    let noise: Setter = |s| s.with_parameterization(Parameterization::Noise);
    let singlestep: Setter = |s| s.with_solver(Solver::ode_singlestep(2));
    let corrector: Setter = |s| {
        s.with_solver(OdeMultistep {
            corrector: true,
            ..OdeMultistep::new(2)
        })
    };
    let prior: Setter = |s| s.with_prior_correction(true);
    let thresholds: Setter = |s| s.with_thresholding(Some(Thresholding::default()));
    let custom: Setter = |s| s.with_grid(TimeGrid::Custom(vec![100.0, 60.0, 30.0, 10.0, 0.0]));
    let lambda_min: Setter = |s| s.with_lambda_min(Some(-3.0));
    let karras: Setter = |s| s.with_grid(TimeGrid::KarrasT { rho: 7.0 });
    let denoise_last: Setter = |s| s.with_denoise_last(true);
    let midpoint: Setter = |s| {
        s.with_solver(OdeMultistep {
            second_order: SecondOrder::Midpoint,
            ..OdeMultistep::new(2)
        })
    };
    let rule: Setter = |s| {
        s.with_solver(SdeMultistep {
            order_rule: Some(OrderRule::Full),
            ..SdeMultistep::new(2)
        })
    };
    let taylor3: Setter = |s| {
        s.with_solver(OdeMultistep {
            third_order: Some(ThirdOrder::Taylor),
            ..OdeMultistep::new(3)
        })
    };
    // Reference mode has none of exact mode's options.
    refused_both_ways(10, reference, singlestep, "OdeSinglestep");
    refused_both_ways(10, reference, midpoint, "Midpoint");
    refused_both_ways(10, reference, rule, "order_rule");
    refused_both_ways(10, reference, corrector, "corrector");
    refused_both_ways(10, reference, taylor3, "third_order");
    refused_both_ways(10, reference, prior, "prior_correction");
    // The data form's options.
    refused_both_ways(10, noise, corrector, "corrector");
    refused_both_ways(10, noise, prior, "prior_correction");
    refused_both_ways(10, noise, thresholds, "thresholding");
    // Grids.
    refused_both_ways(4, custom, lambda_min, "lambda_min");
    refused_both_ways(10, karras, lambda_min, "lambda_min");
    refused_both_ways(4, singlestep, custom, "OdeSinglestep");
    refused_both_ways(10, singlestep, denoise_last, "OdeSinglestep");
    // ... and their neighbours that do go together.
    let fine = |s: Result<MrSampler>| s.and_then(MrSampler::check).map(|_| ());
    fine(noise(mrs(10)).and_then(denoise_last).and_then(thresholds)).unwrap();
    fine(reference(mrs(10)).and_then(|s| {
        s.with_solver(OdeMultistep {
            third_order: Some(ThirdOrder::HalfD2),
            ..OdeMultistep::new(3)
        })
    }))
    .unwrap();
    fine(karras(mrs(10))).unwrap();
}

#[test]
fn solver_conflicts() {
    // Within one solver value: refused when the solver is set.
    let midpoint_first_order = OdeMultistep {
        second_order: SecondOrder::Midpoint,
        ..OdeMultistep::new(1)
    };
    let half_second_order = OdeMultistep {
        third_order: Some(ThirdOrder::HalfD2),
        ..OdeMultistep::new(2)
    };
    for (solver, setting) in [
        (midpoint_first_order, "second_order"),
        (half_second_order, "third_order"),
    ] {
        match mrs(10).with_solver(solver) {
            Err(e @ Error::Conflict { .. }) => assert!(e.to_string().contains(setting), "{e}"),
            other => panic!("{setting}: {other:?}"),
        }
    }
}

#[test]
fn baseline_conflicts() {
    let checked =
        |r: Result<BaselineSampler>, setting: &str| match r.and_then(BaselineSampler::check) {
            Err(e @ Error::Conflict { .. }) => assert!(e.to_string().contains(setting), "{e}"),
            other => panic!("{setting}: expected a conflict, got {other:?}"),
        };
    let base = |kind, steps| BaselineSampler::from_arc(schedule(), kind, steps).unwrap();
    let t = 100;
    checked(
        base(Baseline::EulerOde, 10).with_mode(Mode::Reference),
        "num_steps = 10",
    );
    checked(
        base(Baseline::Heun { stochastic: false }, 10).with_mode(Mode::Reference),
        "Heun",
    );
    checked(
        base(Baseline::Posterior, 10).with_mode(Mode::Reference),
        "num_steps = 10",
    );
    // The reference's unit steps are an opt-in of reference-mode EM and posterior only.
    checked(
        base(Baseline::Heun { stochastic: true }, 10).with_reference_unit_steps(true),
        "reference_unit_steps",
    );
    checked(
        base(Baseline::Posterior, 10)
            .with_reference_unit_steps(true)
            .and_then(|s| s.with_mode(Mode::Exact)),
        "reference_unit_steps",
    );
    // Their neighbours that do go together.
    let fine = |r: Result<BaselineSampler>| r.and_then(BaselineSampler::check).unwrap();
    fine(base(Baseline::Posterior, 10).with_reference_unit_steps(true));
    fine(base(Baseline::Posterior, t).with_mode(Mode::Reference));
    fine(base(Baseline::EulerOde, t).with_mode(Mode::Reference));
}

#[test]
fn adaptive_conflicts() {
    let s = AdaptiveSampler::from_arc(schedule())
        .unwrap()
        .with_parameterization(Parameterization::Noise)
        .unwrap();
    match s.with_prior_correction(true) {
        Err(e @ Error::Conflict { .. }) => assert!(e.to_string().contains("prior_correction")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn calibration_conflicts() {
    // What cannot be calibrated on a teacher's grid: reference mode (its own grids and order
    // rule) and the singlestep solver (evaluations between the grid times).
    let calibrator = Calibrator::new(5).unwrap();
    for (s, setting) in [
        (mrs(5).with_mode(Mode::Reference).unwrap(), "Reference"),
        (
            mrs(5).with_solver(Solver::ode_singlestep(2)).unwrap(),
            "OdeSinglestep",
        ),
    ] {
        match calibrator.cost(&s) {
            Err(e @ Error::Conflict { .. }) => {
                assert!(e.to_string().contains(setting), "{e}");
                assert!(e.to_string().contains("calibrat"), "{e}");
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
    // Everything else calibrates (the search builds those steps with the planner).
    let corrected = mrs(5)
        .with_solver(OdeMultistep {
            corrector: true,
            ..OdeMultistep::new(3)
        })
        .unwrap()
        .with_prior_correction(true)
        .unwrap()
        .with_denoise_last(true)
        .unwrap()
        .with_thresholding(Some(Thresholding::default()))
        .unwrap();
    assert!(calibrator.cost(&corrected).is_ok());
}
