//! The samplers the tool offers, the schedule and the network as a score model: shared by
//! `restore` and `eval`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{Device, Tensor};
use clap::ValueEnum;
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    Baseline, BaselineSampler, Calibrator, FitTarget, MrSampler, Parameterization, Sampler,
    ScoreModel, Solver,
};
use mrsampler_models::{
    DaClip, DaClipEncoder, Mirrored, Network, TileSpec, Tiled, UpstreamOptions, preset,
};

use crate::error::Result;
use crate::grid_file::GridFile;
use crate::loading::{Precision, load_options};

/// Which network to load and how: shared by `restore` and `eval`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The checkpoint (`.pth` or safetensors) of any architecture the models crate loads, or
    /// any network exported to ONNX (`.onnx`, run by ONNX Runtime; `docs/models.md`).
    /// Default: the shipped denoising network with its option file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// An upstream option file: its `network_G` states the network, its `sde` the schedule.
    #[arg(long)]
    options: Option<PathBuf>,
    /// The schedule of a released checkpoint family (`docs/models.md` lists them). Default
    /// for a DA-CLIP denoiser: `daclip`.
    #[arg(long)]
    preset: Option<String>,
    /// DA-CLIP's image encoder (its training checkpoint as released, or converted), needed
    /// with a DA-CLIP denoiser: it gives the denoiser each image's contexts.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// `cpu`, `cuda:N` or `metal`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Network weights and computation dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Precision,
    /// Mirror this many pixels around each image (or tile) before the network and crop its
    /// output back, so that edge pixels are predicted from image-like surroundings. Default: 8
    /// for the shipped network (trained on crops whose bottom and right edges were mostly
    /// followed by its own zero padding; without the margin its border pixels are restored
    /// worse), 0 for a `--model` (as upstream runs its checkpoints).
    #[arg(long)]
    border: Option<usize>,
    /// ONNX Runtime's shared library, for a `--model NET.onnx` (default: the `ORT_DYLIB_PATH`
    /// environment variable; `docs/models.md` gives three ways to get the library).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// What a `--model NET.onnx` predicts (an ONNX graph does not say): `noise` (default, as
    /// IR-SDE, Refusion and DA-CLIP networks), `data`, `velocity` or `score`.
    #[arg(long)]
    fit: Option<FitTarget>,
    /// Threads of one network call (ONNX Runtime's intra-op threads, or the pool candle's CPU
    /// kernels run on). Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
}

/// Whether `path` names an ONNX model (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The shipped network's mirrored margin (`ModelArgs::border`).
const SHIPPED_BORDER: usize = 8;

impl ModelArgs {
    /// The mirrored margin around each network input: `--border`, else the model's default.
    pub fn border(&self) -> usize {
        self.border.unwrap_or(if self.model.is_none() {
            SHIPPED_BORDER
        } else {
            0
        })
    }

    /// The checkpoint's path, or `shipped`.
    pub fn describe(&self) -> String {
        self.model
            .as_ref()
            .map_or_else(|| "shipped".to_owned(), |p| p.display().to_string())
    }

