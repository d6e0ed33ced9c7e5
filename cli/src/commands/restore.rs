//! `mrsampler restore`: restore image files with a checkpoint and a sampler.
//!
//! Every output path is planned before the first image is read: an output that is an input,
//! two inputs that would write one output, and (unless `--skip-existing` or `--overwrite`)
//! an output that exists are refused up front. Each image's noise is keyed by its name
//! relative to the input it was found under (and `--seed`), so its output does not depend on
//! the other inputs, their order or the shard that restores it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::{FitTarget, PhiloxNoise, Sampler, StepView};

use crate::error::Result;
use crate::images::{self, Input, Picture, image_seed};
use crate::sampling::{Model, ModelArgs, SamplerChoice, Timed};

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
    #[command(flatten)]
    sampler: SamplerChoice,
    /// Seed of the prior draw and the SDE noise. Each image's noise is keyed by this seed and
    /// the image's path relative to the input it was found under, so an image restores the
    /// same whatever the other inputs or the shard.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate the network on tiles of this side (pixels) when the image is larger; the whole
    /// image otherwise.
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap of neighbouring tiles (pixels; default 32).
    #[arg(long, requires = "tile")]
    overlap: Option<usize>,
    /// Most tiles per network call (default 16).
    #[arg(long, requires = "tile")]
    tile_batch: Option<usize>,
    /// `K/N`: restore only every N-th input of the sorted list, starting with the K-th
    /// (1-based), so N processes split the work; `auto` takes K and N from the scheduler's
    /// environment (a Slurm job array, or `MRSAMPLER_SHARD=K/N`).
    #[arg(long)]
    shard: Option<String>,
    /// How output files are named: `stem` (`a.jpg` → `a.png`) or `extension` (`a.jpg` →
    /// `a.jpg.png`, so that `a.jpg` and `a.png` do not collide).
    #[arg(long, value_enum, default_value = "stem")]
    naming: Naming,
    /// Walk input folders recursively and mirror each folder's tree under `--out/FOLDER/`
    /// (so equal names in different folders do not collide).
    #[arg(long)]
    tree: bool,
    /// Leave inputs whose output exists alone (default: an existing output is an error).
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// Replace outputs that exist (default: an existing output is an error).
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// How an output file is named after its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Naming {
    /// The input's stem with `.png`.
    Stem,
    /// The input's whole name with `.png` appended.
    Extension,
}

/// One image to restore.
struct Job {
    input: Input,
    output: PathBuf,
}

/// Parses `K/N` (1 ≤ K ≤ N), or `auto` from the environment.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    if s == "auto" {
        return shard_from_env(|k| std::env::var(k).ok());
    }
    let bad = || format!("--shard {s}: expected K/N with 1 <= K <= N (e.g. 2/4), or auto");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad().into());
    }
    Ok((k, n))
}

/// `--shard auto`: `MRSAMPLER_SHARD=K/N`, else a Slurm job array (`SLURM_ARRAY_TASK_ID`,
/// `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`; the array must be contiguous).
fn shard_from_env(var: impl Fn(&str) -> Option<String>) -> Result<(usize, usize)> {
    if let Some(s) = var("MRSAMPLER_SHARD") {
        return parse_shard(&s).map_err(|e| format!("MRSAMPLER_SHARD: {e}").into());
    }
    let num = |k: &str| -> Result<Option<usize>> {
        var(k)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("{k}={v}: not a number").into())
            })
            .transpose()
    };
    match (
        num("SLURM_ARRAY_TASK_ID")?,
        num("SLURM_ARRAY_TASK_MIN")?,
        num("SLURM_ARRAY_TASK_COUNT")?,
    ) {
        (Some(id), min, Some(count)) if count > 0 && id >= min.unwrap_or(0) => {
            let k = id - min.unwrap_or(0) + 1;
            if k > count {
                return Err(format!(
                    "--shard auto: SLURM_ARRAY_TASK_ID {id} is past the array's {count} tasks \
                     (use a contiguous array, e.g. --array=0-{})",
                    count - 1
                )
                .into());
            }
            Ok((k, count))
        }
        _ => Err(
            "--shard auto: no shard in the environment; set MRSAMPLER_SHARD=K/N, run in a \
                  Slurm job array, or give --shard K/N (Kubernetes Indexed Job: --shard \
                  $((JOB_COMPLETION_INDEX + 1))/N)"
                .into(),
        ),
    }
}

