//! Fuzzes the conformance case parser, sampler construction and one sampling pass.
//!
//! Input: arbitrary bytes, read as a case file. To reach the sampler quickly, inputs that are
//! not JSON are also tried as a single case spliced into a valid template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mrsampler::conformance::{Case, check, parse_file, run_case};
use ndarray::ArrayD;

const TEMPLATE: &str = include_str!("../seed_case.json");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let proto = ArrayD::<f64>::zeros(vec![1]);
    let cases = match parse_file(text) {
        Ok(c) => c,
        Err(_) => {
            // Treat the input as a JSON value replacing one field of a valid case.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return };
            let mut base: serde_json::Value = serde_json::from_str(TEMPLATE).unwrap();
            if let Some(obj) = v.as_object() {
                for (k, val) in obj {
                    if let Some(section) = base.get_mut(k.as_str()).and_then(|s| s.as_object_mut()) {
                        if let Some(inner) = val.as_object() {
                            for (ik, iv) in inner {
                                section.insert(ik.clone(), iv.clone());
                            }
                            continue;
                        }
                    }
                    base[k.as_str()] = val.clone();
                }
            }
            vec![base]
        }
    };
    for raw in cases.iter().take(4) {
        if let Ok(case) = Case::from_json(raw) {
            // Keep each run small so the fuzzer stays fast.
            if case.mu.len() > 4096 {
                continue;
            }
            let result = run_case(&case, &proto);
            let _ = check(&case, &result);
            if let Ok(o) = &result {
                assert!(o.final_.iter().all(|v| v.is_finite()), "non-finite output without an error");
            }
        }
    }
});