    /// The network and the schedule it was trained with.
    pub fn load(&self) -> Result<(Denoiser, IrSdeSchedule)> {
        if let Some(n) = self.threads {
            if n == 0 {
                return Err("--threads 0: give at least 1 (or leave it out: one per core)".into());
            }
            // Candle's CPU kernels run on rayon's global pool (a second call keeps the first).
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
        }
        if let Some(path) = self.model.as_ref().filter(|p| is_onnx(p)) {
            return self.load_onnx(path);
        }
        for (given, flag) in [
            (self.onnxruntime.is_some(), "--onnxruntime"),
            (self.fit.is_some(), "--fit"),
        ] {
            if given {
                return Err(format!(
                    "{flag} applies to ONNX models (--model NET.onnx); a checkpoint's network \
                     predicts the noise and runs in candle: leave {flag} out"
                )
                .into());
            }
        }
        let mut opts = load_options(self.options.clone(), &self.device, self.dtype.into())?;
        let (net, path) = match &self.model {
            Some(path) => (Network::load(path, &opts)?, path.clone()),
            None => {
                // The network inside the binary, with its own option file unless one is given.
                if opts.options.is_none() {
                    opts.options = Some(crate::shipped::options()?);
                }
                let ckpt = crate::shipped::checkpoint()?;
                (
                    Network::from_checkpoint(&ckpt, &opts)?,
                    PathBuf::from("(shipped network)"),
                )
            }
        };
        let takes_contexts = matches!(&net, Network::UNet(u) if u.config().context_dim.is_some());
        let (denoiser, family) = match (net, &self.clip) {
            (Network::UNet(unet), Some(clip)) if takes_contexts => {
                let encoder = DaClipEncoder::load(clip, &opts.device, opts.dtype)?;
                let pipeline = DaClip::new(*unet, encoder)?;
                (Denoiser::DaClip(Box::new(pipeline)), Some("daclip"))
            }
            (_, None) if takes_contexts => {
                return Err(format!(
                    "{}: a DA-CLIP denoiser (it takes image and degradation contexts); give its \
                     image encoder with --clip DACLIP_CHECKPOINT",
                    path.display()
                )
                .into());
            }
            (net, None) => (Denoiser::Plain(net), None),
            (net, Some(_)) => {
                return Err(format!(
                    "--clip: {} ({}) takes no contexts; leave --clip out",
                    path.display(),
                    net.config()
                )
                .into());
            }
        };
        let preset = self.preset.as_deref().or(family);
        Ok((denoiser, schedule(opts.options.as_ref(), preset)?))
    }

    /// An ONNX network run by ONNX Runtime (its tensors stay on the host; `--device` picks
    /// ONNX Runtime's execution provider).
    #[cfg(feature = "onnx")]
    fn load_onnx(&self, path: &Path) -> Result<(Denoiser, IrSdeSchedule)> {
        use mrsampler_models::{OnnxDevice, OnnxNetwork, OnnxOptions};
        if !matches!(self.dtype, Precision::F32) {
            return Err(format!(
                "--dtype: {} runs in its graph's float32; leave --dtype out",
                path.display()
            )
            .into());
        }
        let device = match self.device.as_str() {
            "cpu" => OnnxDevice::Cpu,
            "cuda" => OnnxDevice::Cuda(0),
            d => match d.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => OnnxDevice::Cuda(n),
                None => {
                    return Err(format!(
                        "--device {d}: an ONNX model runs on cpu or cuda:N (ONNX Runtime's \
                         CPU or CUDA execution provider)"
                    )
                    .into());
                }
            },
        };
        let options = self
            .options
            .as_ref()
            .map(UpstreamOptions::load)
            .transpose()?;
        let onnx = OnnxNetwork::load(
            path,
            &OnnxOptions {
                runtime: self.onnxruntime.clone(),
                fit_target: self.fit.unwrap_or(FitTarget::Noise),
                threads: self.threads,
                device,
            },
        )
        .map_err(crate::loading::onnx_hint)?;
        let encoder = match (&self.clip, onnx.takes_contexts()) {
            (Some(clip), true) => Some(Box::new(DaClipEncoder::load(
                clip,
                &Device::Cpu,
                candle_core::DType::F32,
            )?)),
            (None, true) => {
                return Err(format!(
                    "{}: its graph takes image and degradation contexts (a DA-CLIP-style \
                     network); give DA-CLIP's image encoder with --clip DACLIP_CHECKPOINT",
                    path.display()
                )
                .into());
            }
            (Some(_), false) => {
                return Err(format!(
                    "--clip: {} takes no contexts; leave --clip out",
                    path.display()
                )
                .into());
            }
            (None, false) => None,
        };
        let family = encoder.as_ref().map(|_| "daclip");
        let preset = self.preset.as_deref().or(family);
        let denoiser = Denoiser::Onnx {
            net: Box::new(onnx),
            encoder,
        };
        Ok((denoiser, schedule(options.as_ref(), preset)?))
    }

    #[cfg(not(feature = "onnx"))]
    fn load_onnx(&self, path: &Path) -> Result<(Denoiser, IrSdeSchedule)> {
        Err(format!(
            "{}: this mrsampler was built without ONNX support; build it with the `onnx` \
             feature (on by default)",
            path.display()
        )
        .into())
    }
}

