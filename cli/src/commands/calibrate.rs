//! `mrsampler calibrate`: fits a sampler's `K`-step time grid to a network on a few images
//! (`mrsampler::Calibrator`) and writes it as a grid file (`crate::grid_file`) that `restore
//! --grid` and `eval --samplers` read.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::{CalibrationProgress, Calibrator, PhiloxNoise};

use crate::error::Result;
use crate::files::write_atomically;
use crate::grid_file::{Candidate, FORMAT, GridFile, Provenance, ScheduleStamp};
use crate::images::{self, Picture};
use crate::sampling::{Model, ModelArgs};
use crate::spec::{ToolSpec, parse_spec};
use mrsampler::SamplerSpec;

/// `calibrate`'s options.
#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Calibration images (degraded inputs) or folders of them, all of one size. Default: the
    /// shipped validation set's degraded images. Never calibrate on the images you report on.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// The sampler to calibrate, `KIND[-ORDER][:PARAM]` with KIND `mrs-ode` or `mrs-sde`.
    #[arg(long, default_value = "mrs-sde-2:data", value_parser = parse_spec)]
    sampler: SamplerSpec,
    /// Network evaluations (steps) of the calibrated grid.
    #[arg(long)]
    nfe: usize,
    /// Where to write the grid file (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Start states (and SDE noise paths) per image.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps of each of the teacher's fine grid families (linspace and uniform-λ).
    #[arg(long, default_value_t = 32)]
    fine_steps: usize,
    /// Coordinates the search scores steps on (over all images and seeds).
    #[arg(long, default_value_t = 4096)]
    coordinates: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `calibrate`.
pub fn run(args: CalibrateArgs) -> Result<()> {
    if !args.sampler.kind.is_mrs() || args.sampler.grid_file().is_some() {
        return Err(format!(
            "--sampler {}: calibration fits the MR Sampler's grid; give mrs-ode-ORDER:PARAM or \
             mrs-sde-ORDER:PARAM",
            args.sampler
        )
        .into());
    }
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let (net, schedule) = args.model.load()?;
    // (label, picture): the given images, or the shipped validation crops.
    let inputs: Vec<(String, Picture)> = if args.images.is_empty() {
        crate::shipped::set("val")?
            .iter()
            .map(|p| Ok((format!("{}.png", p.name), p.degraded()?)))
            .collect::<Result<_>>()?
    } else {
        images::collect_files(&args.images)?
            .iter()
            .map(|f| {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                Ok((name.unwrap_or_default(), images::read(f)?))
            })
            .collect::<Result<_>>()?
    };
    let device = net.device().clone();
    let mut planes = Vec::new();
    let mut names = Vec::new();
    let mut size = None;
    for (name, p) in inputs {
        let dims = (p.channels, p.height, p.width);
        if *size.get_or_insert(dims) != dims {
            return Err(format!(
                "{}: {}×{}×{}, but the first image is {:?} (channels, height, width); the \
                 calibration batch needs one size: crop the images to it",
                name,
                p.channels,
                p.height,
                p.width,
                size.unwrap_or(dims)
            )
            .into());
        }
        if p.channels != net.channels() {
            return Err(format!(
                "{}: the model takes {}-channel images; this one has {}",
                name,
                net.channels(),
                p.channels
            )
            .into());
        }
        names.push(name);
        planes.push(p.tensor(&device, DType::F32)?);
    }
    let one = Tensor::cat(&planes, 0)?;
    let mu = Tensor::cat(&vec![one; args.seeds], 0)?;
    let Some(sampler) = args.sampler.mrs_for_images(&schedule, args.nfe)? else {
        unreachable!("checked to be an MR Sampler above")
    };
    let calibrator = Calibrator::new(args.nfe)?
        .with_fine_steps(args.fine_steps)?
        .with_coordinates(args.coordinates)?
        .with_seed(args.seed);
    let cost = calibrator.cost(&sampler)?;
    let evaluations = cost.total();
    let batch = mu.dim(0)?;
    if !args.quiet {
        eprintln!(
            "calibrating {} at {} NFE on {} image(s) × {} seed(s): {evaluations} network \
             evaluations of a batch of {batch}",
            args.sampler.solver_name(),
            args.nfe,
            names.len(),
            args.seeds
        );
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(evaluations as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} evaluations, {elapsed}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let seeds: Vec<u64> = (0..batch as u64)
        .map(|i| (args.seed + i) ^ 0x00ca_11b7)
        .collect();
    let mut noise = PhiloxNoise::per_sample(seeds);
    let mut model = Model::new(net, args.model.border(), None);
    let begin = Instant::now();
    let cal = calibrator.calibrate(&sampler, &mut model, &mu, &mut noise, |p| match p {
        CalibrationProgress::Teacher { done, .. } => {
            bar.set_message("teacher");
            bar.set_position(done as u64);
        }
        CalibrationProgress::Search { done, .. } => {
            bar.set_message("search");
            bar.set_position((cost.teacher + done * cost.search / cost.steps.max(1)) as u64);
        }
        CalibrationProgress::Check { done, .. } => {
            bar.set_message("checks");
            bar.set_position((cost.teacher + cost.search + done * cost.steps) as u64);
        }
    })?;
    bar.finish_and_clear();
    let seconds = begin.elapsed().as_secs_f64();
    let candidates: Vec<Candidate> = cal
        .scores
        .iter()
        .map(|s| Candidate {
            name: s.name.clone(),
            distance: s.distance,
            times: s.times.clone(),
        })
        .collect();
    let file = GridFile {
        format: FORMAT.to_owned(),
        sampler: args.sampler.solver_name(),
        steps: args.nfe,
        times: cal.grid.clone(),
        chosen: cal.best().name.clone(),
        search_distance: cal.search_distance,
        teacher_grid: cal.teacher_grid.clone(),
        schedule: ScheduleStamp::of(&schedule),
        candidates,
        provenance: Provenance {
            model: args.model.describe(),
            images: names,
            seeds: args.seeds,
            seed: args.seed,
            fine_steps: args.fine_steps,
            coordinates: args.coordinates,
            evaluations: cal.evaluations,
            seconds,
        },
    };
    let text = serde_json::to_string_pretty(&file)?;
    write_atomically(&args.out, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| format!("{}: {e}", tmp.display()).into())
    })?;
    if !args.quiet {
        println!("{:<16} {:>14}  times", "candidate", "RMS to teacher");
        for (i, s) in cal.scores.iter().enumerate() {
            let mark = if i == cal.chosen { "*" } else { " " };
            let times: Vec<String> = s.times.iter().map(|t| format!("{t:.2}")).collect();
            println!(
                "{mark}{:<15} {:>14.3e}  {}",
                s.name,
                s.distance,
                times.join(" ")
            );
        }
        println!(
            "\n{} evaluations ({} checks), {seconds:.1} s -> {}",
            cal.evaluations,
            cal.scores.len(),
            args.out.display()
        );
    }
    Ok(())
}
