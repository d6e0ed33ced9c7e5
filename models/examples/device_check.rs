//! The GPU check's library half: the networks and the sampler on one device, against the CPU.
//!
//! ```text
//! cargo run --release -p mrsampler-models --features cuda --example device_check -- \
//!     --device cuda:0 [--sizes 512,1024] [--nfe 10] [--shipped assets/restore/model.safetensors]
//! ```
//!
//! Prints three markdown tables (`tools/gpu_check.sh` runs it on a GPU machine; with
//! `--device cpu` it is its own dry run):
//!
//! 1. **Parity**: each released architecture (IR-SDE U-Net nf 64 depth 4, Refusion NAFNet
//!    width 64, DA-CLIP's denoiser with random contexts, DA-CLIP's ViT-B/32 encoder) with
//!    random weights, and the shipped network from its file, evaluated on the CPU and on the
//!    device on the same input (64², the encoder 224²). Random weights are drawn on the host
//!    from seeds taken from the tensors' names, so both copies hold the same numbers. The
//!    error is `max |y_device − y_cpu| / max |y_cpu|`; the check passes at ≤ `1e-4` (f32: the
//!    devices sum in other orders, and cuBLAS may pick other algorithms).
//! 2. **Restore**: the default sampler (ODE-2, data form, linspace grid) at `--nfe` steps on a
//!    random `[1, 3, S, S]` image for each size, on the device: total time, the network's
//!    time (each evaluation synchronised with the device), and the sampler's share.
//! 3. **Conformance** (`--cases FILE...`): every shipped conformance vector replayed with the
//!    candle backend on the device, f64 and f32 (tolerance 1e-4 relative for f32, as in
//!    `tests/it/backends.rs`).
//!
//! Exits non-zero if a parity check or a conformance case fails.
//!
//! `device_check mosaic SIDE OUT.png IMAGE...` writes a `SIDE²` picture tiled from the given
//! images (repeated in order), the large inputs of the GPU check's `mrsampler restore` runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mrsampler::conformance::{Case, check, parse_file, run_case};
use mrsampler::schedule::IrSdeSchedule;
use mrsampler::{FitTarget, ModelError, MrSampler, PhiloxNoise, Sampler, ScoreModel};
use mrsampler_models::{
    ClipVisionConfig, ConditionalUNet, DaClipEncoder, LoadOptions, NafNetConfig, Network,
    NetworkConfig, UNetConfig,
};

/// Parity tolerance, relative to the output's largest magnitude (see the file comment).
const PARITY_TOL: f64 = 1e-4;
/// Conformance tolerance for f32 on the device (as `tests/it/backends.rs`).
const F32_TOL: f64 = 1e-4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    device: String,
    sizes: Vec<usize>,
    nfe: usize,
    shipped: Option<PathBuf>,
    cases: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        device: "cpu".into(),
        sizes: vec![512, 1024],
        nfe: 10,
        shipped: None,
        cases: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--device" => args.device = value()?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("--sizes: `{s}` is no size")))
                    .collect::<Result<_, _>>()?
            }
            "--nfe" => args.nfe = value()?.parse().map_err(|_| "--nfe: a count")?,
            "--shipped" => args.shipped = Some(value()?.into()),
            "--cases" => args
                .cases
                .extend(std::iter::from_fn(|| it.next()).map(PathBuf::from)),
            _ => return Err(format!("unknown argument `{a}`")),
        }
    }
    Ok(args)
}

fn parse_device(s: &str) -> Result<Device, BoxError> {
    Ok(match s {
        "cpu" => Device::Cpu,
        "metal" => Device::new_metal(0)?,
        _ => {
            let n = s
                .strip_prefix("cuda")
                .map(|r| r.trim_start_matches(':'))
                .ok_or(format!("unknown device `{s}`: cpu, cuda:N or metal"))?;
            Device::new_cuda(if n.is_empty() { 0 } else { n.parse()? })?
        }
    })
}

/// A network call as a `ScoreModel`, synchronised with its device and timed.
struct Timed<F> {
    forward: F,
    seconds: f64,
}

impl<F: FnMut(&Tensor, &Tensor, f64) -> Result<Tensor, ModelError>> ScoreModel<Tensor>
    for Timed<F>
{
    fn fit_target(&self) -> FitTarget {
        FitTarget::Noise
    }

    fn predict(&mut self, x: &Tensor, mu: &Tensor, t: f64) -> Result<Tensor, ModelError> {
        let start = Instant::now();
        let y = (self.forward)(x, mu, t)?;
        y.device().synchronize()?;
        self.seconds += start.elapsed().as_secs_f64();
        Ok(y)
    }
}