/// The schedule's `T` (its full chain's step count), a sanity bound on `--nfe`.
fn nfe_bound(schedule: &IrSdeSchedule) -> usize {
    use mrsampler::schedule::Schedule;
    schedule.t_max().round() as usize
}

/// The named time grids `--grid` takes (`mrsampler::schedule::TimeGrid`'s names).
pub const GRID_NAMES: &str = "linspace, uniform-lambda, karras-n, karras-t, trailing, leading";

/// `restore`'s sampler options. Every option acts or is refused: the MR Sampler's options
/// with a baseline, and sampler options next to a grid file (which fixes them), are errors.
#[derive(clap::Args)]
pub struct SamplerChoice {
    /// The sampler (default: mrs-ode, the library's default, or the grid file's).
    #[arg(long, value_enum)]
    sampler: Option<SamplerKind>,
    /// The MR Sampler's order: ODE 1–3, SDE 1–2 (default 2).
    #[arg(long)]
    order: Option<usize>,
    /// The MR Sampler's parameterization (default data).
    #[arg(long, value_parser = ["data", "noise"])]
    param: Option<String>,
    /// The MR Sampler's time grid: linspace (default), uniform-lambda, karras-n, karras-t,
    /// trailing, leading; or a grid file from `mrsampler calibrate` (`….json`), which fixes
    /// the sampler and its NFE.
    #[arg(long)]
    grid: Option<String>,
    /// Network evaluations per image (default 10; a grid file's own with `--grid FILE`; at most
    /// the schedule's T without `--force`).
    #[arg(long)]
    nfe: Option<usize>,
    /// Allow `--nfe` above the schedule's T (slow, and no better than T steps in practice).
    #[arg(long)]
    force: bool,
}

