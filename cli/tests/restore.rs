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
        "--quiet",
    ]);
    if !extra.contains(&"--nfe") {
        args.extend(["--nfe", "3"]);
    }
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

/// The names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `--shard K/N` takes every N-th file of the sorted inputs; the shards together give
/// byte-identical outputs to one unsharded run, and adding a file changes no other output.
#[test]
fn shards_give_the_unsharded_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    for name in ["a", "b", "c", "d"] {
        rgb(&folder.join(format!("{name}.png")), 16, 16);
    }
    std::fs::write(folder.join("notes.txt"), "not an image").unwrap();
    let whole = dir.path().join("whole");
    let (ok, text) = restore(&[&folder], &whole, &[]);
    assert!(ok, "{text}");
    let sharded = dir.path().join("sharded");
    for shard in ["1/2", "2/2"] {
        let (ok, text) = restore(&[&folder], &sharded, &["--shard", shard]);
        assert!(ok, "{text}");
    }
    assert_eq!(listing(&sharded), ["a.png", "b.png", "c.png", "d.png"]);
    for name in listing(&whole) {
        let (a, b) = (whole.join(&name), sharded.join(&name));
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "{name}"
        );
    }
    // The same image restores the same when the folder gains a file before it.
    rgb(&folder.join("0.png"), 16, 16);
    let more = dir.path().join("more");
    let (ok, text) = restore(&[&folder], &more, &["--shard", "3/3"]);
    assert!(ok, "{text}");
    assert_eq!(listing(&more), ["b.png"]);
    assert_eq!(
        std::fs::read(more.join("b.png")).unwrap(),
        std::fs::read(whole.join("b.png")).unwrap()
    );
    // Equal images under other names get other noise.
    assert_ne!(
        std::fs::read(whole.join("a.png")).unwrap(),
        std::fs::read(whole.join("b.png")).unwrap()
    );
    // The environment's shard.
    let env = dir.path().join("env");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mrsampler"))
        .args([
            "restore",
            folder.to_str().unwrap(),
            "--out",
            env.to_str().unwrap(),
        ])
        .args([
            "--model",
            &case("unet_nf4_d2.safetensors"),
            "--preset",
            "ir-sde-deraining",
        ])
        .args(["--nfe", "3", "--quiet", "--shard", "auto"])
        .env("SLURM_ARRAY_TASK_ID", "2")
        .env("SLURM_ARRAY_TASK_MIN", "0")
        .env("SLURM_ARRAY_TASK_COUNT", "5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&env), ["b.png"]);
}

/// Existing outputs: refused by default (listed, nothing written), left alone with
/// `--skip-existing`, replaced with `--overwrite`.
#[test]
fn existing_outputs_are_refused_skipped_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    for name in ["a", "b"] {
        rgb(&folder.join(format!("{name}.png")), 16, 16);
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("b.png"), b"done").unwrap();
    let (ok, text) = restore(&[&folder], &out, &[]);
    assert!(
        !ok && text.contains("exist already") && text.contains("b.png"),
        "{text}"
    );
    assert!(
        text.contains("--skip-existing") && text.contains("--overwrite"),
        "{text}"
    );
    assert_eq!(listing(&out), ["b.png"], "nothing written before the check");
    let (ok, text) = restore(&[&folder], &out, &["--skip-existing"]);
    assert!(ok && text.contains("skipped"), "{text}");
    assert_eq!(std::fs::read(out.join("b.png")).unwrap(), b"done");
    assert!(out.join("a.png").exists());
    let (ok, text) = restore(&[&folder], &out, &["--overwrite"]);
    assert!(ok, "{text}");
    assert!(image::open(out.join("b.png")).is_ok(), "b.png was replaced");
    let (ok, text) = restore(&[&folder], &out, &["--overwrite", "--skip-existing"]);
    assert!(!ok && text.contains("--overwrite"), "{text}");
}