/// One network, buildable on any device with the same weights.
enum Arch {
    Plain(&'static str, NetworkConfig),
    DaClip,
    Encoder,
    Shipped(PathBuf),
}

impl Arch {
    fn name(&self) -> &'static str {
        match self {
            Arch::Plain(name, _) => name,
            Arch::DaClip => "DA-CLIP denoiser",
            Arch::Encoder => "DA-CLIP encoder",
            Arch::Shipped(_) => "shipped NAFNet",
        }
    }

    /// The network on `device`, as a forward `(x, μ, t) → y` over device tensors.
    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        device: &Device,
    ) -> Result<Box<dyn FnMut(&Tensor, &Tensor, f64) -> Result<Tensor, ModelError>>, BoxError> {
        Ok(match self {
            Arch::Plain(_, config) => {
                let net = Network::random(config.clone(), device, DType::F32)?;
                Box::new(move |x, mu, t| Ok(net.forward(x, mu, &[t as f32])?))
            }
            Arch::Shipped(path) => {
                let opts = LoadOptions {
                    device: device.clone(),
                    ..LoadOptions::default()
                };
                let net = Network::load(path, &opts)?;
                Box::new(move |x, mu, t| Ok(net.forward(x, mu, &[t as f32])?))
            }
            Arch::DaClip => {
                let config = UNetConfig::daclip(3, 3, 64, &[1, 2, 4, 8], 512, true, true);
                let net = ConditionalUNet::random(config, device, DType::F32)?;
                let ic = host_randn(&[1, 512], 11)?.to_device(device)?;
                let dc = host_randn(&[1, 512], 12)?.to_device(device)?;
                let cond = net.condition(Some(&ic), Some(&dc))?;
                Box::new(move |x, mu, t| Ok(net.forward_conditioned(x, mu, &[t as f32], &cond)?))
            }
            Arch::Encoder => {
                let enc = DaClipEncoder::random(ClipVisionConfig::vit_b_32(), device, DType::F32)?;
                // The encoder takes pixels only: its image context is the output compared.
                Box::new(move |x, _, _| Ok(enc.encode(x)?.image))
            }
        })
    }
}

/// A standard normal tensor drawn on the host (the same numbers for every device).
fn host_randn(shape: &[usize], seed: u64) -> Result<Tensor, BoxError> {
    let mut noise = PhiloxNoise::new(seed);
    let mut t = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
    mrsampler::NoiseSource::fill_standard_normal(&mut noise, &mut t, Default::default())?;
    Ok(t)
}