impl SamplerChoice {
    /// The configured sampler on `schedule`, or an error naming the flags that do not fit.
    pub fn build(&self, schedule: IrSdeSchedule) -> Result<Box<dyn Sampler>> {
        // The flags among `flags` that were given.
        let given = |flags: &[(bool, &'static str)]| -> Vec<&'static str> {
            flags
                .iter()
                .filter_map(|&(given, flag)| given.then_some(flag))
                .collect()
        };
        let mrs_flags = given(&[
            (self.order.is_some(), "--order"),
            (self.param.is_some(), "--param"),
            (self.grid.is_some(), "--grid"),
        ]);
        if self.nfe == Some(0) {
            return Err("--nfe 0: a sampler needs at least one network evaluation".into());
        }
        let (spec, nfe) = match self.grid.as_deref().filter(|g| is_grid_file(g)) {
            Some(file) => {
                let given = given(&[
                    (self.sampler.is_some(), "--sampler"),
                    (self.order.is_some(), "--order"),
                    (self.param.is_some(), "--param"),
                ]);
                let spec: SamplerSpec = file.parse()?;
                if !given.is_empty() {
                    return Err(format!(
                        "{}: the grid file {file} fixes the sampler ({}); leave {} out",
                        given.join(", "),
                        spec.without_grid(),
                        given.join(", ")
                    )
                    .into());
                }
                let steps = spec.calibrated_steps()?.unwrap_or_default();
                if let Some(n) = self.nfe.filter(|&n| n != steps) {
                    return Err(format!(
                        "--nfe {n}: the grid file {file} has {steps} steps; leave --nfe out or                          calibrate for that NFE"
                    )
                    .into());
                }
                (spec, steps)
            }
            None => {
                let kind = self.sampler.unwrap_or(SamplerKind::MrsOde);
                if !matches!(kind, SamplerKind::MrsOde | SamplerKind::MrsSde)
                    && !mrs_flags.is_empty()
                {
                    return Err(format!(
                        "{}: {} are the MR Sampler's options; --sampler {} has none (use                          --sampler mrs-ode or mrs-sde, or leave them out)",
                        mrs_flags.join(", "),
                        mrs_flags.join(", "),
                        kind.to_possible_value().map_or_else(String::new, |v| v.get_name().to_owned())
                    )
                    .into());
                }
                let grid = self.grid.clone().unwrap_or_else(|| "linspace".to_owned());
                if grid.parse::<TimeGrid>().is_err() {
                    return Err(format!(
                        "--grid {grid}: unknown time grid; use {GRID_NAMES}, or a grid file                          (….json) written by `mrsampler calibrate`"
                    )
                    .into());
                }
                let spec = SamplerSpec {
                    kind,
                    order: self.order.unwrap_or(2),
                    param: match self.param.as_deref() {
                        Some("noise") => Parameterization::Noise,
                        _ => Parameterization::Data,
                    },
                    grid,
                };
                (spec, self.nfe.unwrap_or(10))
            }
        };
        let bound = nfe_bound(&schedule);
        if nfe > bound && !self.force {
            return Err(format!(
                "--nfe {nfe} is more than the schedule's T = {bound} steps (its full chain; the                  MR Sampler needs 5–20); pass --force to run it anyway"
            )
            .into());
        }
        // The solvers' order ranges, stated in the flag's terms before the library's check.
        let orders = match spec.kind {
            SamplerKind::MrsOde => 1..=3,
            SamplerKind::MrsSde => 1..=2,
            _ => spec.order..=spec.order,
        };
        if !orders.contains(&spec.order) {
            return Err(format!(
                "--order {}: {} takes orders {}–{}",
                spec.order,
                spec.without_grid(),
                orders.start(),
                orders.end()
            )
            .into());
        }
        spec.build(schedule, nfe)
    }
}

/// The sampler families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SamplerKind {
    /// The MR Sampler on the probability-flow ODE.
    MrsOde,
    /// The MR Sampler on the reverse SDE.
    MrsSde,
    /// Posterior sampling (strided), DA-CLIP's and IR-SDE's sampler.
    Posterior,
    /// Euler–Maruyama on the reverse SDE (strided).
    Euler,
}

/// A sampler configuration without its step count: `KIND[-ORDER][:PARAM][:GRID]`, e.g.
/// `mrs-sde-2`, `mrs-ode-3:noise:uniform-lambda`, `posterior`; GRID may be a grid file
/// written by `mrsampler calibrate` (`….json`), and the whole spec may be just that file
/// (the sampler it was calibrated for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerSpec {
    /// The family.
    pub kind: SamplerKind,
    /// The MR Sampler's order (ODE 1–3, SDE 1–2).
    pub order: usize,
    /// The MR Sampler's parameterization.
    pub param: Parameterization,
    /// The MR Sampler's time grid, as `TimeGrid` parses it, or the path of a grid file.
    pub grid: String,
}

impl SamplerSpec {
    /// Whether the sampler draws noise after its start state.
    pub fn is_stochastic(&self) -> bool {
        self.kind != SamplerKind::MrsOde
    }

    /// Whether it is one of the MR Sampler's configurations.
    pub fn is_mrs(&self) -> bool {
        matches!(self.kind, SamplerKind::MrsOde | SamplerKind::MrsSde)
    }

    /// The grid file, when the grid is one.
    pub fn grid_file(&self) -> Option<&Path> {
        is_grid_file(&self.grid).then(|| Path::new(&self.grid))
    }

    /// `KIND-ORDER:PARAM` (the MR Sampler) or `KIND` (a baseline).
    pub fn without_grid(&self) -> String {
        let param = match self.param {
            Parameterization::Noise => "noise",
            _ => "data",
        };
        match self.kind {
            SamplerKind::Posterior => "posterior".to_owned(),
            SamplerKind::Euler => "euler".to_owned(),
            SamplerKind::MrsOde => format!("mrs-ode-{}:{param}", self.order),
            SamplerKind::MrsSde => format!("mrs-sde-{}:{param}", self.order),
        }
    }
}

/// Whether a grid argument names a grid file rather than a grid.
fn is_grid_file(grid: &str) -> bool {
    grid.ends_with(".json")
}

