//! `mrsampler`: run and convert published MR diffusion checkpoints.
//!
//! ```text
//! mrsampler info    WEIGHTS [--options YML]
//! mrsampler net     --weights WEIGHTS [--options YML] --xt X.npy --mu MU.npy --t T --out OUT.npy
//!                   [--image-context IC.npy --degra-context DC.npy]
//! mrsampler encode  --weights DACLIP --image IMG --out-image-context IC.npy
//!                   --out-degra-context DC.npy
//! mrsampler convert INPUT OUTPUT.safetensors [--options YML] [--dtype f32|f16|bf16]
//! mrsampler restore INPUT... --out DIR --model WEIGHTS (--preset NAME | --options YML)
//!                   [--clip DACLIP] [--sampler mrs-sde|mrs-ode|posterior|euler] [--nfe N] …
//! mrsampler eval    [--set test|val] [--samplers SPEC,…] [--nfe N,…] [--converged own|teacher] …
//! mrsampler calibrate --nfe K --out GRID.json [--sampler SPEC] [--images DIR] …
//! ```
//!
//! `net` is the porting check: it evaluates the network once on given inputs, so a
//! conversion can be compared with the PyTorch module number for number.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand, ValueEnum};
use mrsampler_models::{Checkpoint, DaClipEncoder, LoadOptions, Network, UpstreamOptions};

mod calibrate;
mod classical;
mod eval;
mod images;
mod metrics;
mod restore;
mod sampling;
mod shipped;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "mrsampler",
    version,
    about = "Mean-Reverting diffusion restoration tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a checkpoint's architecture, inferred configuration and parameter count (a
    /// denoiser, or DA-CLIP's image encoder).
    Info {
        /// A `.pth` state dict, a safetensors file or an ONNX model (`.onnx`: its inputs and
        /// output, as `--model` would take them).
        weights: PathBuf,
        /// An upstream option file (YAML) stating the configuration.
        #[arg(long)]
        options: Option<PathBuf>,
        /// ONNX Runtime's shared library (default: `ORT_DYLIB_PATH`), for an `.onnx` model.
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Evaluate the network once on `.npy` inputs and write its output (the porting check).
    Net {
        /// A `.pth` state dict, a safetensors file or an ONNX model (`.onnx`, run by ONNX
        /// Runtime on the CPU).
        #[arg(long)]
        weights: PathBuf,
        /// ONNX Runtime's shared library (default: `ORT_DYLIB_PATH`), for an `.onnx` model.
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// An upstream option file (YAML) stating the configuration.
        #[arg(long)]
        options: Option<PathBuf>,
        /// The state `x_t`, `[B, C, H, W]` or `[C, H, W]`.
        #[arg(long)]
        xt: PathBuf,
        /// The condition `μ` (the degraded image), same shape as `x_t`.
        #[arg(long)]
        mu: PathBuf,
        /// The time index (fractional allowed).
        #[arg(long, allow_negative_numbers = true)]
        t: f64,
        /// A DA-CLIP denoiser's image context, `[B, context_dim]` (or `[context_dim]`).
        #[arg(long)]
        image_context: Option<PathBuf>,
        /// A DA-CLIP denoiser's degradation context, `[B, context_dim]` (or `[context_dim]`).
        #[arg(long)]
        degra_context: Option<PathBuf>,
        /// Where to write the output `.npy` (float32).
        #[arg(long)]
        out: PathBuf,
        /// `cpu`, `cuda:N` or `metal`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Weights and computation dtype.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Precision,
    },
    /// Compute DA-CLIP's contexts of an image with its encoder, as upstream preprocesses it.
    Encode {
        /// DA-CLIP's checkpoint (`.pt` as released, or converted safetensors).
        #[arg(long)]
        weights: PathBuf,
        /// The degraded image (PNG, JPEG).
        #[arg(long)]
        image: PathBuf,
        /// Where to write the image context `.npy`, `[1, output_dim]` float32.
        #[arg(long)]
        out_image_context: PathBuf,
        /// Where to write the degradation context `.npy`, `[1, output_dim]` float32.
        #[arg(long)]
        out_degra_context: PathBuf,
        /// `cpu`, `cuda:N` or `metal`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Weights and computation dtype.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Precision,
    },
    /// Write a clean safetensors file (unwrapped, unprefixed, checked) from a checkpoint; of a
    /// DA-CLIP checkpoint, only the image encoder's tensors.
    Convert {
        /// A `.pth` state dict or a safetensors file.
        input: PathBuf,
        /// The safetensors file to write.
        output: PathBuf,
        /// An upstream option file (YAML) stating the configuration.
        #[arg(long)]
        options: Option<PathBuf>,
        /// The dtype to store.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Precision,
    },
    /// Restore image files (or folders of them) with a checkpoint and a sampler.
    Restore(restore::RestoreArgs),
    /// Compare samplers on (clean, degraded) image pairs: the shipped test set by default.
    Eval(eval::EvalArgs),
    /// Fit a sampler's time grid to the network on a few images; write it as a grid file for
    /// `restore --grid` and `eval --samplers`.
    Calibrate(calibrate::CalibrateArgs),
}