/// Plans every output and checks the plan: no output is an input and no two inputs share an
/// output (over all inputs, so that every shard refuses the same plan).
fn plan(args: &RestoreArgs, inputs: Vec<Input>) -> Result<Vec<Job>> {
    if args.out.is_file() {
        return Err(format!(
            "--out {}: is a file; give a folder (it is created if missing)",
            args.out.display()
        )
        .into());
    }
    let jobs: Vec<Job> = inputs
        .into_iter()
        .map(|input| {
            let output = output_path(&args.out, &input, args.naming, args.tree)?;
            Ok(Job { input, output })
        })
        .collect::<Result<_>>()?;
    // Compare real paths: the output folder may be an input folder under another name.
    let out_real = args.out.canonicalize().ok();
    let real = |p: &Path| -> Option<PathBuf> {
        let out = out_real.as_ref()?;
        let rel = p.strip_prefix(&args.out).ok()?;
        Some(out.join(rel))
    };
    let inputs_real: HashSet<PathBuf> = jobs
        .iter()
        .filter_map(|j| j.input.path.canonicalize().ok())
        .collect();
    let over_inputs: Vec<String> = jobs
        .iter()
        .filter(|j| real(&j.output).is_some_and(|o| inputs_real.contains(&o)))
        .map(|j| format!("  {} -> {}", j.input.path.display(), j.output.display()))
        .collect();
    if !over_inputs.is_empty() {
        return Err(format!(
            "these outputs would overwrite input files:\n{}\nwrite to another folder with --out, \
             or name outputs after the whole input name with --naming extension",
            over_inputs.join("\n")
        )
        .into());
    }
    let mut by_output: BTreeMap<&Path, Vec<&Path>> = BTreeMap::new();
    for j in &jobs {
        by_output.entry(&j.output).or_default().push(&j.input.path);
    }
    let collisions: Vec<String> = by_output
        .iter()
        .filter(|(_, ins)| ins.len() > 1)
        .map(|(out, ins)| {
            let ins: Vec<String> = ins.iter().map(|p| p.display().to_string()).collect();
            format!("  {} <- {}", out.display(), ins.join(", "))
        })
        .collect();
    if !collisions.is_empty() {
        return Err(format!(
            "several inputs would write the same output:\n{}\nkeep the extension in the output \
             name with --naming extension, or mirror each input folder under --out with --tree",
            collisions.join("\n")
        )
        .into());
    }
    Ok(jobs)
}

/// Refuses outputs of `jobs` that exist, unless `--skip-existing` or `--overwrite` says what
/// to do with them (checked per shard: shards running side by side write one folder).
fn check_existing(args: &RestoreArgs, jobs: &[Job]) -> Result<()> {
    if !args.skip_existing && !args.overwrite {
        let existing: Vec<String> = jobs
            .iter()
            .filter(|j| j.output.exists())
            .map(|j| format!("  {}", j.output.display()))
            .collect();
        if !existing.is_empty() {
            let shown = existing.len().min(10);
            let more = match existing.len() - shown {
                0 => String::new(),
                n => format!("\n  … and {n} more"),
            };
            return Err(format!(
                "{} output(s) exist already:\n{}{more}\nleave them with --skip-existing or \
                 replace them with --overwrite",
                existing.len(),
                existing[..shown].join("\n")
            )
            .into());
        }
    }
    Ok(())
}

/// `OUT/[FOLDER/]RELATIVE_STEM.png` (or `….EXT.png` with `--naming extension`).
fn output_path(out: &Path, input: &Input, naming: Naming, tree: bool) -> Result<PathBuf> {
    let rel = Path::new(&input.key);
    let name = rel
        .file_name()
        .ok_or_else(|| format!("{}: no file name", input.path.display()))?;
    let file = match naming {
        Naming::Stem => {
            let stem = rel.file_stem().unwrap_or(name);
            format!("{}.png", stem.to_string_lossy())
        }
        Naming::Extension => format!("{}.png", name.to_string_lossy()),
    };
    let mut dir = out.to_path_buf();
    if tree {
        if let Some(folder) = &input.folder {
            dir.push(folder);
        }
        if let Some(parent) = rel.parent() {
            dir.push(parent);
        }
    }
    Ok(dir.join(file))
}