impl FromStr for SamplerSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if is_grid_file(s) && !s.starts_with("mrs-") {
            // A grid file alone: the sampler it was calibrated for.
            let file = GridFile::load(Path::new(s)).map_err(|e| e.to_string())?;
            let mut spec: SamplerSpec = file.sampler.parse()?;
            spec.grid = s.to_owned();
            return Ok(spec);
        }
        let usage = || {
            format!(
                "sampler `{s}`: expected KIND[-ORDER][:PARAM][:GRID] with KIND mrs-ode, mrs-sde, \
                 posterior or euler, PARAM data or noise, GRID a time grid (linspace, \
                 uniform-lambda, karras-t, ...), e.g. mrs-sde-2:data:linspace"
            )
        };
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let (kind, order) = match head {
            "posterior" => (SamplerKind::Posterior, 1),
            "euler" => (SamplerKind::Euler, 1),
            _ => {
                let (k, order) = match head.rsplit_once('-') {
                    Some((k, o)) if o.chars().all(|c| c.is_ascii_digit()) && !o.is_empty() => {
                        (k, o.parse().map_err(|_| usage())?)
                    }
                    _ => (head, 2),
                };
                let kind = match k {
                    "mrs-ode" => SamplerKind::MrsOde,
                    "mrs-sde" => SamplerKind::MrsSde,
                    _ => return Err(usage()),
                };
                (kind, order)
            }
        };
        let param = match parts.next() {
            None | Some("data") => Parameterization::Data,
            Some("noise") => Parameterization::Noise,
            Some(_) => return Err(usage()),
        };
        let grid = parts.collect::<Vec<_>>().join(":");
        let grid = if grid.is_empty() {
            "linspace".to_owned()
        } else {
            grid
        };
        if is_grid_file(&grid) {
            let file = GridFile::load(Path::new(&grid)).map_err(|e| e.to_string())?;
            let head = s.rsplit_once(':').map_or(s, |(h, _)| h);
            let own: SamplerSpec = file.sampler.parse()?;
            let given: SamplerSpec = head.parse()?;
            if own != given {
                return Err(format!(
                    "sampler `{s}`: the grid file was calibrated for {}, not {}; give the file \
                     alone to use its sampler",
                    file.sampler,
                    given.without_grid()
                ));
            }
        } else {
            grid.parse::<TimeGrid>()
                .map_err(|e| format!("sampler `{s}`: {e}"))?;
        }
        if !matches!(kind, SamplerKind::MrsOde | SamplerKind::MrsSde) && s != head {
            return Err(usage());
        }
        Ok(Self {
            kind,
            order,
            param,
            grid,
        })
    }
}

impl fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.is_mrs() {
            true => write!(f, "{}:{}", self.without_grid(), self.grid),
            false => write!(f, "{}", self.without_grid()),
        }
    }
}

/// The schedule: from the option file's `sde` section, else the preset.
fn schedule(options: Option<&UpstreamOptions>, preset_name: Option<&str>) -> Result<IrSdeSchedule> {
    if let Some(sde) = options.and_then(|o| o.sde.as_ref()) {
        return Ok(sde.schedule()?);
    }
    match preset_name {
        Some(name) => Ok(preset(name)?.schedule()),
        None => Err(
            "the sampler needs the checkpoint's schedule: give --options (its `sde` section) or \
             --preset NAME (an unknown name lists the known ones)"
                .into(),
        ),
    }
}

/// The loaded network: a plain denoiser, or DA-CLIP's denoiser with its image encoder.
#[derive(Debug)]
pub enum Denoiser {
    /// IR-SDE's U-Net or Refusion's NAFNet.
    Plain(Network),
    /// DA-CLIP: contexts from each image, then its denoiser.
    DaClip(Box<DaClip>),
    /// A network exported to ONNX, run by ONNX Runtime; with DA-CLIP's image encoder when its
    /// graph takes contexts.
    #[cfg(feature = "onnx")]
    Onnx {
        /// The graph.
        net: Box<mrsampler_models::OnnxNetwork>,
        /// The encoder giving each image's contexts.
        encoder: Option<Box<DaClipEncoder>>,
    },
}

impl Denoiser {
    /// Image channels the network takes.
    pub fn channels(&self) -> usize {
        match self {
            Self::Plain(n) => n.channels(),
            Self::DaClip(d) => d.network().config().in_channels,
            #[cfg(feature = "onnx")]
            Self::Onnx { net, .. } => net.channels().unwrap_or(3),
        }
    }

