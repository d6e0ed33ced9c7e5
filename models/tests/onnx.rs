//! `OnnxNetwork` against PyTorch's outputs, the candle port, closed forms and bad models.
//!
//! These tests need the ONNX Runtime library: `source tools/onnxruntime_env.sh` installs it and
//! sets `ORT_DYLIB_PATH` and `MRSAMPLER_ONNX_TESTS=1`. Without `ORT_DYLIB_PATH` they print that
//! they were skipped, unless `MRSAMPLER_ONNX_TESTS=1` is set (as in CI), where they fail.
#![cfg(feature = "onnx")]

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use mrsampler::{FitTarget, ScoreModel};
use mrsampler_models::{Error, LoadOptions, Network, OnnxNetwork, OnnxOptions};

use common::{data, max_abs, onnx_runtime_available as runtime_available, rel_err};

fn load(name: &str) -> Result<OnnxNetwork, Error> {
    OnnxNetwork::load(
        data(&format!("onnx/{name}")),
        &OnnxOptions {
            threads: Some(1),
            ..OnnxOptions::default()
        },
    )
}

/// The exported parity network through ONNX Runtime equals upstream PyTorch's output (stored
/// by `tools/upstream_parity.py`) and the candle port of the same weights.
#[test]
fn exported_nafnet_matches_pytorch_and_the_candle_port() {
    if !runtime_available() {
        return;
    }
    let mut onnx = load("nafnet_w8_e11.onnx").unwrap();
    assert_eq!(onnx.fit_target(), FitTarget::Noise);
    assert_eq!(onnx.fixed_size(), None);
    assert_eq!(onnx.channels(), Some(3));
    assert!(!onnx.takes_contexts());
    let io =
        candle_core::safetensors::load(data("nafnet_w8_e11.io.safetensors"), &Device::Cpu).unwrap();
    let port = Network::load(data("nafnet_w8_e11.safetensors"), &LoadOptions::default()).unwrap();
    let (xt, mu) = (&io["xt"], &io["mu"]);
    for (i, t) in [37.5, 12.0].into_iter().enumerate() {
        let y = onnx.predict(xt, mu, t).unwrap();
        let torch = &io[&format!("out_{i}")];
        let err = rel_err(&y, torch);
        assert!(err <= 1e-5, "t = {t}: ONNX Runtime vs PyTorch {err:.2e}");
        let candle = port.forward(xt, mu, &[t as f32; 2]).unwrap();
        let err = rel_err(&y, &candle);
        assert!(
            err <= 1e-4,
            "t = {t}: ONNX Runtime vs the candle port {err:.2e}"
        );
    }
    // Another dtype in, the same dtype out (computed in f32).
    let y64 = onnx
        .predict(
            &xt.to_dtype(DType::F64).unwrap(),
            &mu.to_dtype(DType::F64).unwrap(),
            37.5,
        )
        .unwrap();
    assert_eq!(y64.dtype(), DType::F64);
}

/// A graph with every axis fixed: exact output `x_t − μ`, a batch of 2 run as two calls, and
/// an image of another size refused with the tile hint.
#[test]
fn fixed_size_graph_runs_per_image_and_refuses_other_sizes() {
    if !runtime_available() {
        return;
    }
    let mut net = load("difference_fixed16.onnx").unwrap();
    assert_eq!(net.fixed_size(), Some((16, 16)));
    let x = Tensor::randn(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let mu = Tensor::randn(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let y = net.predict(&x, &mu, 10.0).unwrap();
    assert_eq!(max_abs(&(y - (&x - &mu).unwrap()).unwrap()), 0.0);

    let big = Tensor::zeros((1, 3, 20, 20), DType::F32, &Device::Cpu).unwrap();
    let msg = net.predict(&big, &big, 10.0).unwrap_err().to_string();
    assert!(
        msg.contains("16×16") && msg.contains("size 16"),
        "unexpected message: {msg}"
    );
    let gray = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let msg = net.predict(&gray, &gray, 10.0).unwrap_err().to_string();
    assert!(msg.contains("3-channel"), "unexpected message: {msg}");
}

#[test]
fn bad_models_are_refused_with_what_to_do() {
    if !runtime_available() {
        return;
    }
    let msg = load("two_inputs.onnx").unwrap_err().to_string();
    assert!(
        msg.contains("cannot tell its inputs' roles") && msg.contains("x_t"),
        "{msg}"
    );
    let msg = load("rank3_state.onnx").unwrap_err().to_string();
    assert!(msg.contains("rank-4"), "{msg}");

    // A truncated export.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data("onnx/nafnet_w8_e11.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = OnnxNetwork::load(&cut, &OnnxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::OnnxModel { .. }), "{err}");
    // Not a file at all.
    let err = OnnxNetwork::load(dir.path().join("none.onnx"), &OnnxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Contexts on a graph that takes none.
    let mut net = load("nafnet_w8_e11.onnx").unwrap();
    let c = Tensor::zeros((1, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(net.set_contexts(&c, &c).is_err());
}

/// The runtime is loaded once per process: another library path is refused, not mixed in.
#[test]
fn a_second_runtime_library_is_refused() {
    if !runtime_available() {
        return;
    }
    load("difference_fixed16.onnx").unwrap();
    let err = OnnxNetwork::load(
        data("onnx/difference_fixed16.onnx"),
        &OnnxOptions {
            runtime: Some(PathBuf::from("/elsewhere/libonnxruntime.so")),
            ..OnnxOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("already loaded"), "{err}");
}
