//! `mrsampler restore`: restore image files with a checkpoint and a sampler.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::{Parameterization, PhiloxNoise, StepView};
use mrsampler_models::{TileSpec, Tiled};

use crate::Result;
use crate::images::{self, Picture};
use crate::sampling::{Configured, Model, ModelArgs, SamplerKind, SamplerSpec, Timed};

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
    #[command(flatten)]
    model: ModelArgs,
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
    /// leading), or a grid file from `mrsampler calibrate` (`….json`: its sampler and NFE are
    /// used).
    #[arg(long, default_value = "linspace")]
    grid: String,
    /// Network evaluations per image (default 10; a grid file's own with `--grid FILE`).
    #[arg(long)]
    nfe: Option<usize>,
    /// Seed of the prior draw and the SDE noise (per image: seed + the image's index).
    #[arg(long, default_value_t = 0)]
    seed: u64,
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

/// Runs `restore`.
pub fn run(args: RestoreArgs) -> Result<()> {
    let (net, schedule) = args.model.load()?;
    let (spec, nfe) = if args.grid.ends_with(".json") {
        let spec: SamplerSpec = args.grid.parse()?;
        let steps = Configured::calibrated_steps(&spec)?.unwrap_or_default();
        if args.nfe.is_some_and(|n| n != steps) {
            return Err(format!(
                "--nfe {}: the grid file {} has {steps} steps; leave --nfe out or calibrate for \
                 that NFE",
                args.nfe.unwrap_or_default(),
                args.grid
            )
            .into());
        }
        (spec, steps)
    } else {
        let spec = SamplerSpec {
            kind: args.sampler,
            order: args.order,
            param: match args.param.as_str() {
                "noise" => Parameterization::Noise,
                _ => Parameterization::Data,
            },
            grid: args.grid.clone(),
        };
        (spec, args.nfe.unwrap_or(10))
    };
    let sampler = Configured::build(&spec, schedule, nfe)?;
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
    let channels = net.channels();
    let device = net.device().clone();
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
    let start = Instant::now();
    let picture: Picture = images::read(input)?;
    if picture.channels != channels {
        return Err(format!(
            "the model takes {channels}-channel images; this one has {} colour channel(s)",
            picture.channels
        )
        .into());
    }
    let mu = picture.tensor(device, DType::F32)?;
    let read = start.elapsed().as_secs_f64();
    let nfe = sampler.plan()?.num_evaluations();
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
    let mut tick = |_: &StepView<'_, Tensor>| bar.inc(1);
    let t = Instant::now();
    model.prepare(&mu)?;
    let contexts = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut timed = Timed::new(model);
    let out = sampler.run(
        &mut timed,
        &mu,
        None,
        &mut PhiloxNoise::new(seed),
        &mut tick,
    )?;
    let (sampling, network) = (t.elapsed().as_secs_f64(), timed.spent.as_secs_f64());
    bar.finish_and_clear();
    let t = Instant::now();
    picture.write_png(&out.x, output)?;
    let write = t.elapsed().as_secs_f64();
    if !quiet {
        // Where the time goes (`docs/benchmarks.md`): the network's evaluations, the
        // sampler's own work around them, DA-CLIP's contexts, reading and writing.
        let contexts = if contexts >= 5e-4 {
            format!(", contexts {contexts:.2} s")
        } else {
            String::new()
        };
        eprintln!(
            "{} -> {} ({} evaluations, {:.1} s: network {network:.2} s, sampler {:.3} s{contexts}, \
             read {read:.3} s, write {write:.3} s)",
            input.display(),
            output.display(),
            out.stats.nfe,
            start.elapsed().as_secs_f64(),
            sampling - network,
        );
    }
    Ok(())
}
