//! `mrsampler calibrate` on small images with the shipped network, and its grid file in
//! `eval --samplers` and `restore --grid`; refusals of files that do not fit.

mod common;

use std::path::Path;

use common::{mrsampler, rgb};

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Calibrates `sampler` at `nfe` on two 16 × 12 images in `dir`; returns the grid file.
fn calibrate(dir: &Path, sampler: &str, nfe: &str) -> std::path::PathBuf {
    let images = dir.join("cal");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..2 {
        rgb(&images.join(format!("c{k}.png")), 16, 12, k + 3);
    }
    let out = dir.join(format!("{}-{nfe}.json", sampler.replace(':', "_")));
    let (ok, text) = mrsampler(&[
        "calibrate",
        "--images",
        &path(&images),
        "--sampler",
        sampler,
        "--nfe",
        nfe,
        "--fine-steps",
        "4",
        "--out",
        &path(&out),
        "--quiet",
    ]);
    assert!(ok, "{text}");
    out
}

#[test]
fn a_grid_file_states_its_calibration_and_runs_in_eval_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let file = calibrate(dir.path(), "mrs-sde-2:data", "3");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["format"], "mrsampler-grid-v1");
    assert_eq!(json["sampler"], "mrs-sde-2:data");
    assert_eq!(json["steps"], 3);
    let times: Vec<f64> = json["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 4);
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    let teacher: Vec<f64> = json["teacher_grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert!(times.iter().all(|t| teacher.contains(t)));
    // The chosen candidate is the closest to the teacher, and it is the file's grid.
    let cands = json["candidates"].as_array().unwrap();
    assert_eq!(cands[0]["name"], "searched");
    let best = cands
        .iter()
        .min_by(|a, b| {
            a["distance"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["distance"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(best["name"], json["chosen"]);
    assert_eq!(best["times"], json["times"]);
    assert_eq!(json["provenance"]["images"].as_array().unwrap().len(), 2);

    // eval: one row at the file's NFE, measured against its teacher (the SDE couples to it).
    for kind in ["gt", "degraded"] {
        std::fs::create_dir_all(dir.path().join(kind)).unwrap();
        rgb(&dir.path().join(kind).join("e.png"), 16, 12, 9);
    }
    let (ok, text) = mrsampler(&[
        "eval",
        "--gt",
        &path(&dir.path().join("gt")),
        "--degraded",
        &path(&dir.path().join("degraded")),
        "--samplers",
        &path(&file),
        "--seeds",
        "1",
        "--json",
        "--quiet",
        "--picture",
        &path(&dir.path().join("cmp.png")),
    ]);
    assert!(ok, "{text}");
    let row: serde_json::Value = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .nth(1)
        .unwrap_or_else(|| panic!("no sampler row: {text}"));
    assert_eq!(row["nfe"], 3);
    assert!(row["psnr_vs_converged"].as_f64().is_some(), "{row}");

    // restore --grid FILE: the file's sampler and NFE.
    let out = dir.path().join("out");
    let restore = |grid: &Path, extra: &[&str]| {
        let (input, out) = (path(&dir.path().join("degraded/e.png")), path(&out));
        let mut args = vec!["restore", &input, "--out", &out, "--grid"];
        let grid = path(grid);
        args.push(&grid);
        args.extend_from_slice(extra);
        mrsampler(&args)
    };
    let (ok, text) = restore(&file, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("3 evaluations"), "{text}");
    assert!(out.join("e.png").exists());

    // Refusals: another NFE, sampler options the file fixes, another schedule, another sampler.
    let (ok, text) = restore(&file, &["--nfe", "5"]);
    assert!(!ok && text.contains("3 steps"), "{text}");
    for flags in [
        &["--sampler", "mrs-ode"][..],
        &["--order", "1"],
        &["--param", "noise"],
    ] {
        let (ok, text) = restore(&file, flags);
        assert!(
            !ok && text.contains("fixes the sampler") && text.contains(flags[0]),
            "{flags:?}: {text}"
        );
    }
    let mut other = json.clone();
    other["schedule"]["t_max"] = serde_json::json!(50.0);
    let other_file = dir.path().join("other.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let (ok, text) = restore(&other_file, &[]);
    assert!(!ok && text.contains("another schedule"), "{text}");
    let spec = format!("mrs-ode-2:data:{}", path(&file));
    let (ok, text) = mrsampler(&["eval", "--samplers", &spec, "--quiet"]);
    assert!(
        !ok && text.contains("calibrated for mrs-sde-2:data"),
        "{text}"
    );
}

#[test]
fn bad_calibration_inputs_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("mixed");
    std::fs::create_dir_all(&images).unwrap();
    rgb(&images.join("a.png"), 16, 12, 1);
    rgb(&images.join("b.png"), 12, 12, 2);
    let out = path(&dir.path().join("g.json"));
    let run = |extra: &[&str]| {
        let mut args = vec!["calibrate", "--out", &out, "--quiet"];
        args.extend_from_slice(extra);
        mrsampler(&args)
    };
    let (ok, text) = run(&["--images", &path(&images), "--nfe", "3"]);
    assert!(!ok && text.contains("one size"), "{text}");
    let (ok, text) = run(&[
        "--images",
        &path(&images),
        "--nfe",
        "3",
        "--sampler",
        "posterior",
    ]);
    assert!(!ok && text.contains("MR Sampler"), "{text}");
    let (ok, text) = run(&["--nfe", "0"]);
    assert!(!ok && text.contains("num_steps"), "{text}");
    assert!(!Path::new(&out).exists());
}
