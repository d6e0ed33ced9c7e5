//! `mrsampler restore`: restore image files with a checkpoint and a sampler.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::schedule::{IrSdeSchedule, TimeGrid};
use mrsampler::{
    Baseline, BaselineSampler, MrSampler, Parameterization, PhiloxNoise, Sample, Sampler,
    ScoreModel, Solver, StepView,
};
use mrsampler_models::{Network, TileSpec, Tiled, UpstreamOptions, preset};

use crate::images::{self, Picture};
use crate::{Precision, Result, load_options};

/// The samplers `restore` offers.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplerKind {
    /// The MR Sampler on the probability-flow ODE.
    MrsOde,
    /// The MR Sampler on the reverse SDE.
    MrsSde,
    /// Posterior sampling (strided).
    Posterior,
    /// Euler–Maruyama on the reverse SDE (strided).
    Euler,
}

/// `restore`'s options.
#[derive(Args)]
pub struct RestoreArgs {
    /// Image files (PNG, JPEG; 8 or 16 bits; gray or RGB, alpha passed through) or folders of
    /// them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The folder the restored PNG files are written to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The checkpoint (`.pth` or safetensors) of any architecture the models crate loads.
    #[arg(long)]
    model: PathBuf,
    /// An upstream option file: its `network_G` states the network, its `sde` the schedule.
    #[arg(long)]
    options: Option<PathBuf>,
    /// The schedule of a released checkpoint family (`docs/models.md` lists them).
    #[arg(long)]
    preset: Option<String>,
    /// The sampler.
    #[arg(long, value_enum, default_value = "mrs-sde")]
    sampler: SamplerKind,
    /// The MR Sampler's order (ODE 1–3, SDE 1–2).
    #[arg(long, default_value_t = 2)]
    order: usize,
    /// The MR Sampler's parameterization.
    #[arg(long, value_parser = ["data", "noise"], default_value = "data")]
    param: String,
    /// The MR Sampler's time grid (linspace, uniform-lambda, karras-n, karras-t, trailing,
    /// leading).
    #[arg(long, default_value = "linspace")]
    grid: String,
    /// Network evaluations per image.
    #[arg(long, default_value_t = 10)]
    nfe: usize,
    /// Seed of the prior draw and the SDE noise (per image: seed + the image's index).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `cpu`, `cuda:N` or `metal`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Network weights and computation dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Precision,
    /// Evaluate the network on tiles of this side (pixels) when the image is larger; the whole
    /// image otherwise.
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap of neighbouring tiles (pixels).
    #[arg(long, default_value_t = 32)]
    overlap: usize,
    /// Most tiles per network call.
    #[arg(long, default_value_t = 16)]
    tile_batch: usize,
    /// `K/N`: restore only every N-th input, starting with the K-th (1-based), so N processes
    /// split a folder.
    #[arg(long)]
    shard: Option<String>,
    /// Leave inputs whose output exists alone.
    #[arg(long)]
    skip_existing: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Parses `K/N` (1 ≤ K ≤ N).
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || format!("--shard {s}: expected K/N with 1 <= K <= N, e.g. 2/4");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad().into());
    }
    Ok((k, n))
}

/// The schedule: from the option file's `sde`, else the preset.
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

/// The network on the whole image, or on tiles.
enum Model {
    Whole(Network),
    Tiled(Tiled<Network>),
}