    /// Refuses a `--tile` side the network cannot take (smaller than its padding allows).
    pub fn check_tile(&self, size: usize) -> Result<()> {
        let (multiple, min) = match self {
            Self::Plain(n) => (n.size_multiple(), n.min_side()),
            Self::DaClip(d) => {
                let m = 1 << d.network().config().depth();
                (m, m / 2 + 1)
            }
            #[cfg(feature = "onnx")]
            Self::Onnx { net, .. } => match net.fixed_size() {
                Some((h, w)) if (h, w) != (size, size) => {
                    return Err(format!(
                        "--tile {size}: {} fixes its input at {h}×{w}; use --tile {h} (square \
                         graphs only) and --border 0",
                        net.path().display()
                    )
                    .into());
                }
                _ => (1, 1),
            },
        };
        if size < min {
            return Err(format!(
                "--tile {size}: too small for this network, which pads tiles to a multiple of \
                 {multiple}; use a larger --tile (at least {min}; a multiple of {multiple}, e.g. \
                 {}, needs no padding)",
                (multiple * 32).max(256)
            )
            .into());
        }
        Ok(())
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        match self {
            Self::Plain(n) => n.device(),
            Self::DaClip(d) => d.device(),
            #[cfg(feature = "onnx")]
            Self::Onnx { .. } => &Device::Cpu,
        }
    }

