//! Helpers shared by the models crate's tests.

#![allow(dead_code)] // each test binary uses a subset

use std::path::PathBuf;

use candle_core::Tensor;

/// A file under `tests/data/`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `max |t|` of an f32 tensor.
pub fn max_abs(t: &Tensor) -> f64 {
    let m = t.abs().unwrap().max_all().unwrap();
    f64::from(m.to_scalar::<f32>().unwrap())
}

/// `max |a − b| / max |b|`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap()) / max_abs(b)
}

/// Whether the ONNX Runtime library is given (`ORT_DYLIB_PATH`, set by
/// `source tools/onnxruntime_env.sh`); without it an ONNX test reports that it was skipped,
/// unless `MRSAMPLER_ONNX_TESTS=1` (as in CI), where this panics.
pub fn onnx_runtime_available() -> bool {
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