/// No output overwrites an input, and no two inputs share an output: both refused before any
/// work, with the ways out named; `--naming extension` and `--tree` are those ways.
#[test]
fn outputs_never_overwrite_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    rgb(&photos.join("a.png"), 16, 16);
    rgb(&photos.join("b.png"), 16, 16);
    let before = std::fs::read(photos.join("a.png")).unwrap();
    // The input folder as the output folder, also under another spelling.
    for out in [photos.clone(), photos.join("../photos")] {
        for extra in [&[][..], &["--overwrite"][..]] {
            let (ok, text) = restore(&[&photos], &out, extra);
            assert!(!ok && text.contains("overwrite input files"), "{text}");
            assert_eq!(std::fs::read(photos.join("a.png")).unwrap(), before);
        }
    }
    // a.jpg and a.png in one run.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    rgb(&mixed.join("a.png"), 16, 16);
    image::open(mixed.join("a.png"))
        .unwrap()
        .save(mixed.join("a.jpg"))
        .unwrap();
    let out = dir.path().join("out1");
    let (ok, text) = restore(&[&mixed], &out, &[]);
    assert!(!ok && text.contains("same output"), "{text}");
    assert!(
        text.contains("a.jpg") && text.contains("--naming extension"),
        "{text}"
    );
    assert!(!out.join("a.png").exists());
    let (ok, text) = restore(&[&mixed], &out, &["--naming", "extension"]);
    assert!(ok, "{text}");
    assert_eq!(listing(&out), ["a.jpg.png", "a.png.png"]);
    // Equal names in two folders.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    rgb(&other.join("a.png"), 16, 16);
    let out = dir.path().join("out2");
    let (ok, text) = restore(&[&photos, &other], &out, &[]);
    assert!(
        !ok && text.contains("same output") && text.contains("--tree"),
        "{text}"
    );
    let (ok, text) = restore(&[&photos, &other], &out, &["--tree"]);
    assert!(ok, "{text}");
    assert_eq!(listing(&out), ["other", "photos"]);
    assert_eq!(listing(&out.join("other")), ["a.png"]);
    assert_eq!(listing(&out.join("photos")), ["a.png", "b.png"]);
}

/// Every flag acts or is refused: the MR Sampler's options with a baseline, tiling options
/// without `--tile`, bf16 on the CPU (before the model is read), an NFE beyond the schedule.
#[test]
fn flags_that_would_do_nothing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("photo.png");
    rgb(&img, 16, 16);
    let out = dir.path().join("out");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--sampler", "posterior", "--order", "3"],
            vec!["--order", "posterior"],
        ),
        (
            vec!["--sampler", "posterior", "--grid", "karras-n"],
            vec!["--grid"],
        ),
        (
            vec!["--sampler", "euler", "--param", "noise"],
            vec!["--param"],
        ),
        (vec!["--overlap", "8"], vec!["--tile"]),
        (vec!["--tile-batch", "2"], vec!["--tile"]),
        (vec!["--dtype", "bf16"], vec!["bf16", "f32"]),
        (vec!["--nfe", "0"], vec!["--nfe 0"]),
        (
            vec!["--nfe", "100000"],
            vec!["--nfe 100000", "T = 100", "--force"],
        ),
        (
            vec!["--grid", "spiral"],
            vec!["--grid spiral", "uniform-lambda"],
        ),
        (
            vec!["--sampler", "mrs-sde", "--order", "3"],
            vec!["--order 3", "1–2"],
        ),
        (
            vec!["--tile", "2", "--overlap", "0"],
            vec!["--tile 2", "larger --tile"],
        ),
    ];
    for (extra, says) in cases {
        let (ok, text) = restore(&[&img], &out, &extra);
        assert!(!ok, "{extra:?} should fail: {text}");
        for s in says {
            assert!(text.contains(s), "{extra:?} should say {s:?}: {text}");
        }
        assert!(!out.exists() || listing(&out).is_empty(), "{extra:?} wrote");
    }
    // bf16 and --nfe 0 are refused before the model is read.
    for (flag, value, says) in [("--dtype", "bf16", "bf16"), ("--nfe", "0", "--nfe 0")] {
        let (ok, text) = mrsampler(&[
            "restore",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model",
            "/no/such/model.pth",
            "--preset",
            "ir-sde-deraining",
            flag,
            value,
        ]);
        assert!(
            !ok && text.contains(says) && !text.contains("/no/such"),
            "{flag} {value}: {text}"
        );
    }
}

/// Messages in the user's terms: image sizes as width × height, an existing file as `--out`,
/// an unreadable image named once.
#[test]
fn messages_name_the_flags_and_the_units() {
    let dir = tempfile::tempdir().unwrap();
    // The U-Net of depth 2 pads to a multiple of 4 by reflection: a side of 2 is too short.
    let thin = dir.path().join("thin.png");
    rgb(&thin, 2, 5);
    let out = dir.path().join("out");
    let (ok, text) = restore(&[&thin], &out, &[]);
    assert!(
        !ok && text.contains("2×5 pixels (width × height)"),
        "{text}"
    );
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let good = dir.path().join("good.png");
    rgb(&good, 16, 16);
    let (ok, text) = restore(&[&good], &file, &[]);
    assert!(!ok && text.contains("is a file; give a folder"), "{text}");
    let truncated = dir.path().join("truncated.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, text) = restore(&[&truncated], &out, &[]);
    assert!(!ok, "{text}");
    assert_eq!(text.matches("truncated.png").count(), 1, "{text}");
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
