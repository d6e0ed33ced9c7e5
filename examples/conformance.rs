//! Conformance runner for the `mrsampler-case-v1` format (see `docs/conformance.md`).
//!
//! ```text
//! cargo run --release --features conformance --example conformance -- \
//!     [--check] [--out FILE] [--backend ndarray|ndarray-f32|candle|candle-f32|burn|burn-f32] CASES.json...
//! ```
//!
//! Writes one JSON object per case (every key of the contract, or `{"name", "error"}`), one per
//! line, to FILE or stdout. With `--check` it compares each result with the case's `expected`
//! block, prints the mismatches to stderr, prints `N passed, N failed` last and exits non-zero
//! if any case failed. Malformed files and cases become error lines; the runner never panics.
//!
//! Backends: `ndarray` (f64, default), `candle` and `burn` (f64, CPU; need `--features candle`
//! or `--features burn`); the `-f32` variants run in f32 (compare with `--f32-tolerance`,
//! default 1e-4, see `tests/it/backends.rs`). burn tensors have a static rank, so cases run there
//! as `[batch, rest]`.

use std::io::Write;
use std::process::ExitCode;

use mrsampler::conformance::{Case, CaseError, Outcome, check, parse_file, result_json, run_case};
use ndarray::ArrayD;
use serde_json::json;

struct Args {
    check: bool,
    out: Option<String>,
    backend: String,
    f32_tolerance: f64,
    files: Vec<String>,
}

const BACKENDS: &str = "ndarray, ndarray-f32, candle, candle-f32, burn, burn-f32";

#[allow(clippy::match_like_matches_macro)] // the arms depend on the enabled features
fn backend_available(name: &str) -> bool {
    match name {
        "ndarray" | "ndarray-f32" => true,
        "candle" | "candle-f32" => cfg!(feature = "candle"),
        "burn" | "burn-f32" => cfg!(feature = "burn"),
        _ => false,
    }
}

/// Runs `case` on the named backend (the name was checked by `backend_available`).
fn run_on(case: &mut Case, backend: &str, f32_tol: f64) -> Result<Outcome, CaseError> {
    if backend.ends_with("-f32") {
        case.tolerance = case.tolerance.max(f32_tol);
    }
    match backend {
        "ndarray-f32" => run_case(case, &ArrayD::<f32>::zeros(vec![1])),
        #[cfg(feature = "candle")]
        "candle" | "candle-f32" => {
            let dtype = if backend == "candle" {
                candle_core::DType::F64
            } else {
                candle_core::DType::F32
            };
            let proto =
                candle_core::Tensor::zeros(1, dtype, &candle_core::Device::Cpu).map_err(|e| {
                    CaseError::Library(mrsampler::Error::Backend {
                        source: Box::new(e),
                    })
                })?;
            run_case(case, &proto)
        }
        #[cfg(feature = "burn")]
        "burn" | "burn-f32" => {
            let rest: usize = case.shape[1..].iter().product();
            case.shape = vec![case.shape[0], rest];
            if backend == "burn" {
                run_case(
                    case,
                    &burn::tensor::Tensor::<burn::backend::NdArray<f64>, 2>::zeros(
                        [1, 1],
                        &Default::default(),
                    ),
                )
            } else {
                run_case(
                    case,
                    &burn::tensor::Tensor::<burn::backend::NdArray<f32>, 2>::zeros(
                        [1, 1],
                        &Default::default(),
                    ),
                )
            }
        }
        _ => run_case(case, &ArrayD::<f64>::zeros(vec![1])),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        check: false,
        out: None,
        backend: "ndarray".into(),
        f32_tolerance: 1e-4,
        files: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => args.check = true,
            "--out" => args.out = Some(it.next().ok_or("--out needs a file name")?),
            "--backend" => {
                let b = it
                    .next()
                    .ok_or(format!("--backend needs one of {BACKENDS}"))?;
                if !backend_available(&b) {
                    return Err(format!(
                        "backend `{b}` is unknown or not built in (candle and burn need --features candle / burn); choose from {BACKENDS}"
                    ));
                }
                args.backend = b;
            }
            "--f32-tolerance" => {
                args.f32_tolerance = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v: &f64| *v >= 0.0)
                    .ok_or("--f32-tolerance takes a non-negative number")?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: conformance [--check] [--out FILE] [--backend ndarray] CASES.json..."
                        .into(),
                );
            }
            f => args.files.push(f.to_string()),
        }
    }
    if args.files.is_empty() {
        return Err(
            "no case files given; usage: conformance [--check] [--out FILE] CASES.json...".into(),
        );
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("cannot create {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &args.files {
        let raw = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_file(&text).map_err(|e| e.to_string()));
        let cases = match raw {
            Ok(c) => c,
            Err(e) => {
                let line = json!({ "name": file, "error": format!("cannot read case file: {e}") });
                let _ = writeln!(out, "{line}");
                failed += 1;
                continue;
            }
        };
        for (i, raw) in cases.iter().enumerate() {
            let name = Case::name_of(raw, i);
            let parsed = Case::from_json(raw);
            let (line, mismatches) = match parsed {
                Ok(mut case) => {
                    let result = run_on(&mut case, &args.backend, args.f32_tolerance);
                    (result_json(&name, &result), check(&case, &result))
                }
                Err(e) => {
                    // A case that cannot be built is an error line; it passes --check only
                    // when the case itself expects an error.
                    let expects_error = raw
                        .get("expected")
                        .and_then(|e| e.get("error"))
                        .is_some_and(|v| !v.is_null() && v.as_bool() != Some(false));
                    let bad = if expects_error {
                        vec![]
                    } else {
                        vec![format!("invalid case: {e}")]
                    };
                    (json!({ "name": name, "error": e.to_string() }), bad)
                }
            };
            if writeln!(out, "{line}").is_err() {
                eprintln!("cannot write output");
                return ExitCode::from(2);
            }
            if mismatches.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                if args.check {
                    for m in &mismatches {
                        eprintln!("FAIL {name}: {m}");
                    }
                }
            }
        }
    }
    let _ = out.flush();
    drop(out);
    if args.check {
        println!("{passed} passed, {failed} failed");
        if failed > 0 {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