impl ScoreModel<Tensor> for Model {
    fn fit_target(&self) -> mrsampler::FitTarget {
        mrsampler::FitTarget::Noise
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

enum Configured {
    Mrs(MrSampler),
    Baseline(BaselineSampler),
}

impl Configured {
    fn build(args: &RestoreArgs, schedule: IrSdeSchedule) -> Result<Self> {
        let range = Some((0.0, 1.0));
        Ok(match args.sampler {
            SamplerKind::MrsOde | SamplerKind::MrsSde => {
                let solver = match args.sampler {
                    SamplerKind::MrsOde => Solver::ode(args.order),
                    _ => Solver::sde(args.order),
                };
                let param = match args.param.as_str() {
                    "noise" => Parameterization::Noise,
                    _ => Parameterization::Data,
                };
                Configured::Mrs(
                    MrSampler::new(schedule, args.nfe)?
                        .with_solver(solver)?
                        .with_parameterization(param)?
                        .with_grid(args.grid.parse::<TimeGrid>()?)?
                        .with_data_range(range)?,
                )
            }
            SamplerKind::Posterior | SamplerKind::Euler => {
                let kind = match args.sampler {
                    SamplerKind::Posterior => Baseline::Posterior,
                    _ => Baseline::EulerMaruyama,
                };
                Configured::Baseline(
                    BaselineSampler::new(schedule, kind, args.nfe)?.with_data_range(range)?,
                )
            }
        })
    }

    fn run<M: ScoreModel<Tensor>>(
        &self,
        model: &mut M,
        mu: &Tensor,
        seed: u64,
        bar: &ProgressBar,
    ) -> Result<Sample<Tensor>> {
        let mut noise = PhiloxNoise::new(seed);
        let mut tick = |_: &StepView<'_, Tensor>| bar.inc(1);
        Ok(match self {
            Configured::Mrs(s) => s.sample_observed(model, mu, None, &mut noise, &mut tick)?,
            Configured::Baseline(s) => s.sample_observed(model, mu, None, &mut noise, &mut tick)?,
        })
    }
}

/// Runs `restore`.
pub fn run(args: RestoreArgs) -> Result<()> {
    let opts = load_options(args.options.clone(), &args.device, args.dtype.into())?;
    let schedule = schedule(opts.options.as_ref(), args.preset.as_deref())?;
    let sampler = Configured::build(&args, schedule)?;
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let spec = args
        .tile
        .map(|size| TileSpec::new(size, args.overlap, args.tile_batch))
        .transpose()?;
    let mut files = images::collect_inputs(&args.inputs)?;
    if let Some((k, n)) = shard {
        files = files
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == k - 1)
            .map(|(_, f)| f)
            .collect();
    }
    let net = Network::load(&args.model, &opts)?;
    let channels = net.channels();
    let device = opts.device.clone();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut model = match spec {
        Some(s) => Model::Tiled(Tiled::new(net, s)),
        None => Model::Whole(net),
    };
    let mut failures = 0;
    for (index, input) in files.iter().enumerate() {
        let output = output_path(&args.out, input)?;
        if args.skip_existing && output.exists() {
            eprintln!("{}: {} exists, skipped", input.display(), output.display());
            continue;
        }
        let result = restore_one(
            input,
            &output,
            channels,
            &device,
            &sampler,
            &mut model,
            args.seed + index as u64,
            args.quiet,
        );
        if let Err(e) = result {
            eprintln!("error: {}: {e}", input.display());
            failures += 1;
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {} images could not be restored", files.len()).into());
    }
    Ok(())
}

/// `OUT/<stem>.png`.
fn output_path(out: &Path, input: &Path) -> Result<PathBuf> {
    let stem = input
        .file_stem()
        .ok_or_else(|| format!("{}: no file name", input.display()))?;
    Ok(out.join(format!("{}.png", stem.to_string_lossy())))
}

#[allow(clippy::too_many_arguments)] // one image's whole context, passed once
fn restore_one(
    input: &Path,
    output: &Path,
    channels: usize,
    device: &Device,
    sampler: &Configured,
    model: &mut Model,
    seed: u64,
    quiet: bool,
) -> Result<()> {
    let picture: Picture = images::read(input)?;
    if picture.channels != channels {
        return Err(format!(
            "the model takes {channels}-channel images; this one has {} colour channel(s)",
            picture.channels
        )
        .into());
    }
    let mu = picture.tensor(device, DType::F32)?;
    let nfe = match sampler {
        Configured::Mrs(s) => s.plan(mrsampler::FitTarget::Noise)?.num_evaluations(),
        Configured::Baseline(s) => s.num_steps(),
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(nfe as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} evaluations, {elapsed}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "{} ({}×{})",
        input.display(),
        picture.width,
        picture.height
    ));
    let start = Instant::now();
    let out = sampler.run(model, &mu, seed, &bar)?;
    bar.finish_and_clear();
    picture.write_png(&out.x, output)?;
    if !quiet {
        eprintln!(
            "{} -> {} ({} evaluations, {:.1} s)",
            input.display(),
            output.display(),
            out.stats.nfe,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
