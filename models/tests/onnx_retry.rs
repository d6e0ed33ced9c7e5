//! A failed attempt to load ONNX Runtime is not remembered: a later call with a working
//! library succeeds (its own test binary, so that no other test has loaded the runtime first).
//! Needs the library like `models/tests/onnx.rs`.
#![cfg(feature = "onnx")]

mod common;

use std::path::PathBuf;

use mrsampler_models::{Error, OnnxNetwork, OnnxOptions};

#[test]
fn a_failed_load_can_be_retried() {
    if !common::onnx_runtime_available() {
        return;
    }
    let lib = std::env::var_os("ORT_DYLIB_PATH").expect("checked above");
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/difference_fixed16.onnx");
    let wrong = OnnxOptions {
        runtime: Some(PathBuf::from("/no/such/libonnxruntime.so")),
        ..OnnxOptions::default()
    };
    let err = OnnxNetwork::load(&model, &wrong).unwrap_err();
    assert!(
        matches!(&err, Error::OnnxRuntime { reason } if reason.contains("does not exist")),
        "{err}"
    );
    let right = OnnxOptions {
        runtime: Some(PathBuf::from(lib)),
        ..OnnxOptions::default()
    };
    OnnxNetwork::load(&model, &right).unwrap();
}
