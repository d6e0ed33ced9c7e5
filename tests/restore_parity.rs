//! The Rust (candle) forward pass of the shipped restoration network equals the PyTorch forward
//! pass it was trained with, on the stored input (`assets/restore/parity.safetensors`,
//! written by `tools/train_restore.py`), within 1e-4.

#[path = "../examples/restore/net.rs"]
mod net;

use candle_core::{DType, Device};

#[test]
fn forward_matches_pytorch() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/restore");
    let device = Device::Cpu;
    let model = net::RestoreNet::load(&dir.join("model.safetensors"), &device).unwrap();
    let parity = candle_core::safetensors::load(dir.join("parity.safetensors"), &device).unwrap();
    let out = model
        .forward(&parity["x"], &parity["mu"], &parity["t"])
        .unwrap();
    let want = &parity["out"];
    assert_eq!(out.dims(), want.dims());
    let diff = (out - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(diff < 1e-4, "max |rust − torch| = {diff}");
}
