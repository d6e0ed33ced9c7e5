//! Conformance runner for the `mrsampler-case-v1` format (see `docs/conformance.md`).
//!
//! ```text
//! cargo run --release --features conformance --example conformance -- \
//!     [--check] [--out FILE] [--backend ndarray] CASES.json...
//! ```
//!
//! Writes one JSON object per case (every key of the contract, or `{"name", "error"}`), one per
//! line, to FILE or stdout. With `--check` it compares each result with the case's `expected`
//! block, prints the mismatches to stderr, prints `N passed, N failed` last and exits non-zero
//! if any case failed. Malformed files and cases become error lines; the runner never panics.

use std::io::Write;
use std::process::ExitCode;

use mrsampler::conformance::{Case, check, parse_file, result_json, run_case};
use ndarray::ArrayD;
use serde_json::json;

struct Args {
    check: bool,
    out: Option<String>,
    files: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        check: false,
        out: None,
        files: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => args.check = true,
            "--out" => args.out = Some(it.next().ok_or("--out needs a file name")?),
            "--backend" => match it.next().as_deref() {
                Some("ndarray") => {}
                Some(other) => {
                    return Err(format!(
                        "backend `{other}` is not built in; available: ndarray"
                    ));
                }
                None => return Err("--backend needs a name (ndarray)".into()),
            },
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
    let proto = ArrayD::<f64>::zeros(vec![1]);
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
            let (line, mismatches) = match &parsed {
                Ok(case) => {
                    let result = run_case(case, &proto);
                    (result_json(&name, &result), check(case, &result))
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