    /// The per-image work before sampling the whole image `mu` (DA-CLIP: its contexts, from
    /// the whole image even when the network then sees tiles).
    pub fn prepare(&mut self, mu: &Tensor) -> Result<()> {
        match self {
            Self::DaClip(d) => {
                // Pinned: tiles see parts of `mu`, and must use the whole image's contexts.
                let contexts = d.encoder().contexts(mu)?;
                d.use_contexts(&contexts)?;
            }
            #[cfg(feature = "onnx")]
            Self::Onnx {
                net,
                encoder: Some(encoder),
            } => {
                let contexts = encoder.contexts(mu)?;
                net.set_contexts(&contexts.image, &contexts.degradation)?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl ScoreModel<Tensor> for Denoiser {
    fn fit_target(&self) -> FitTarget {
        match self {
            #[cfg(feature = "onnx")]
            Self::Onnx { net, .. } => net.fit_target(),
            _ => FitTarget::Noise,
        }
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, mrsampler::ModelError> {
        match self {
            Self::Plain(n) => n.predict(x, mu, t),
            Self::DaClip(d) => d.predict(x, mu, t),
            #[cfg(feature = "onnx")]
            Self::Onnx { net, .. } => net.predict(x, mu, t),
        }
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}

/// A model that adds up the wall time of its evaluations, each synchronised with its device
/// (on a GPU, candle's operations return before they finish).
pub struct Timed<'a, M> {
    inner: &'a mut M,
    /// Time spent in the model so far.
    pub spent: std::time::Duration,
}

impl<'a, M> Timed<'a, M> {
    /// Times `inner`'s evaluations.
    pub fn new(inner: &'a mut M) -> Self {
        Self {
            inner,
            spent: std::time::Duration::ZERO,
        }
    }
}

impl<M: ScoreModel<Tensor>> ScoreModel<Tensor> for Timed<'_, M> {
    fn fit_target(&self) -> FitTarget {
        self.inner.fit_target()
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, mrsampler::ModelError> {
        let start = std::time::Instant::now();
        let out = self.inner.predict(x, mu, t)?;
        out.device().synchronize()?;
        self.spent += start.elapsed();
        Ok(out)
    }

    fn input_rank(&self) -> Option<usize> {
        self.inner.input_rank()
    }
}

/// The network on the whole image, or on tiles, each with its mirrored margin.
pub enum Model {
    /// One network call per evaluation.
    Whole(Mirrored<Denoiser>),
    /// Overlapping tiles, batched.
    Tiled(Tiled<Mirrored<Denoiser>>),
}

impl Model {
    /// `net` with a mirrored margin of `border` pixels around the image (or each tile of
    /// `tiles`).
    pub fn new(net: Denoiser, border: usize, tiles: Option<TileSpec>) -> Self {
        let net = Mirrored::new(net, border);
        match tiles {
            Some(spec) => Model::Tiled(Tiled::new(net, spec)),
            None => Model::Whole(net),
        }
    }

    /// See [`Denoiser::prepare`].
    pub fn prepare(&mut self, mu: &Tensor) -> Result<()> {
        match self {
            Model::Whole(d) => d.inner_mut().prepare(mu),
            Model::Tiled(t) => t.inner_mut().inner_mut().prepare(mu),
        }
    }
}

impl ScoreModel<Tensor> for Model {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Noise
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, mrsampler::ModelError> {
        match self {
            Model::Whole(n) => n.predict(x, mu, t),
            Model::Tiled(n) => n.predict(x, mu, t),
        }
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}

impl SamplerSpec {
    /// The sampler `self` names, with `nfe` evaluations on `schedule`, its output clamped to
    /// `[0, 1]`.
    pub fn build(&self, schedule: IrSdeSchedule, nfe: usize) -> Result<Box<dyn Sampler>> {
        let range = Some((0.0, 1.0));
        if let Some(mrs) = self.build_mrs(schedule.clone(), nfe)? {
            return Ok(Box::new(mrs));
        }
        let kind = match self.kind {
            SamplerKind::Posterior => Baseline::Posterior,
            _ => Baseline::EulerMaruyama,
        };
        Ok(Box::new(
            BaselineSampler::new(schedule, kind, nfe)?.with_data_range(range)?,
        ))
    }

    /// The MR Sampler `self` names (`None` for a baseline), as [`build`](Self::build).
    pub fn build_mrs(&self, schedule: IrSdeSchedule, nfe: usize) -> Result<Option<MrSampler>> {
        let solver = match self.kind {
            SamplerKind::MrsOde => Solver::ode(self.order),
            SamplerKind::MrsSde => Solver::sde(self.order),
            SamplerKind::Posterior | SamplerKind::Euler => return Ok(None),
        };
        let grid = match self.grid_file() {
            Some(path) => {
                let file = GridFile::load(path)?;
                file.check_schedule(&schedule, path)?;
                if file.steps != nfe {
                    return Err(format!(
                        "{}: the grid has {} steps; {nfe} were asked for (a calibrated grid \
                         runs at the NFE it was calibrated for)",
                        path.display(),
                        file.steps
                    )
                    .into());
                }
                TimeGrid::Custom(file.times)
            }
            None => self.grid.parse::<TimeGrid>()?,
        };
        Ok(Some(
            MrSampler::new(schedule, nfe)?
                .with_solver(solver)?
                .with_parameterization(self.param)?
                .with_grid(grid)?
                .with_data_range(Some((0.0, 1.0)))?,
        ))
    }

    /// The converged reference of `self`'s rows at `nfe` (an MR Sampler; `None` for a
    /// baseline): the MR Sampler at `converged_nfe` on its grid, or with `teacher` on the
    /// calibration teacher grid at `nfe` (every named grid at `nfe` nests in it), or, for a
    /// calibrated grid, on the teacher's grid it was chosen from.
    pub fn reference(
        &self,
        schedule: IrSdeSchedule,
        nfe: usize,
        converged_nfe: usize,
        teacher: bool,
    ) -> Result<Option<MrSampler>> {
        let steps = self.calibrated_steps()?.unwrap_or(nfe);
        let Some(own) = self.build_mrs(schedule.clone(), steps)? else {
            return Ok(None);
        };
        let times = match self.grid_file() {
            Some(path) => Some(GridFile::load(path)?.teacher_grid),
            None if teacher => Some(Calibrator::new(nfe)?.teacher_grid(&own)?),
            None => None,
        };
        match times {
            Some(times) => Ok(Some(own.with_grid(TimeGrid::Custom(times))?)),
            None => self.build_mrs(schedule, converged_nfe),
        }
    }

    /// The step count of a calibrated spec's rows, `None` for others.
    pub fn calibrated_steps(&self) -> Result<Option<usize>> {
        self.grid_file()
            .map(|p| GridFile::load(p).map(|f| f.steps))
            .transpose()
    }
}
