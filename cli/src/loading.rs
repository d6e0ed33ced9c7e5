//! Loading networks: the device and dtype options, candle load options, ONNX models.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use clap::ValueEnum;
use mrsampler_models::{Checkpoint, LoadOptions, UpstreamOptions};

use crate::error::Result;

/// A dtype of weights and computation.
#[derive(Clone, Copy, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
    F64,
}

impl From<Precision> for DType {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
            Precision::F64 => DType::F64,
        }
    }
}

/// Whether a checkpoint holds DA-CLIP's image encoder (rather than a denoiser).
pub fn is_encoder(ckpt: &Checkpoint) -> bool {
    ckpt.contains("visual_control.conv1.weight")
}

/// Candle load options from the tool's `--options`, `--device` and `--dtype`.
pub fn load_options(options: Option<PathBuf>, device: &str, dtype: DType) -> Result<LoadOptions> {
    let device = parse_device(device)?;
    check_dtype(&device, dtype)?;
    Ok(LoadOptions {
        device,
        dtype,
        options: options.map(UpstreamOptions::load).transpose()?,
    })
}

/// Refuses a dtype the device cannot compute in, before anything is loaded: candle's CPU
/// matrix product has no bf16 kernel.
pub fn check_dtype(device: &Device, dtype: DType) -> Result<()> {
    if device.is_cpu() && dtype == DType::BF16 {
        return Err(
            "--dtype bf16: the CPU has no bf16 matrix product in this build; use --dtype \
                    f32 (fastest and most accurate on the CPU), f16, or bf16 on a GPU (--device \
                    cuda:N)"
                .into(),
        );
    }
    Ok(())
}

/// `cpu`, `cuda`, `cuda:N` or `metal`, with a clear error when the build lacks the backend.
pub fn parse_device(s: &str) -> Result<Device> {
    let unavailable = |what: &str, built: bool, feature: &str, e: candle_core::Error| {
        let hint = if built {
            let libraries = if what == "CUDA" {
                " CUDA builds also need the CUDA 13 libraries (cuBLAS, cuRAND, NVRTC) on \
                 LD_LIBRARY_PATH: docs/backends.md"
            } else {
                ""
            };
            format!("is a {what} device present and its driver installed?{libraries}")
        } else {
            format!("this build supports {what} only when built with `--features {feature}`")
        };
        Box::<dyn std::error::Error>::from(format!("device `{s}` is not available ({e}); {hint}"))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0)
            .map_err(|e| unavailable("Metal", cfg!(feature = "metal"), "metal", e)),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("device `{s}`: expected cuda:N with N a GPU index"))?,
                None => {
                    return Err(
                        format!("unknown device `{s}`; use cpu, cuda, cuda:N or metal").into(),
                    );
                }
            };
            Device::new_cuda(ordinal)
                .map_err(|e| unavailable("CUDA", cfg!(feature = "cuda"), "cuda", e))
        }
    }
}

/// An ONNX model with the tool's defaults (CPU, ONNX Runtime's thread count).
#[cfg(feature = "onnx")]
pub fn load_onnx(path: &Path, runtime: Option<PathBuf>) -> Result<mrsampler_models::OnnxNetwork> {
    mrsampler_models::OnnxNetwork::load(
        path,
        &mrsampler_models::OnnxOptions {
            runtime,
            ..Default::default()
        },
    )
    .map_err(onnx_hint)
}

/// The library's error, with the tool's flag for a runtime problem.
#[cfg(feature = "onnx")]
pub fn onnx_hint(e: mrsampler_models::Error) -> Box<dyn std::error::Error> {
    match e {
        mrsampler_models::Error::OnnxRuntime { .. } => {
            format!("{e} (with this tool: --onnxruntime PATH)").into()
        }
        e => e.into(),
    }
}

/// Refuses an ONNX model in a build without ONNX support.
#[cfg(not(feature = "onnx"))]
pub fn load_onnx(path: &Path, _: Option<PathBuf>) -> Result<std::convert::Infallible> {
    Err(format!(
        "{}: this mrsampler was built without ONNX support (the `onnx` feature)",
        path.display()
    )
    .into())
}
