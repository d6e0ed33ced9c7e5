//! `mrsampler restore` on small images with the models crate's random-weight parity networks:
//! formats, tiling, sharding, skipping, and every bad input refused without a partial output.

mod common;

use std::path::Path;

use common::mrsampler;
use image::{DynamicImage, ImageBuffer, LumaA, Rgb};

/// A parity case's path as a string argument.
fn case(name: &str) -> String {
    common::case(name).to_string_lossy().into_owned()
}

fn rgb(path: &Path, w: u32, h: u32) {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([(x * 5) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
    .save(path)
    .unwrap();
}

fn restore(inputs: &[&Path], out: &Path, extra: &[&str]) -> (bool, String) {
    let model = case("unet_nf4_d2.safetensors");
    let mut args = vec!["restore"];
    let owned: Vec<String> = inputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    args.extend(owned.iter().map(String::as_str));
    let o = out.to_string_lossy().into_owned();
    args.extend([
        "--out",
        &o,
        "--model",
        &model,
        "--preset",
        "ir-sde-deraining",
        "--nfe",
        "3",
        "--quiet",
    ]);
    args.extend_from_slice(extra);
    mrsampler(&args)
}

#[test]
fn restores_rgb_with_and_without_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("photo.png");
    rgb(&img, 40, 36);
    for (name, extra) in [
        ("whole", vec![]),
        (
            "tiled",
            vec!["--tile", "24", "--overlap", "8", "--tile-batch", "2"],
        ),
        (
            "ode",
            vec![
                "--sampler",
                "mrs-ode",
                "--order",
                "3",
                "--grid",
                "uniform-lambda",
            ],
        ),
        ("posterior", vec!["--sampler", "posterior"]),
    ] {
        let out = dir.path().join(name);
        let (ok, text) = restore(&[&img], &out, &extra);
        assert!(ok, "{name}: {text}");
        let restored = image::open(out.join("photo.png")).unwrap();
        assert_eq!((restored.width(), restored.height()), (40, 36), "{name}");
        assert!(matches!(restored, DynamicImage::ImageRgb8(_)), "{name}");
    }
}

/// A 16-bit gray image with alpha through a one-channel network: the depth and the alpha
/// plane come back unchanged.
#[test]
fn sixteen_bit_gray_with_alpha_keeps_depth_and_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scan.png");
    let buf: ImageBuffer<LumaA<u16>, Vec<u16>> = ImageBuffer::from_fn(24, 20, |x, y| {
        LumaA([(x * 2000) as u16, (y * 3000 + 7) as u16])
    });
    buf.save(&img).unwrap();
    let out = dir.path().join("out");
    let (ok, text) = mrsampler(&[
        "restore",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        &case("unet_nf4_d3_gray.safetensors"),
        "--preset",
        "ir-sde-deraining",
        "--nfe",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{text}");
    let restored = image::open(out.join("scan.png")).unwrap();
    let DynamicImage::ImageLumaA16(r) = restored else {
        panic!("expected 16-bit gray + alpha, got {:?}", restored.color());
    };
    for (a, b) in r.pixels().zip(buf.pixels()) {
        assert_eq!(a.0[1], b.0[1], "alpha passes through");
    }
}

/// `--shard K/N` takes every N-th file of the sorted inputs; `--skip-existing` leaves done
/// outputs alone.
#[test]
fn shards_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    for name in ["a", "b", "c", "d"] {
        rgb(&folder.join(format!("{name}.png")), 16, 16);
    }
    std::fs::write(folder.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("out");
    let (ok, text) = restore(&[&folder], &out, &["--shard", "2/3"]);
    assert!(ok, "{text}");
    let mut done: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    done.sort();
    assert_eq!(done, ["b.png"]);
    // Mark b as done; a full run skips it and writes the others.
    std::fs::write(out.join("b.png"), b"done").unwrap();
    let (ok, text) = restore(&[&folder], &out, &["--skip-existing"]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(out.join("b.png")).unwrap(), b"done");
    assert!(
        out.join("d.png").exists() && text.contains("skipped"),
        "{text}"
    );
}

/// Every bad input is an error that says what is wrong, and no output file is left behind.
#[test]
fn bad_inputs_are_refused_without_partial_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    rgb(&good, 16, 16);
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not a png").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let gray = dir.path().join("gray.png");
    ImageBuffer::from_fn(16, 16, |x, _| image::Luma([x as u8]))
        .save(&gray)
        .unwrap();
    let out = dir.path().join("out");
    let cases: Vec<(Vec<&Path>, Vec<&str>, &str)> = vec![
        (vec![&garbage], vec![], "cannot read the image"),
        (vec![&empty], vec![], "cannot read the image"),
        (vec![&gray], vec![], "takes 3-channel images"),
        (vec![&good], vec!["--device", "cuda:0"], "cuda"),
        (vec![&good], vec!["--shard", "3/2"], "--shard"),
        (
            vec![&good],
            vec!["--tile", "16", "--overlap", "16"],
            "tiling",
        ),
        (vec![&good], vec!["--grid", "spiral"], "time_schedule"),
        (
            vec![&good],
            vec!["--sampler", "mrs-sde", "--order", "3"],
            "order",
        ),
    ];
    for (inputs, extra, says) in cases {
        let (ok, text) = restore(&inputs, &out, &extra);
        assert!(!ok, "{extra:?}: should fail");
        assert!(
            text.to_lowercase().contains(&says.to_lowercase()),
            "{extra:?} should say {says:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
        if out.exists() {
            let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "{extra:?} left {left:?}");
        }
    }
    // A missing model file, and no schedule.
    let (ok, text) = mrsampler(&[
        "restore",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        "/no/such/model.pth",
        "--preset",
        "ir-sde-deraining",
    ]);
    assert!(!ok && text.contains("/no/such/model.pth"), "{text}");
    let (ok, text) = mrsampler(&[
        "restore",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        &case("unet_nf4_d2.safetensors"),
    ]);
    assert!(!ok && text.contains("--preset"), "{text}");
}

#[test]
fn without_a_model_the_shipped_network_restores() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("photo.png");
    rgb(&img, 20, 12);
    let out = dir.path().join("out");
    let (ok, text) = mrsampler(&[
        "restore",
        &img.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--nfe",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{text}");
    let restored = image::open(out.join("photo.png")).unwrap();
    assert_eq!((restored.width(), restored.height()), (20, 12));
}
