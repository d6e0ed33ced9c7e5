//! Replays every shipped conformance vector (`tests/data/*.json`, computed by an independent
//! float64 implementation) at the format's tolerance.
#![cfg(feature = "conformance")]

use mrsampler::conformance::{Case, check, parse_file, run_case};
use ndarray::ArrayD;

fn replay(file: &str) -> (usize, usize) {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let cases = parse_file(&text).unwrap();
    let proto = ArrayD::<f64>::zeros(vec![1]);
    let mut failures = Vec::new();
    let mut errors = 0;
    for (i, raw) in cases.iter().enumerate() {
        let name = Case::name_of(raw, i);
        let case = Case::from_json(raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = run_case(&case, &proto);
        if case.expected.error {
            errors += 1;
        }
        for m in check(&case, &result) {
            failures.push(format!("{name}: {m}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    (cases.len(), errors)
}

#[test]
fn toy_reference_vectors() {
    assert_eq!(replay("toy_reference.json"), (55, 5));
}

#[test]
fn toy_exact_vectors() {
    assert_eq!(replay("toy_exact.json"), (55, 0));
}

#[test]
fn baseline_vectors() {
    assert_eq!(replay("baselines.json"), (15, 0));
}

#[test]
fn oracle_vectors() {
    assert_eq!(replay("oracles.json"), (19, 0));
}

/// Malformed input becomes a typed error, never a panic.
#[test]
fn malformed_cases_are_errors() {
    assert!(parse_file("not json").is_err());
    assert!(parse_file(r#"{"schema": "other", "cases": []}"#).is_err());
    assert!(parse_file(r#"{"schema": "mrsampler-case-v1"}"#).is_err());
    let text = std::fs::read_to_string(format!(
        "{}/tests/data/toy_exact.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cases = parse_file(&text).unwrap();
    let base = cases[0].clone();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let mutations: Vec<Mutation> = vec![
        Box::new(|c| c["sampler"]["order"] = "two".into()),
        Box::new(|c| c["sampler"]["order"] = 4.into()),
        Box::new(|c| c["sampler"]["kind"] = "ddim".into()),
        Box::new(|c| c["model"]["kind"] = "unet".into()),
        Box::new(|c| c["inputs"]["mu"] = serde_json::json!([0.5])),
        Box::new(|c| c["shape"] = serde_json::json!([0, 3])),
        Box::new(|c| c["schedule"]["eps"] = 2.into()),
        Box::new(|c| c["schedule"]["T"] = (-3).into()),
        Box::new(|c| c["schedule"]["max_sigma"] = 0.5.into()),
        Box::new(|c| c["sampler"]["time_schedule"] = "cosine".into()),
        Box::new(|c| {
            c.as_object_mut().unwrap().remove("inputs");
        }),
    ];
    for (i, f) in mutations.iter().enumerate() {
        let mut c = base.clone();
        f(&mut c);
        assert!(Case::from_json(&c).is_err(), "mutation {i} was accepted");
    }
    // A run that needs more noise than supplied is an error, not a panic.
    let sde = cases
        .iter()
        .find(|c| c["sampler"]["solver_type"] == "sde")
        .unwrap()
        .clone();
    let mut c = sde;
    c["inputs"]["noises"] = serde_json::json!([]);
    let case = Case::from_json(&c).unwrap();
    let r = run_case(&case, &ArrayD::<f64>::zeros(vec![1]));
    assert!(r.is_err());
}
