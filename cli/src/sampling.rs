//! The samplers the tool offers, the schedule and the network as a score model: shared by
//! `restore` and `eval`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    FitTarget, GridSpec, Parameterization, Sampler, SamplerKind, SamplerSpec, ScoreModel,
};
use mrsampler_models::{
    Contexts, DaClip, DaClipEncoder, Mirrored, Network, TileSpec, Tiled, UpstreamOptions, preset,
};

use crate::error::Result;
use crate::loading::{Precision, load_options};
use crate::spec::{ToolSpec, parse_spec};

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

/// Parses `--sampler`: a [`SamplerKind`] name.
fn parse_kind(s: &str) -> std::result::Result<SamplerKind, String> {
    let names: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
    SamplerKind::ALL
        .into_iter()
        .find(|k| k.name() == s || (s == "euler-maruyama" && *k == SamplerKind::EulerMaruyama))
        .ok_or_else(|| format!("unknown sampler `{s}`; use one of {}", names.join(", ")))
}

/// `restore`'s sampler options: the fields of a [`SamplerSpec`] as flags. Every option acts or
/// is refused: the MR Sampler's options with a baseline, and sampler options next to a grid
/// file (which fixes them), are errors.
#[derive(clap::Args)]
pub struct SamplerChoice {
    /// The sampler: mrs-ode (default, or the grid file's), mrs-sde, posterior, euler,
    /// euler-ode, heun-ode, heun-sde.
    #[arg(long, value_parser = parse_kind)]
    sampler: Option<SamplerKind>,
    /// The MR Sampler's order: ODE 1–3, SDE 1–2 (default 2).
    #[arg(long)]
    order: Option<usize>,
    /// The MR Sampler's parameterization (default data).
    #[arg(long, value_parser = ["data", "noise"])]
    param: Option<String>,
    /// The MR Sampler's time grid: linspace (default), uniform-lambda, karras-n, karras-t,
    /// trailing, leading (a parameter in brackets: karras-t(5)); a list of times
    /// `[100,40,0]`; or a grid file from `mrsampler calibrate` (`….json`), which fixes the
    /// sampler and its NFE.
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
    /// The checks that need no schedule, so that a command can refuse a wrong flag before it
    /// spends seconds loading a network.
    pub fn check(&self) -> Result<()> {
        if self.nfe == Some(0) {
            return Err("--nfe 0: a sampler needs at least one network evaluation".into());
        }
        Ok(())
    }