/// Runs `restore`.
pub fn run(args: RestoreArgs) -> Result<()> {
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let tiles = crate::sampling::tile_spec(args.tile, args.overlap, args.tile_batch)?;
    let inputs = images::collect_inputs(&args.inputs, args.tree)?;
    let mut jobs = plan(&args, inputs)?;
    if let Some((k, n)) = shard {
        jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == k - 1)
            .map(|(_, j)| j)
            .collect();
    }
    args.sampler.check()?;
    let loading = Instant::now();
    let (net, schedule) = args.model.load()?;
    if !args.quiet {
        // Apart from the images' lines, which time the restoring alone: reading a large
        // checkpoint (DA-CLIP's encoder is 1 GB) can take as long as restoring an image.
        eprintln!(
            "network ({}) loaded in {:.2} s",
            args.model.describe(),
            loading.elapsed().as_secs_f64()
        );
    }
    let sampler = args.sampler.build(&schedule)?;
    if let Some(size) = args.tile {
        net.check_tile(size)?;
    }
    // Last of the checks, so that a wrong option is named before existing outputs are.
    check_existing(&args, &jobs)?;
    let channels = net.channels();
    let device = net.device().clone();
    let mut model = Model::new(net, args.model.border(), tiles);
    let mut failures = 0;
    for job in &jobs {
        if args.skip_existing && job.output.exists() {
            eprintln!(
                "{}: {} exists, skipped",
                job.input.path.display(),
                job.output.display()
            );
            continue;
        }
        if let Some(dir) = job.output.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let result = restore_one(
            job,
            channels,
            &device,
            &sampler,
            &mut model,
            image_seed(args.seed, &job.input.key),
            args.quiet,
        );
        if let Err(e) = result {
            eprintln!("error: {e}");
            failures += 1;
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {} images could not be restored", jobs.len()).into());
    }
    Ok(())
}

fn restore_one(
    job: &Job,
    channels: usize,
    device: &Device,
    sampler: &impl Sampler,
    model: &mut Model,
    seed: u64,
    quiet: bool,
) -> Result<()> {
    let (input, output) = (&job.input.path, &job.output);
    let start = Instant::now();
    let picture: Picture = images::read(input)?;
    if picture.channels != channels {
        return Err(format!(
            "{}: the model takes {channels}-channel images; this one has {} colour channel(s)",
            input.display(),
            picture.channels
        )
        .into());
    }
    let mu = picture.tensor(device, DType::F32)?;
    let read = start.elapsed().as_secs_f64();
    let nfe = sampler
        .plan(FitTarget::Noise)?
        .num_evaluations()
        .ok_or("the sampler's evaluations are decided while it runs")?;
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
    let out = sampler
        .sample_observed(
            &mut timed,
            &mu,
            None,
            &mut PhiloxNoise::new(seed),
            &mut tick,
        )
        .map_err(|e| format!("{}: {e}", input.display()))?;
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
            "{} -> {} ({} evaluations, {:.2} s: network {network:.2} s, sampler {:.3} s{contexts}, \
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::fnv1a;

    /// An environment of `pairs`.
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shard_from_the_environment() {
        assert_eq!(
            shard_from_env(env(&[("MRSAMPLER_SHARD", "2/5")])).unwrap(),
            (2, 5)
        );
        // Slurm arrays from 0 or from 1.
        let zero = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard_from_env(env(&zero)).unwrap(), (1, 4));
        let one = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard_from_env(env(&one)).unwrap(), (4, 4));
        let past = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(shard_from_env(env(&past)).is_err());
        let none = shard_from_env(env(&[])).unwrap_err().to_string();
        assert!(none.contains("MRSAMPLER_SHARD"), "{none}");
    }

    #[test]
    fn image_seeds_depend_on_the_key_and_the_seed_only() {
        assert_eq!(image_seed(0, "a.png"), image_seed(0, "a.png"));
        assert_ne!(image_seed(0, "a.png"), image_seed(0, "b.png"));
        assert_ne!(image_seed(0, "a.png"), image_seed(1, "a.png"));
        // FNV-1a's published test value: the hash is stable, not the platform's.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