/// A dtype of weights and computation.
#[derive(Clone, Copy, ValueEnum)]
enum Precision {
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

/// mimalloc keeps the large tensor buffers of a batched evaluation mapped between network
/// calls; with the system allocator each call mapped and unmapped them afresh, and `eval`'s
/// default batch spent more time in the kernel than in the network (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info {
            weights,
            options,
            onnxruntime,
        } => {
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
        Command::Net {
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
        } => {
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
        Command::Encode {
            weights,
            image,
            out_image_context,
            out_degra_context,
            device,
            dtype,
        } => {
            let device = parse_device(&device)?;
            check_dtype(&device, dtype.into())?;
            let enc = DaClipEncoder::load(&weights, &device, dtype.into())?;
            let picture = images::read(&image)?;
            if picture.channels != 3 {
                return Err(format!(
                    "{}: the encoder takes RGB images; this one has {} channel(s)",
                    image.display(),
                    picture.channels
                )
                .into());
            }
            let start = Instant::now();
            let contexts = enc.contexts(&picture.tensor(&Device::Cpu, DType::F32)?)?;
            let seconds = start.elapsed().as_secs_f64();
            for (t, path) in [
                (&contexts.image, &out_image_context),
                (&contexts.degradation, &out_degra_context),
            ] {
                let t = t.to_device(&Device::Cpu)?;
                write_atomically(path, |tmp| Ok(t.write_npy(tmp)?))?;
            }
            eprintln!(
                "{}: contexts {:?} of {} in {seconds:.3} s -> {}, {}",
                weights.display(),
                contexts.image.dims(),
                image.display(),
                out_image_context.display(),
                out_degra_context.display()
            );
            Ok(())
        }
        Command::Convert {
            input,
            output,
            options,
            dtype,
        } => {
            let ckpt = Checkpoint::load(&input)?;
            if is_encoder(&ckpt) {
                let part = DaClipEncoder::compact(&ckpt)?;
                part.save_safetensors(&output, dtype.into())?;
                eprintln!(
                    "{} -> {}: DA-CLIP image encoder, {} of {} tensors",
                    input.display(),
                    output.display(),
                    part.len(),
                    ckpt.len()
                );
                return Ok(());
            }
            // Building the network checks every tensor, so the output is known to load.
            let net = Network::from_checkpoint(&ckpt, &load_options(options, "cpu", DType::F32)?)?;
            ckpt.save_safetensors(&output, dtype.into())?;
            eprintln!(
                "{} -> {}: {}, {} tensors, {} parameters",
                input.display(),
                output.display(),
                net.config(),
                ckpt.len(),
                net.parameter_count()
            );
            Ok(())
        }
        Command::Restore(args) => restore::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Calibrate(args) => calibrate::run(args),
    }
}

/// Whether a checkpoint holds DA-CLIP's image encoder (rather than a denoiser).
fn is_encoder(ckpt: &Checkpoint) -> bool {
    ckpt.contains("visual_control.conv1.weight")
}

/// Reads a `[B, D]` or `[D]` context array as `[B, D]` float32 on the CPU.
fn read_context_npy(path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = match t.rank() {
        2 => t,
        1 => t.unsqueeze(0)?,
        r => {
            return Err(format!(
                "{}: expected a [batch, context_dim] array, got rank {r} {:?}",
                path.display(),
                t.dims()
            )
            .into());
        }
    };
    Ok(t.to_dtype(DType::F32)?)
}

fn load_options(options: Option<PathBuf>, device: &str, dtype: DType) -> Result<LoadOptions> {
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
fn check_dtype(device: &Device, dtype: DType) -> Result<()> {
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

/// Every line of `text` indented by four spaces.
#[cfg_attr(not(feature = "onnx"), allow(dead_code))]
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(feature = "onnx")]
fn load_onnx(path: &Path, runtime: Option<PathBuf>) -> Result<mrsampler_models::OnnxNetwork> {
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
fn onnx_hint(e: mrsampler_models::Error) -> Box<dyn std::error::Error> {
    match e {
        mrsampler_models::Error::OnnxRuntime { .. } => {
            format!("{e} (with this tool: --onnxruntime PATH)").into()
        }
        e => e.into(),
    }
}

#[cfg(not(feature = "onnx"))]
fn load_onnx(path: &Path, _: Option<PathBuf>) -> Result<std::convert::Infallible> {
    Err(format!(
        "{}: this mrsampler was built without ONNX support (the `onnx` feature)",
        path.display()
    )
    .into())
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

/// `cpu`, `cuda`, `cuda:N` or `metal`, with a clear error when the build lacks the backend.
fn parse_device(s: &str) -> Result<Device> {
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

/// Reads a `[B, C, H, W]` or `[C, H, W]` array; returns it 4-D and whether it was 3-D.
fn read_image_npy(path: &Path, device: &Device) -> Result<(Tensor, bool)> {
    let t = Tensor::read_npy(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (t, three_d) = match t.rank() {
        4 => (t, false),
        3 => (t.unsqueeze(0)?, true),
        r => {
            return Err(format!(
                "{}: expected a [B, C, H, W] or [C, H, W] array, got rank {r} {:?}",
                path.display(),
                t.dims()
            )
            .into());
        }
    };
    Ok((t.to_device(device)?, three_d))
}

/// Writes through `write` to a temporary name beside `path`, then renames it into place, so
/// that an interrupted run never leaves a half-written output.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()).into())
}