    /// The configured sampler on `schedule`, or an error naming the flags that do not fit.
    pub fn build(&self, schedule: &IrSdeSchedule) -> Result<Box<dyn Sampler>> {
        // The flags among `flags` that were given.
        let given = |flags: &[(bool, &'static str)]| -> Vec<&'static str> {
            flags
                .iter()
                .filter_map(|&(given, flag)| given.then_some(flag))
                .collect()
        };
        self.check()?;
        let grid = match self.grid.as_deref() {
            Some(g) => Some(g.parse::<GridSpec>().map_err(|e| {
                format!(
                    "--grid {g}: {e}; or give a list of times [100,40,0], or a grid file \
                     (….json) written by `mrsampler calibrate`"
                )
            })?),
            None => None,
        };
        let (spec, nfe) = match grid {
            Some(GridSpec::File(file)) => {
                let given = given(&[
                    (self.sampler.is_some(), "--sampler"),
                    (self.order.is_some(), "--order"),
                    (self.param.is_some(), "--param"),
                ]);
                let spec = parse_spec(&file.to_string_lossy())?;
                if !given.is_empty() {
                    return Err(format!(
                        "{}: the grid file {} fixes the sampler ({}); leave {} out",
                        given.join(", "),
                        file.display(),
                        spec.solver_name(),
                        given.join(", ")
                    )
                    .into());
                }
                let steps = spec.calibrated_steps()?.unwrap_or_default();
                if let Some(n) = self.nfe.filter(|&n| n != steps) {
                    return Err(format!(
                        "--nfe {n}: the grid file {} has {steps} steps; leave --nfe out or \
                         calibrate for that NFE",
                        file.display()
                    )
                    .into());
                }
                (spec, steps)
            }
            grid => {
                let kind = self.sampler.unwrap_or(SamplerKind::MrsOde);
                let mrs_flags = given(&[
                    (self.order.is_some(), "--order"),
                    (self.param.is_some(), "--param"),
                    (grid.is_some(), "--grid"),
                ]);
                if !kind.is_mrs() && !mrs_flags.is_empty() {
                    return Err(format!(
                        "{}: {} are the MR Sampler's options; --sampler {} has none (use \
                         --sampler mrs-ode or mrs-sde, or leave them out)",
                        mrs_flags.join(", "),
                        mrs_flags.join(", "),
                        kind.name()
                    )
                    .into());
                }
                let order = self.order.unwrap_or(2);
                if kind.is_mrs() && !kind.orders().contains(&order) {
                    return Err(format!(
                        "--order {order}: {} takes orders {}–{}",
                        kind.name(),
                        kind.orders().start(),
                        kind.orders().end()
                    )
                    .into());
                }
                let spec = match kind.is_mrs() {
                    true => SamplerSpec {
                        param: match self.param.as_deref() {
                            Some("noise") => Parameterization::Noise,
                            _ => Parameterization::Data,
                        },
                        grid: grid.unwrap_or(GridSpec::Named(TimeGrid::Linspace)),
                        ..SamplerSpec::mrs(kind, order)
                    },
                    false => SamplerSpec::baseline(kind),
                };
                let nfe = match &spec.grid {
                    GridSpec::Times(times) if kind.is_mrs() => {
                        let steps = times.len().saturating_sub(1);
                        if let Some(n) = self.nfe.filter(|&n| n != steps) {
                            return Err(format!(
                                "--nfe {n}: the --grid list has {} times, so {steps} steps; \
                                 leave --nfe out",
                                times.len()
                            )
                            .into());
                        }
                        steps
                    }
                    _ => self.nfe.unwrap_or(10),
                };
                (spec, nfe)
            }
        };
        let bound = nfe_bound(schedule);
        if nfe > bound && !self.force {
            return Err(format!(
                "--nfe {nfe} is more than the schedule's T = {bound} steps (its full chain; the \
                 MR Sampler needs 5–20); pass --force to run it anyway"
            )
            .into());
        }
        spec.for_images(schedule, nfe)
    }
}

/// The tiling of `--tile SIZE [--overlap] [--tile-batch]` (defaults 32 and 16), `None`
/// without `--tile`.
pub fn tile_spec(
    tile: Option<usize>,
    overlap: Option<usize>,
    tile_batch: Option<usize>,
) -> Result<Option<TileSpec>> {
    tile.map(|size| TileSpec::new(size, overlap.unwrap_or(32), tile_batch.unwrap_or(16)))
        .transpose()
        .map_err(|e| format!("--tile/--overlap/--tile-batch: {e}").into())
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

    /// Whether it is an ONNX graph.
    pub fn is_onnx(&self) -> bool {
        match self {
            #[cfg(feature = "onnx")]
            Self::Onnx { .. } => true,
            _ => false,
        }
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

    fn predict_per_sample(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, mrsampler::ModelError> {
        match self {
            Self::Plain(n) => n.predict_per_sample(x, mu, t),
            Self::DaClip(d) => d.predict_per_sample(x, mu, t),
            #[cfg(feature = "onnx")]
            Self::Onnx { net, .. } => net.predict_per_sample(x, mu, t),
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

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.denoiser().device().clone()
    }

    /// Whether one call can evaluate samples at different times ([`ScoreModel::
    /// predict_per_sample`]): the candle networks, whole or tiled; not ONNX graphs (whose time
    /// input may be one value).
    pub fn takes_per_sample_times(&self) -> bool {
        !self.denoiser().is_onnx()
    }

    /// The per-image conditioning a batch of `mu` needs (DA-CLIP's contexts, one row per
    /// image), computed from each whole image.
    pub fn contexts(&self, mu: &Tensor) -> Result<Option<Contexts>> {
        match self.denoiser() {
            Denoiser::DaClip(d) => Ok(Some(d.encoder().contexts(mu)?)),
            _ => Ok(None),
        }
    }

    /// Pins `contexts` (one row per sample of the following calls), as
    /// [`contexts`](Self::contexts) made them.
    pub fn pin_contexts(&mut self, contexts: &Contexts) -> Result<()> {
        if let Denoiser::DaClip(d) = self.denoiser_mut() {
            d.use_contexts(contexts)?;
        }
        Ok(())
    }

    /// See [`Denoiser::prepare`].
    pub fn prepare(&mut self, mu: &Tensor) -> Result<()> {
        self.denoiser_mut().prepare(mu)
    }

    /// The network inside the margin and the tiling.
    fn denoiser(&self) -> &Denoiser {
        match self {
            Model::Whole(n) => n.inner(),
            Model::Tiled(t) => t.inner().inner(),
        }
    }

    fn denoiser_mut(&mut self) -> &mut Denoiser {
        match self {
            Model::Whole(n) => n.inner_mut(),
            Model::Tiled(t) => t.inner_mut().inner_mut(),
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

    fn predict_per_sample(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, mrsampler::ModelError> {
        match self {
            Model::Whole(n) => n.predict_per_sample(x, mu, t),
            Model::Tiled(n) => n.predict_per_sample(x, mu, t),
        }
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}
