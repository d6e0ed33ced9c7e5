//! `--model NET.onnx`: the same weights through ONNX Runtime and through candle restore the same
//! image; `info` and `net` read ONNX models; a missing runtime and misplaced options are refused.
//!
//! Needs the ONNX Runtime library (`source tools/onnxruntime_env.sh`; see `models/tests/onnx.rs`
//! for how a missing library skips or fails these tests).
#![cfg(feature = "onnx")]

mod common;

use std::process::Command;

use common::{case, mrsampler, rgb};

fn runtime_available() -> bool {
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        return true;
    }
    assert!(
        std::env::var("MRSAMPLER_ONNX_TESTS").as_deref() != Ok("1"),
        "MRSAMPLER_ONNX_TESTS=1 but ORT_DYLIB_PATH is not set: source tools/onnxruntime_env.sh"
    );
    eprintln!("ONNX test skipped: no ORT_DYLIB_PATH (source tools/onnxruntime_env.sh)");
    false
}

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn onnx_and_candle_restore_the_same_image() {
    if !runtime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    rgb(&input, 23, 17, 3);
    let mut pixels = Vec::new();
    for (model, out) in [
        ("onnx/nafnet_w8_e11.onnx", "via_onnx"),
        ("nafnet_w8_e11.safetensors", "via_candle"),
    ] {
        let out = dir.path().join(out);
        let (ok, text) = mrsampler(&[
            "restore",
            &s(&input),
            "--out",
            &s(&out),
            "--model",
            &s(&case(model)),
            "--preset",
            "refusion-deraining",
            "--nfe",
            "5",
            "--quiet",
        ]);
        assert!(ok, "{model}: {text}");
        pixels.push(
            image::open(out.join("in.png"))
                .unwrap()
                .to_rgb8()
                .into_raw(),
        );
    }
    let worst = pixels[0]
        .iter()
        .zip(&pixels[1])
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    // The network outputs agree to ~1e-5 relative; after 5 steps and 8-bit rounding at most
    // one level may differ.
    assert!(worst <= 1, "largest pixel difference {worst}/255");
}

#[test]
fn info_lists_an_onnx_models_inputs() {
    if !runtime_available() {
        return;
    }
    let (ok, text) = mrsampler(&["info", &s(&case("onnx/difference_fixed16.onnx"))]);
    assert!(ok, "{text}");
    assert!(
        text.contains("x_t") && text.contains("[1, 3, 16, 16]"),
        "{text}"
    );
    assert!(text.contains("--tile 16"), "{text}");
    let (ok, text) = mrsampler(&["info", &s(&case("onnx/two_inputs.onnx"))]);
    assert!(!ok && text.contains("name them x_t"), "{text}");
}

#[test]
fn a_missing_runtime_says_how_to_get_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_mrsampler"))
        .args(["info", &s(&case("onnx/nafnet_w8_e11.onnx"))])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("ORT_DYLIB_PATH") && text.contains("pip install onnxruntime"),
        "{text}"
    );
    let (ok, text) = mrsampler(&[
        "info",
        &s(&case("onnx/nafnet_w8_e11.onnx")),
        "--onnxruntime",
        "/no/such/libonnxruntime.so",
    ]);
    assert!(!ok && text.contains("does not exist"), "{text}");
}

#[test]
fn onnx_options_are_refused_for_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    rgb(&input, 16, 16, 1);
    for flag in [["--fit", "data"], ["--onnxruntime", "/x.so"]] {
        let (ok, text) = mrsampler(&[
            "restore",
            &s(&input),
            "--out",
            &s(&dir.path().join("out")),
            "--model",
            &s(&case("nafnet_w8_e11.safetensors")),
            "--preset",
            "refusion-deraining",
            flag[0],
            flag[1],
        ]);
        assert!(!ok && text.contains("applies to ONNX models"), "{text}");
    }
}

#[test]
fn net_runs_an_onnx_model_like_pytorch() {
    if !runtime_available() {
        return;
    }
    // The parity case's first image and upstream's output at t = 37.5, through `.npy` files.
    let io = candle_core::safetensors::load(
        case("nafnet_w8_e11.io.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (xt, mu, out) = (
        dir.path().join("xt.npy"),
        dir.path().join("mu.npy"),
        dir.path().join("out.npy"),
    );
    io["xt"].write_npy(&xt).unwrap();
    io["mu"].write_npy(&mu).unwrap();
    let (ok, text) = mrsampler(&[
        "net",
        "--weights",
        &s(&case("onnx/nafnet_w8_e11.onnx")),
        "--xt",
        &s(&xt),
        "--mu",
        &s(&mu),
        "--t",
        "37.5",
        "--out",
        &s(&out),
    ]);
    assert!(ok, "{text}");
    let y = candle_core::Tensor::read_npy(&out).unwrap();
    let torch = &io["out_0"];
    let diff = (&y - torch).unwrap().abs().unwrap().max_all().unwrap();
    let scale = torch.abs().unwrap().max_all().unwrap();
    let rel = diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap();
    assert!(
        rel <= 1e-5,
        "ONNX Runtime through `net` vs PyTorch: {rel:.2e}"
    );
}
