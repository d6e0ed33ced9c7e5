//! `mrsampler net`: evaluates the network once on `.npy` inputs and writes its output, so a
//! conversion can be compared with the PyTorch module number for number (the porting check).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use mrsampler_models::Network;

use crate::arrays::{read_context_npy, read_image_npy};
use crate::error::Result;
use crate::files::write_atomically;
use crate::loading::load_onnx;
use crate::loading::{Precision, load_options};
use crate::sampling;

/// `net`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// A `.pth` state dict, a safetensors file or an ONNX model (`.onnx`, run by ONNX
    /// Runtime on the CPU).
    #[arg(long)]
    pub weights: PathBuf,
    /// ONNX Runtime's shared library (default: `ORT_DYLIB_PATH`), for an `.onnx` model.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// An upstream option file (YAML) stating the configuration.
    #[arg(long)]
    pub options: Option<PathBuf>,
    /// The state `x_t`, `[B, C, H, W]` or `[C, H, W]`.
    #[arg(long)]
    pub xt: PathBuf,
    /// The condition `μ` (the degraded image), same shape as `x_t`.
    #[arg(long)]
    pub mu: PathBuf,
    /// The time index (fractional allowed).
    #[arg(long, allow_negative_numbers = true)]
    pub t: f64,
    /// A DA-CLIP denoiser's image context, `[B, context_dim]` (or `[context_dim]`).
    #[arg(long)]
    pub image_context: Option<PathBuf>,
    /// A DA-CLIP denoiser's degradation context, `[B, context_dim]` (or `[context_dim]`).
    #[arg(long)]
    pub degra_context: Option<PathBuf>,
    /// Where to write the output `.npy` (float32).
    #[arg(long)]
    pub out: PathBuf,
    /// `cpu`, `cuda:N` or `metal`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and computation dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

/// Runs `net`.
pub fn run(args: Args) -> Result<()> {
    let Args {
        weights,
        onnxruntime,
        options,
        xt,
        mu,
        t,
        image_context,
        degra_context,
        out,
        device,
        dtype,
    } = args;
    if sampling::is_onnx(&weights) {
        return net_onnx(
            &weights,
            onnxruntime,
            &xt,
            &mu,
            t,
            image_context,
            degra_context,
            &out,
        );
    }
    if onnxruntime.is_some() {
        return Err("--onnxruntime applies to .onnx models; leave it out".into());
    }
    let opts = load_options(options, &device, dtype.into())?;
    let net = Network::load(&weights, &opts)?;
    let (x, three_d) = read_image_npy(&xt, &opts.device)?;
    let (m, _) = read_image_npy(&mu, &opts.device)?;
    let ic = image_context.map(|p| read_context_npy(&p)).transpose()?;
    let dc = degra_context.map(|p| read_context_npy(&p)).transpose()?;
    let start = Instant::now();
    let b = x.dim(0)?;
    let (x, m, times) = (
        &x.to_dtype(net.dtype())?,
        &m.to_dtype(net.dtype())?,
        &vec![t as f32; b],
    );
    let y = match &net {
        Network::UNet(u) if u.config().context_dim.is_some() => {
            let cond = u.condition(ic.as_ref(), dc.as_ref())?;
            u.forward_conditioned(x, m, times, &cond)?
        }
        _ if ic.is_some() || dc.is_some() => {
            return Err(format!(
                "{}: {} takes no contexts; leave --image-context and --degra-context out",
                weights.display(),
                net.config()
            )
            .into());
        }
        _ => net.forward(x, m, times)?,
    };
    let y = y.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let seconds = start.elapsed().as_secs_f64();
    let y = if three_d { y.squeeze(0)? } else { y };
    write_atomically(&out, |tmp| Ok(y.write_npy(tmp)?))?;
    eprintln!(
        "{}: {} at t = {t}, output {:?} in {seconds:.3} s -> {}",
        weights.display(),
        net.config(),
        y.dims(),
        out.display()
    );
    Ok(())
}

/// `net` for an ONNX model: one call through ONNX Runtime on the CPU.
#[allow(clippy::too_many_arguments)]
fn net_onnx(
    weights: &Path,
    runtime: Option<PathBuf>,
    xt: &Path,
    mu: &Path,
    t: f64,
    image_context: Option<PathBuf>,
    degra_context: Option<PathBuf>,
    out: &Path,
) -> Result<()> {
    #[cfg(feature = "onnx")]
    {
        use mrsampler::ScoreModel;
        let mut net = load_onnx(weights, runtime)?;
        let (x, three_d) = read_image_npy(xt, &Device::Cpu)?;
        let (m, _) = read_image_npy(mu, &Device::Cpu)?;
        match (image_context, degra_context) {
            (Some(ic), Some(dc)) => {
                net.set_contexts(&read_context_npy(&ic)?, &read_context_npy(&dc)?)?
            }
            (None, None) => {}
            _ => return Err("give both --image-context and --degra-context, or neither".into()),
        }
        let start = Instant::now();
        let y = net.predict(&x.to_dtype(DType::F32)?, &m.to_dtype(DType::F32)?, t)?;
        let seconds = start.elapsed().as_secs_f64();
        let y = if three_d { y.squeeze(0)? } else { y };
        write_atomically(out, |tmp| Ok(y.write_npy(tmp)?))?;
        eprintln!(
            "{}: ONNX Runtime at t = {t}, output {:?} in {seconds:.3} s -> {}",
            weights.display(),
            y.dims(),
            out.display()
        );
        Ok(())
    }
    #[cfg(not(feature = "onnx"))]
    {
        let _ = (runtime, xt, mu, t, image_context, degra_context, out);
        load_onnx(weights, None).map(|_| ())
    }
}
