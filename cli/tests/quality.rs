//! The shipped restorer on the shipped test crops: no border artifacts. For the SDE and the ODE
//! sampler, on the whole image and on tiles, the mean absolute error of each outermost row and
//! column (against the clean crop) is at most 1.3× the interior's.

mod common;

use std::path::Path;

use common::mrsampler;

/// Mean absolute error (8-bit levels) of the top row, bottom row, left column, right column
/// and interior of every restored crop in `out` against `assets/eval/test/gt`, pooled.
fn edge_errors(out: &Path) -> [f64; 5] {
    let gt_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/eval/test/gt");
    let mut sum = [0.0; 5];
    let mut count = [0usize; 5];
    for entry in std::fs::read_dir(&gt_dir).unwrap() {
        let path = entry.unwrap().path();
        let gt = image::open(&path).unwrap().to_rgb8();
        let restored = image::open(out.join(path.file_name().unwrap()))
            .unwrap()
            .to_rgb8();
        let (w, h) = gt.dimensions();
        for (x, y, p) in gt.enumerate_pixels() {
            let q = restored.get_pixel(x, y);
            let err: f64 = (0..3)
                .map(|c| (f64::from(p.0[c]) - f64::from(q.0[c])).abs())
                .sum::<f64>()
                / 3.0;
            let mut part = |k: usize| {
                sum[k] += err;
                count[k] += 1;
            };
            match (x, y) {
                (_, 0) => part(0),
                (_, y) if y == h - 1 => part(1),
                (0, _) => part(2),
                (x, _) if x == w - 1 => part(3),
                _ => part(4),
            }
        }
    }
    std::array::from_fn(|k| sum[k] / count[k] as f64)
}

#[test]
fn restored_borders_are_as_good_as_the_interior() {
    let dir = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/eval/test/degraded");
    for (name, extra) in [
        ("sde", vec!["--sampler", "mrs-sde"]),
        ("ode", vec!["--sampler", "mrs-ode"]),
        (
            "sde-tiled",
            vec!["--sampler", "mrs-sde", "--tile", "64", "--overlap", "16"],
        ),
        (
            "ode-tiled",
            vec!["--sampler", "mrs-ode", "--tile", "64", "--overlap", "16"],
        ),
    ] {
        let out = dir.path().join(name);
        let mut args = vec![
            "restore",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--nfe",
            "10",
            "--quiet",
        ];
        args.extend(extra);
        let (ok, text) = mrsampler(&args);
        assert!(ok, "{name}: {text}");
        let e = edge_errors(&out);
        for (k, edge) in ["top row", "bottom row", "left column", "right column"]
            .iter()
            .enumerate()
        {
            assert!(
                e[k] <= 1.3 * e[4],
                "{name}: {edge} error {:.2} levels, interior {:.2} (all: {e:?})",
                e[k],
                e[4]
            );
        }
    }
}
