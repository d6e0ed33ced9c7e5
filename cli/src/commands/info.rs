//! `mrsampler info`: a checkpoint's architecture, inferred configuration and parameter count
//! (a denoiser, or DA-CLIP's image encoder), or an ONNX model's inputs and output.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use mrsampler_models::{Checkpoint, DaClipEncoder, Network};

use crate::error::Result;
use crate::loading::{is_encoder, load_onnx, load_options};
use crate::sampling;

/// `info`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// A `.pth` state dict, a safetensors file or an ONNX model (`.onnx`: its inputs and
    /// output, as `--model` would take them).
    pub weights: PathBuf,
    /// An upstream option file (YAML) stating the configuration.
    #[arg(long)]
    pub options: Option<PathBuf>,
    /// ONNX Runtime's shared library (default: `ORT_DYLIB_PATH`), for an `.onnx` model.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

/// Runs `info`.
pub fn run(args: Args) -> Result<()> {
    let Args {
        weights,
        options,
        onnxruntime,
    } = args;
    if sampling::is_onnx(&weights) {
        return info_onnx(&weights, onnxruntime);
    }
    if onnxruntime.is_some() {
        return Err("--onnxruntime applies to .onnx models; leave it out".into());
    }
    let ckpt = Checkpoint::load(&weights)?;
    println!("{}", weights.display());
    println!("  format: {:?}, {} tensors", ckpt.format(), ckpt.len());
    if is_encoder(&ckpt) {
        let enc = DaClipEncoder::from_checkpoint(&ckpt, &Device::Cpu, DType::F32)?;
        println!("  DA-CLIP image encoder: {:?}", enc.config());
        println!("  parameters: {}", enc.parameter_count());
        return Ok(());
    }
    let net = Network::from_checkpoint(&ckpt, &load_options(options, "cpu", DType::F32)?)?;
    println!("  network: {}", net.config());
    println!("  parameters: {}", net.parameter_count());
    Ok(())
}

/// `info` for an ONNX model: its inputs and output as `--model` takes them.
fn info_onnx(path: &Path, runtime: Option<PathBuf>) -> Result<()> {
    #[cfg(feature = "onnx")]
    {
        let net = load_onnx(path, runtime)?;
        println!("{}", path.display());
        println!(
            "  ONNX model (run by ONNX Runtime)\n{}",
            indent(&net.describe())
        );
        if let Some((h, w)) = net.fixed_size() {
            println!("  fixed image size {h}×{w}: restore larger images with --tile {h}");
        }
        Ok(())
    }
    #[cfg(not(feature = "onnx"))]
    load_onnx(path, runtime).map(|_| ())
}

/// Every line of `text` indented by four spaces.
#[cfg_attr(not(feature = "onnx"), allow(dead_code))]
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
