//! `mrsampler eval` on small image pairs with the shipped network: the JSON rows,
//! convergence of the coupled SDE and of the ODE towards their converged runs, the baselines'
//! reference row, and bad inputs.

mod common;

use std::path::Path;

use common::{mrsampler, rgb};
use image::{ImageBuffer, Luma};

/// `gt/` and `degraded/` folders with `n` RGB pairs of `w × h`.
fn pairs(dir: &Path, n: u32, w: u32, h: u32) {
    for kind in ["gt", "degraded"] {
        std::fs::create_dir_all(dir.join(kind)).unwrap();
    }
    for k in 0..n {
        rgb(&dir.join(format!("gt/img{k}.png")), w, h, k);
        rgb(&dir.join(format!("degraded/img{k}.png")), w, h, k + 50);
    }
}

/// `eval` on the pairs in `dir` with the shipped network (a trained network: its probability
/// flow is smooth enough for the convergence checks, which a random-weight network's is not at
/// these step counts).
fn eval(dir: &Path, extra: &[&str]) -> (bool, String) {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/restore");
    let (model, options) = (assets.join("model.safetensors"), assets.join("options.yml"));
    let (g, d, pic) = (dir.join("gt"), dir.join("degraded"), dir.join("cmp.png"));
    let mut args = vec![
        "eval".to_owned(),
        "--gt".into(),
        g.to_string_lossy().into(),
        "--degraded".into(),
        d.to_string_lossy().into(),
        "--model".into(),
        model.to_string_lossy().into(),
        "--options".into(),
        options.to_string_lossy().into(),
        "--picture".into(),
        pic.to_string_lossy().into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mrsampler(&refs)
}

/// The JSON lines of a successful run (stdout lines starting with `{`).
fn rows(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn sde_and_ode_rows_approach_their_converged_runs() {
    let dir = tempfile::tempdir().unwrap();
    pairs(dir.path(), 2, 16, 12);
    let (ok, text) = eval(
        dir.path(),
        &[
            "--json",
            "--samplers",
            "mrs-sde-2,mrs-ode-2",
            "--nfe",
            "5,10,20",
            "--converged-nfe",
            "40",
            "--seeds",
            "2",
        ],
    );
    assert!(ok, "{text}");
    let rows = rows(&text);
    assert_eq!(rows.len(), 7, "{text}");
    assert_eq!(rows[0]["sampler"], "degraded input");
    for r in &rows {
        for key in [
            "sampler",
            "nfe",
            "psnr",
            "psnr_sd",
            "ssim",
            "ssim_sd",
            "psnr_vs_converged",
            "seconds",
            "images",
            "seeds",
            "sharpness",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["images"], 2);
    }
    for (first, name) in [
        (1, "mrs-sde-2:data:linspace"),
        (4, "mrs-ode-2:data:linspace"),
    ] {
        let d: Vec<f64> = (first..first + 3)
            .map(|i| {
                assert_eq!(rows[i]["sampler"], name);
                assert_eq!(rows[i]["seeds"], 2);
                rows[i]["psnr_vs_converged"].as_f64().unwrap()
            })
            .collect();
        assert!(
            d[0] < d[1] && d[1] < d[2],
            "{name}: PSNR to the converged run should rise with NFE: {d:?}"
        );
    }
    assert!(dir.path().join("cmp.png").exists());
}

#[test]
fn a_baselines_full_chain_is_its_reference() {
    let dir = tempfile::tempdir().unwrap();
    pairs(dir.path(), 1, 8, 8);
    let (ok, text) = eval(
        dir.path(),
        &[
            "--json",
            "--samplers",
            "posterior",
            "--baseline-nfe",
            "10,100",
            "--seeds",
            "1",
        ],
    );
    assert!(ok, "{text}");
    let rows = rows(&text);
    assert_eq!(rows.len(), 3);
    assert!(rows[2]["psnr_vs_converged"].is_null(), "{}", rows[2]);
    assert_eq!(rows[2]["is_converged_reference"], true);
    assert!(rows[1]["psnr_vs_converged"].as_f64().unwrap().is_finite());
}

#[test]
fn grids_that_do_not_nest_are_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    pairs(dir.path(), 1, 8, 8);
    let (ok, text) = eval(
        dir.path(),
        &[
            "--json",
            "--samplers",
            "mrs-sde-2",
            "--nfe",
            "6",
            "--converged-nfe",
            "40",
            "--seeds",
            "1",
        ],
    );
    assert!(ok, "{text}");
    assert!(rows(&text)[1]["psnr_vs_converged"].is_null());
    assert!(text.contains("multiple"), "{text}");
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    pairs(dir.path(), 2, 8, 8);
    // A clean image without a degraded partner.
    rgb(&dir.path().join("gt/lonely.png"), 8, 8, 3);
    let (ok, text) = eval(dir.path(), &[]);
    assert!(
        !ok && text.contains("no degraded image named `lonely"),
        "{text}"
    );
    std::fs::remove_file(dir.path().join("gt/lonely.png")).unwrap();
    // Sizes that differ.
    rgb(&dir.path().join("degraded/img1.png"), 9, 8, 3);
    let (ok, text) = eval(dir.path(), &[]);
    assert!(!ok && text.contains("must match"), "{text}");
    // A gray pair for an RGB model.
    for kind in ["gt", "degraded"] {
        ImageBuffer::from_pixel(8, 8, Luma([100u8]))
            .save(dir.path().join(format!("{kind}/img1.png")))
            .unwrap();
    }
    let (ok, text) = eval(dir.path(), &[]);
    assert!(!ok && text.contains("3-channel"), "{text}");
    rgb(&dir.path().join("gt/img1.png"), 8, 8, 1);
    rgb(&dir.path().join("degraded/img1.png"), 8, 8, 4);
    for (extra, expected) in [
        (vec!["--samplers", "mrs-xde-2"], "expected KIND"),
        (
            vec!["--samplers", "posterior:noise"],
            "write `posterior` alone",
        ),
        (vec!["--nfe", "0"], "at least 1"),
        (vec!["--seeds", "0"], "at least 1"),
        (vec!["--device", "cuda:0"], "not available"),
    ] {
        let (ok, text) = eval(dir.path(), &extra);
        assert!(!ok && text.contains(expected), "{extra:?}: {text}");
    }
    let (ok, text) = mrsampler(&["eval", "--model", "/nonexistent/model.safetensors"]);
    assert!(!ok && text.contains("nonexistent"), "{text}");
}

#[test]
fn teacher_references_couple_every_grid_at_every_nfe() {
    // 3 and 7 steps do not divide the default 40-step reference, so `own` cannot couple the SDE
    // rows; the calibration teacher grid at each NFE contains every named grid's times.
    let dir = tempfile::tempdir().unwrap();
    pairs(dir.path(), 1, 16, 12);
    let run = |converged: &str| {
        let (ok, text) = eval(
            dir.path(),
            &[
                "--json",
                "--samplers",
                "mrs-sde-2:data:karras-t,mrs-sde-2:data:linspace",
                "--nfe",
                "3,7",
                "--seeds",
                "1",
                "--converged",
                converged,
            ],
        );
        assert!(ok, "{text}");
        rows(&text)[1..]
            .iter()
            .map(|r| r["psnr_vs_converged"].as_f64())
            .collect::<Vec<_>>()
    };
    let teacher = run("teacher");
    assert_eq!(teacher.len(), 4);
    assert!(
        teacher.iter().all(|d| d.is_some_and(f64::is_finite)),
        "{teacher:?}"
    );
    assert!(run("own").iter().all(Option::is_none));
}

/// The shipped network and evaluation crops are inside the binary: `eval` runs from a folder
/// that has nothing of the source tree, as an installed binary does.
#[test]
fn the_shipped_set_evaluates_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mrsampler"))
        .current_dir(dir.path())
        .args([
            "eval",
            "--samplers",
            "mrs-ode-2",
            "--nfe",
            "2",
            "--converged-nfe",
            "4",
        ])
        .args(["--seeds", "1", "--json", "--quiet", "--picture", "cmp.png"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let rows = rows(&text);
    // Degraded input, three classical rows (the shipped set), the sampler row.
    assert_eq!(rows.len(), 5, "{text}");
    assert_eq!(rows[1]["classical"], "gaussian-blur");
    assert!(rows[4]["psnr"].as_f64().is_some_and(|p| p > 20.0), "{text}");
    assert!(dir.path().join("cmp.png").exists());
}