fn max_abs(t: &Tensor) -> Result<f64, BoxError> {
    Ok(t.abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

fn parity(arch: &Arch, device: &Device) -> Result<f64, BoxError> {
    let side = if matches!(arch, Arch::Encoder) {
        224
    } else {
        64
    };
    let x = host_randn(&[1, 3, side, side], 1)?;
    let mu = host_randn(&[1, 3, side, side], 2)?;
    let on_cpu = arch.build(&Device::Cpu)?(&x, &mu, 50.0)?;
    let on_device = arch.build(device)?(&x.to_device(device)?, &mu.to_device(device)?, 50.0)?
        .to_device(&Device::Cpu)?;
    Ok(max_abs(&(on_device - &on_cpu)?)? / max_abs(&on_cpu)?.max(f64::MIN_POSITIVE))
}

/// Restores a random image of side `size` with the default sampler; (total, network) seconds.
fn restore(arch: &Arch, device: &Device, size: usize, nfe: usize) -> Result<(f64, f64), BoxError> {
    let sampler =
        MrSampler::new(IrSdeSchedule::da_clip(), nfe)?.with_data_range(Some((0.0, 1.0)))?;
    let mut model = Timed {
        forward: arch.build(device)?,
        seconds: 0.0,
    };
    let mu = host_randn(&[1, 3, size, size], 3)?
        .to_device(device)?
        .affine(0.1, 0.5)?;
    // Warm-up: the device's kernels load and its allocator fills on the first call.
    model.predict(&mu, &mu, 50.0)?;
    model.seconds = 0.0;
    device.synchronize()?;
    let start = Instant::now();
    let out = sampler.sample(&mut model, &mu, None, &mut PhiloxNoise::new(7))?;
    out.x.device().synchronize()?;
    Ok((start.elapsed().as_secs_f64(), model.seconds))
}

/// Replays every case of `files` with the candle backend on `device` in `dtype`; failures.
fn conformance(
    files: &[PathBuf],
    device: &Device,
    dtype: DType,
) -> Result<(usize, Vec<String>), BoxError> {
    let proto = Tensor::zeros(1, dtype, device)?;
    let (mut n, mut failures) = (0, Vec::new());
    for file in files {
        for (i, raw) in parse_file(&std::fs::read_to_string(file)?)?
            .into_iter()
            .enumerate()
        {
            let name = Case::name_of(&raw, i);
            let mut case = Case::from_json(&raw).map_err(|e| format!("{name}: {e}"))?;
            if dtype == DType::F32 {
                case.tolerance = case.tolerance.max(F32_TOL);
            }
            let result = run_case(&case, &proto);
            failures.extend(
                check(&case, &result)
                    .into_iter()
                    .map(|m| format!("{name}: {m}")),
            );
            n += 1;
        }
    }
    Ok((n, failures))
}

/// Tiles `images` (repeated in order) into a `side²` RGB picture written to `out`.
fn mosaic(side: usize, out: &str, images: &[String]) -> Result<(), BoxError> {
    let tiles: Vec<image::RgbImage> = images
        .iter()
        .map(|p| Ok(image::open(p)?.to_rgb8()))
        .collect::<Result<_, BoxError>>()?;
    let first = tiles.first().ok_or("mosaic: give at least one image")?;
    let (tw, th) = (first.width() as usize, first.height() as usize);
    let side32 = u32::try_from(side)?;
    let mut picture = image::RgbImage::new(side32, side32);
    for (i, (tx, ty)) in (0..side.div_ceil(th))
        .flat_map(|r| (0..side.div_ceil(tw)).map(move |c| (c * tw, r * th)))
        .enumerate()
    {
        let tile = &tiles[i % tiles.len()];
        for (x, y, p) in tile.enumerate_pixels() {
            let (px, py) = (tx + x as usize, ty + y as usize);
            if px < side && py < side {
                picture.put_pixel(px as u32, py as u32, *p);
            }
        }
    }
    picture.save(out)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mosaic") {
        let side = args.get(1).and_then(|s| s.parse().ok());
        return match (side, args.get(2)) {
            (Some(side), Some(out)) => match mosaic(side, out, &args[3..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("device_check mosaic: {e}");
                    ExitCode::from(2)
                }
            },
            _ => {
                eprintln!("usage: device_check mosaic SIDE OUT.png IMAGE...");
                ExitCode::from(2)
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("device_check: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, BoxError> {
    let args = parse_args()?;
    let device = parse_device(&args.device)?;
    let mut archs = vec![
        Arch::Plain(
            "IR-SDE U-Net",
            NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 64, 4)),
        ),
        Arch::Plain(
            "Refusion NAFNet",
            NetworkConfig::NafNet(NafNetConfig::refusion()),
        ),
        Arch::DaClip,
    ];
    if let Some(path) = &args.shipped {
        archs.push(Arch::Shipped(path.clone()));
    }
    let mut ok = true;

    println!(
        "## Parity on {} against the CPU (f32, tolerance {PARITY_TOL:.0e})\n",
        args.device
    );
    println!("| network | input | max error / max output | pass |");
    println!("|---|---|---|---|");
    for arch in archs.iter().chain([&Arch::Encoder]) {
        let side = if matches!(arch, Arch::Encoder) {
            224
        } else {
            64
        };
        let err = parity(arch, &device)?;
        let pass = err <= PARITY_TOL;
        ok &= pass;
        println!(
            "| {} | {side}² | {err:.2e} | {} |",
            arch.name(),
            if pass { "yes" } else { "**no**" }
        );
    }

    println!(
        "\n## Restore on {} (ODE-2 data, linspace, {} NFE, f32)\n",
        args.device, args.nfe
    );
    println!(
        "| network | image | total (s) | network (s) | sampler (s) | sampler share | sampler per step (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for arch in &archs {
        for &size in &args.sizes {
            let (total, network) = restore(arch, &device, size, args.nfe)?;
            let sampler = (total - network).max(0.0);
            println!(
                "| {} | {size}² | {total:.3} | {network:.3} | {sampler:.3} | {:.1} % | {:.2} |",
                arch.name(),
                100.0 * sampler / total,
                1e3 * sampler / args.nfe as f64
            );
        }
    }

    if !args.cases.is_empty() {
        println!(
            "\n## Conformance vectors on {} (candle backend)\n",
            args.device
        );
        println!("| dtype | cases | failures |");
        println!("|---|---|---|");
        for dtype in [DType::F64, DType::F32] {
            let (n, failures) = conformance(&args.cases, &device, dtype)?;
            println!("| {dtype:?} | {n} | {} |", failures.len());
            for f in failures.iter().take(10) {
                eprintln!("{dtype:?}: {f}");
            }
            ok &= failures.is_empty();
        }
    }
    Ok(ok)
}
