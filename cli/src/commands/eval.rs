//! `mrsampler eval`: every chosen sampler × NFE × seed on a set of (clean, degraded) image
//! pairs; a table of PSNR, SSIM, distance to the sampler's own converged result, sharpness and
//! time, with mean ± standard deviation over images and seeds; and a comparison picture.
//!
//! The distance to the converged result is taken against the same configuration at
//! `--converged-nfe` evaluations (a calibrated grid: on the teacher grid it was chosen from)
//! from the same start state; for the SDE samplers the coarse
//! run draws its noise on the converged run's Brownian path (`mrsampler::CoupledNoise`), so the
//! distance measures discretisation error, not sampling variation. A baseline's converged
//! result is its full `T`-step chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::schedule::{IrSdeSchedule, Schedule};
use mrsampler::{
    CoupledNoise, FitTarget, MrSampler, NoiseSource, PhiloxNoise, Plan, Sampler, StepView,
};

use crate::classical::Classical;
use crate::error::Result;
use crate::files::write_atomically;
use crate::images::{self, Picture};
use crate::metrics::{gradient_energy_ratio, mean_sd, psnr, ssim};
use crate::sampling::{Model, ModelArgs};
use crate::spec::{ToolSpec, parse_spec};
use mrsampler::SamplerSpec;

/// `eval`'s options.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of clean images; pairs with `--degraded` by file name. Default: the shipped set.
    #[arg(long, requires = "degraded")]
    gt: Option<PathBuf>,
    /// Folder of degraded images, named as in `--gt`.
    #[arg(long, requires = "gt")]
    degraded: Option<PathBuf>,
    /// The shipped set used without `--gt`: `test` (where results are reported) or `val`
    /// (where configurations are chosen).
    #[arg(long, value_parser = ["test", "val"], default_value = "test")]
    set: String,
    /// Samplers, comma-separated: `KIND[-ORDER][:PARAM][:GRID]` with KIND `mrs-ode`, `mrs-sde`,
    /// `posterior` or `euler`, or a grid file from `mrsampler calibrate` (one row, at its
    /// NFE). Default: the library's and `restore`'s default (ODE-2, data, linspace), the SDE-2
    /// and posterior sampling (how the default was chosen: `docs/benchmarks.md`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mrs-ode-2,mrs-sde-2,posterior",
        value_parser = parse_spec
    )]
    samplers: Vec<SamplerSpec>,
    /// Evaluation counts of the MR Sampler rows.
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    nfe: Vec<usize>,
    /// Step counts of the baseline rows (posterior, euler); a row at the schedule's `T` steps
    /// (the full chain) is the converged reference of the baseline's other rows.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    baseline_nfe: Vec<usize>,
    /// Evaluations of the MR Sampler's converged reference (`--converged own`): a multiple of
    /// every `--nfe` for the SDE (the grids must nest).
    #[arg(long, default_value_t = 40)]
    converged_nfe: usize,
    /// The MR Sampler's converged reference: `own` (the row's configuration at
    /// `--converged-nfe`) or `teacher` (the calibration teacher grid at the row's NFE: one
    /// reference shared by every grid of a solver at one NFE, in which each of them nests).
    /// A calibrated grid's reference is always its teacher.
    #[arg(long, value_enum, default_value = "own")]
    converged: Converged,
    /// Seeds per image (start state and SDE noise).
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per table row instead of the table.
    #[arg(long)]
    json: bool,
    /// The comparison picture (first image, first seed: degraded, each row, ground truth).
    #[arg(long, default_value = "target/eval.png")]
    picture: PathBuf,
    /// Nearest-neighbour zoom of the picture's panels (2: each pixel as 2 × 2, so that
    /// differences between samplers are visible).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    picture_zoom: u32,
    /// Most samples (images × seeds) per network call (6 was the fastest on the 2-core dev
    /// machine at 128²: larger batches spend more in memory traffic than they save).
    #[arg(long, default_value_t = 6)]
    batch: usize,
    /// Classical denoisers' rows (Gaussian blur, total variation, non-local means), each
    /// with its parameter chosen on `--classical-val`: `auto` prints them for the shipped set
    /// (Gaussian noise of σ = `--noise-sigma`), `on` and `off` always and never.
    #[arg(long, value_enum, default_value = "auto")]
    classical: ClassicalRows,
    /// Folder with `gt/` and `degraded/` on which the classical denoisers' parameters are
    /// chosen. Default: the shipped validation set.
    #[arg(long)]
    classical_val: Option<PathBuf>,
    /// The noise level non-local means is told (standard deviation, 8-bit levels).
    #[arg(long, default_value_t = 25.0)]
    noise_sigma: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Whether `eval` prints the classical denoisers' rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassicalRows {
    /// For the shipped set only.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Which converged run an MR Sampler row is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Converged {
    /// The row's own configuration at `--converged-nfe`.
    Own,
    /// The calibration teacher grid at the row's NFE (`mrsampler::Calibrator::teacher_grid`).
    Teacher,
}

/// One clean/degraded pair.
struct Pair {
    name: String,
    gt: Picture,
    degraded: Picture,
}

/// One table row and its per-(image, seed) measurements.
struct Row {
    spec: Option<SamplerSpec>,
    /// A classical denoiser's row (its parameter chosen on the validation set).
    classical: Option<Classical>,
    nfe: usize,
    /// The row is its sampler's converged reference (a baseline's full chain).
    is_reference: bool,
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    to_converged: Vec<f64>,
    sharpness: Vec<f64>,
    seconds: f64,
    note: Option<String>,
}

impl Row {
    fn new(spec: Option<SamplerSpec>, nfe: usize) -> Self {
        Self {
            spec,
            classical: None,
            nfe,
            is_reference: false,
            psnr: Vec::new(),
            ssim: Vec::new(),
            to_converged: Vec::new(),
            sharpness: Vec::new(),
            seconds: 0.0,
            note: None,
        }
    }

    fn name(&self) -> String {
        match (&self.spec, &self.classical) {
            (Some(s), _) => s.to_string(),
            (None, Some(c)) => c.to_string(),
            (None, None) => "degraded input".to_owned(),
        }
    }
}

/// Runs `eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    if args.seeds == 0 || args.batch == 0 {
        return Err("--seeds and --batch must be at least 1".into());
    }
    if args.nfe.iter().chain(&args.baseline_nfe).any(|&n| n == 0) {
        return Err("every --nfe and --baseline-nfe must be at least 1".into());
    }
    let (net, schedule) = args.model.load()?;
    let channels = net.channels();
    let (pairs, source) = match (&args.gt, &args.degraded) {
        (Some(g), Some(d)) => (load_pairs(g, d, channels)?, g.display().to_string()),
        _ => (
            shipped_pairs(&args.set, channels)?,
            format!("the shipped {} set", args.set),
        ),
    };
    let device = net.device().clone();
    let mut model = Model::new(net, args.model.border(), None);

    // Rows: the degraded input, the classical denoisers, then every sampler × step count.
    let mut rows = vec![Row::new(None, 0)];
    let shipped_set = args.gt.is_none();
    let classical = match args.classical {
        ClassicalRows::On => true,
        ClassicalRows::Off => false,
        ClassicalRows::Auto => shipped_set,
    };
    // The picture shows the classical row that scored best on the validation set.
    let mut best_classical = None;
    if classical {
        let chosen = choose_classical(&args, channels)?;
        best_classical = chosen
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            .map(|(k, _)| 1 + k);
        for (c, _) in chosen {
            let mut row = Row::new(None, 0);
            row.classical = Some(c);
            rows.push(row);
        }
    }
    let first_sampler_row = rows.len();
    for spec in &args.samplers {
        let calibrated = spec.calibrated_steps()?.map(|k| vec![k]);
        let counts = match &calibrated {
            Some(own) => own,
            None if spec.kind.is_mrs() => &args.nfe,
            None => &args.baseline_nfe,
        };
        for &nfe in counts {
            // Build once here so that a bad configuration fails before any work.
            spec.for_images(&schedule, nfe)?;
            rows.push(Row::new(Some(spec.clone()), nfe));
        }
    }
    let t_steps = schedule.t_max().round() as usize;
    let total = evaluations_per_sample(&rows, &args, &schedule)?;
    let bar = if args.quiet || args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((total * pairs.len()) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} image evaluations, {elapsed} ({eta} left)",
        )
        .map_err(|e| e.to_string())?,
    );

    // Images of one size share network calls; seeds ride along in the batch.
    let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        groups.entry((p.gt.height, p.gt.width)).or_default().push(i);
    }
    let per_call = (args.batch / args.seeds).max(1);
    let mut picture: Vec<Tensor> = Vec::new();
    for indices in groups.values() {
        for chunk in indices.chunks(per_call) {
            let ctx = Chunk::new(&pairs, chunk, &args, &device)?;
            let first = picture.is_empty() && chunk.contains(&0);
            if first {
                picture.push(ctx.mu.get(0)?);
            }
            ctx.measure_degraded(&mut rows[0])?;
            for (k, row) in rows.iter_mut().enumerate().take(first_sampler_row).skip(1) {
                let out = ctx.measure_classical(row)?;
                if first && Some(k) == best_classical {
                    picture.push(out.get(0)?);
                }
            }
            let mut references = References::new();
            let mut k = first_sampler_row;
            while k < rows.len() {
                let spec = rows[k].spec.clone().expect("sampler row");
                let same: usize = rows[k..]
                    .iter()
                    .take_while(|r| r.spec.as_ref() == Some(&spec))
                    .count();
                let outs = ctx.run_spec(
                    &spec,
                    &mut rows[k..k + same],
                    &schedule,
                    t_steps,
                    &args,
                    &mut model,
                    &bar,
                    &mut references,
                )?;
                if first {
                    for o in outs {
                        picture.push(o.get(0)?);
                    }
                }
                k += same;
            }
            if first {
                picture.push(ctx.gt.get(0)?);
            }
        }
    }
    bar.finish_and_clear();
    print_rows(&rows, &args, &pairs, &source, t_steps)?;
    write_picture(&picture, &args.picture, args.picture_zoom as usize)?;
    if !args.json {
        let legend: Vec<String> = rows
            .iter()
            .enumerate()
            .filter(|(k, r)| r.classical.is_none() || Some(*k) == best_classical)
            .map(|(_, r)| match (&r.spec, &r.classical) {
                (Some(s), _) => format!("{s} @{}", r.nfe),
                (None, Some(c)) => c.to_string(),
                (None, None) => "degraded".to_owned(),
            })
            .collect();
        println!(
            "\npicture ({}, seed {}): {}, ground truth -> {}",
            pairs[0].name,
            args.seed,
            legend.join(", "),
            args.picture.display()
        );
    }
    Ok(())
}

/// Each classical family's best parameter on the validation pairs (`--classical-val`, the
/// shipped validation set by default), with its validation PSNR.
fn choose_classical(args: &EvalArgs, channels: usize) -> Result<Vec<(Classical, f64)>> {
    let pairs = match &args.classical_val {
        Some(root) => load_pairs(&root.join("gt"), &root.join("degraded"), channels)?,
        None => shipped_pairs("val", channels)?,
    };
    let data: Vec<(Vec<f64>, Vec<f64>)> = pairs
        .iter()
        .map(|p| {
            let f = |pic: &Picture| pic.pixels.iter().map(|&v| f64::from(v)).collect();
            (f(&p.degraded), f(&p.gt))
        })
        .collect();
    let dims: Vec<_> = pairs
        .iter()
        .map(|p| (p.gt.channels, p.gt.height, p.gt.width))
        .collect();
    Ok(Classical::families(args.noise_sigma / 255.0)
        .iter()
        .filter_map(|family| Classical::choose(family, &data, &dims))
        .collect())
}

/// The shipped set `set` (inside the binary), sorted by name.
fn shipped_pairs(set: &str, channels: usize) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for p in crate::shipped::set(set)? {
        let pair = Pair {
            name: p.name.to_owned(),
            gt: p.gt()?,
            degraded: p.degraded()?,
        };
        check_pair(&pair, channels)?;
        pairs.push(pair);
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pairs)
}

/// An error unless the pair's images have one size and the network's channel count.
fn check_pair(p: &Pair, channels: usize) -> Result<()> {
    let (gt, d, name) = (&p.gt, &p.degraded, &p.name);
    if (gt.channels, gt.height, gt.width) != (d.channels, d.height, d.width) {
        return Err(format!(
            "`{name}`: the clean image is {}×{} with {} channel(s) but the degraded one {}×{} \
             with {} (width × height); they must match",
            gt.width, gt.height, gt.channels, d.width, d.height, d.channels
        )
        .into());
    }
    if gt.channels != channels {
        return Err(format!(
            "`{name}`: the model takes {channels}-channel images; this one has {}",
            gt.channels
        )
        .into());
    }
    Ok(())
}

/// Clean and degraded images paired by file stem, sorted by name.
fn load_pairs(gt_dir: &Path, degraded_dir: &Path, channels: usize) -> Result<Vec<Pair>> {
    let degraded: BTreeMap<String, PathBuf> = images::collect_files(&[degraded_dir.to_owned()])?
        .into_iter()
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect();
    let mut pairs = Vec::new();
    for gt_path in images::collect_files(&[gt_dir.to_owned()])? {
        let name = gt_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let d_path = degraded.get(&name).ok_or_else(|| {
            format!(
                "{}: no degraded image named `{name}.*` in {}",
                gt_path.display(),
                degraded_dir.display()
            )
        })?;
        let pair = Pair {
            name,
            gt: images::read(&gt_path)?,
            degraded: images::read(d_path)?,
        };
        check_pair(&pair, channels)?;
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(format!("{}: no PNG or JPEG images", gt_dir.display()).into());
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pairs)
}

/// Network evaluations each sample goes through, references included.
fn evaluations_per_sample(
    rows: &[Row],
    args: &EvalArgs,
    schedule: &IrSdeSchedule,
) -> Result<usize> {
    let mut total = 0;
    let mut seen: Vec<ReferenceKey> = Vec::new();
    for r in rows {
        let Some(spec) = &r.spec else { continue };
        total += spec
            .for_images(schedule, r.nfe)?
            .plan(FitTarget::Noise)?
            .num_evaluations()
            .unwrap_or(r.nfe);
        if let Some(reference) = reference_for(spec, r.nfe, schedule, args)? {
            let plan = reference.plan(FitTarget::Noise)?;
            let key = reference_key(spec, &plan);
            if !seen.contains(&key) {
                total += plan.num_evaluations().unwrap_or(r.nfe);
                seen.push(key);
            }
        }
    }
    Ok(total)
}

/// What a converged run is: the solver (kind, order, parameterization; not the grid) and the
/// reference's times. Rows with equal keys share one run.
type ReferenceKey = (String, Vec<f64>);

fn reference_key(spec: &SamplerSpec, plan: &Plan) -> ReferenceKey {
    (
        spec.solver_name(),
        plan.timesteps().map(<[f64]>::to_vec).unwrap_or_default(),
    )
}

/// Converged runs already made for a chunk, by [`ReferenceKey`].
type References = Vec<(ReferenceKey, Plan, Tensor)>;

/// The converged run an MR Sampler row of `spec` at `nfe` is measured against (`--converged`;
/// a calibrated grid's teacher). `None` for a baseline, whose converged result is its full
/// `T`-step chain, run only as a row of its own (`--baseline-nfe` including `T`).
fn reference_for(
    spec: &SamplerSpec,
    nfe: usize,
    schedule: &IrSdeSchedule,
    args: &EvalArgs,
) -> Result<Option<MrSampler>> {
    spec.reference(
        schedule,
        nfe,
        args.converged_nfe,
        args.converged == Converged::Teacher,
    )
}

/// The images of one network batch: `[seeds · n, C, H, W]`, seed-major.
struct Chunk<'a> {
    pairs: Vec<&'a Pair>,
    gt: Tensor,
    gt_host: Vec<Vec<f64>>,
    mu: Tensor,
    /// The degraded images on the host, one per image (seed 0's copies of `mu`).
    mu_host: Vec<Vec<f64>>,
    /// Standard-normal start draws.
    z: Tensor,
    /// One seed per sample.
    seeds: Vec<u64>,
    dims: (usize, usize, usize),
}

impl<'a> Chunk<'a> {
    fn new(pairs: &'a [Pair], chunk: &[usize], args: &EvalArgs, device: &Device) -> Result<Self> {
        let pairs: Vec<&Pair> = chunk.iter().map(|&i| &pairs[i]).collect();
        let (c, h, w) = (pairs[0].gt.channels, pairs[0].gt.height, pairs[0].gt.width);
        let stack = |f: &dyn Fn(&Pair) -> &Picture| -> Result<Tensor> {
            let mut v = Vec::new();
            for _ in 0..args.seeds {
                for p in &pairs {
                    v.push(f(p).tensor(device, DType::F32)?);
                }
            }
            Ok(Tensor::cat(&v, 0)?)
        };
        let gt = stack(&|p| &p.gt)?;
        let mu = stack(&|p| &p.degraded)?;
        let seeds: Vec<u64> = (0..args.seeds as u64)
            .flat_map(|s| {
                chunk
                    .iter()
                    .map(move |&i| (args.seed + s) * 1_000_003 + i as u64)
            })
            .collect();
        let mut z = mu.zeros_like()?;
        PhiloxNoise::per_sample(seeds.iter().map(|s| s ^ 0x005e_ed0f_57a7).collect())
            .fill_standard_normal(&mut z, Default::default())?;
        let host = |pic: &Picture| pic.pixels.iter().map(|&v| f64::from(v)).collect();
        let gt_host = pairs.iter().map(|p| host(&p.gt)).collect();
        let mu_host = pairs.iter().map(|p| host(&p.degraded)).collect();
        Ok(Self {
            pairs,
            gt,
            gt_host,
            mu,
            mu_host,
            z,
            seeds,
            dims: (c, h, w),
        })
    }

    /// Every sample of `x` as host `f64` planes, sample-major.
    fn host(&self, x: &Tensor) -> Result<Vec<Vec<f64>>> {
        let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let (c, h, w) = self.dims;
        Ok(v.chunks(c * h * w).map(<[f64]>::to_vec).collect())
    }

    fn measure_degraded(&self, row: &mut Row) -> Result<()> {
        let (c, h, w) = self.dims;
        // The degraded input does not depend on the seed: one entry per image.
        for (mu, gt) in self.mu_host.iter().zip(&self.gt_host) {
            row.psnr.push(psnr(mu, gt));
            row.ssim.push(ssim(mu, gt, c, h, w));
            row.sharpness.push(gradient_energy_ratio(mu, gt, c, h, w));
        }
        Ok(())
    }

    /// Measures a classical denoiser's row on the chunk's images (once per image: it does not
    /// depend on the seed); returns its outputs.
    fn measure_classical(&self, row: &mut Row) -> Result<Tensor> {
        let classical = row.classical.expect("classical row");
        let (mu, (c, h, w)) = (&self.mu_host, self.dims);
        let mut outs = Vec::new();
        for (j, gt) in self.gt_host.iter().enumerate() {
            let begin = Instant::now();
            let out: Vec<f64> = classical
                .apply(&mu[j], self.dims)
                .into_iter()
                .map(|v| v.clamp(0.0, 1.0))
                .collect();
            row.seconds += begin.elapsed().as_secs_f64();
            row.psnr.push(psnr(&out, gt));
            row.ssim.push(ssim(&out, gt, c, h, w));
            row.sharpness.push(gradient_energy_ratio(&out, gt, c, h, w));
            outs.push(Tensor::from_vec(out, (1, c, h, w), &Device::Cpu)?.to_dtype(DType::F32)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Runs one sampler configuration at its reference and at every row's count; returns the
    /// rows' outputs.
    #[allow(clippy::too_many_arguments)] // one configuration's whole context
    fn run_spec(
        &self,
        spec: &SamplerSpec,
        rows: &mut [Row],
        schedule: &IrSdeSchedule,
        t_steps: usize,
        args: &EvalArgs,
        model: &mut Model,
        bar: &ProgressBar,
        references: &mut References,
    ) -> Result<Vec<Tensor>> {
        let mut tick = |_: &StepView<'_, Tensor>| bar.inc(self.pairs.len() as u64);
        let noise = || PhiloxNoise::per_sample(self.seeds.clone());
        // A baseline's full-chain row is its reference: run it first.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| spec.kind.is_mrs() || rows[i].nfe != t_steps);
        let full_chain = match spec.kind.is_mrs() {
            true => None,
            false => Some(spec.for_images(schedule, t_steps)?.plan(FitTarget::Noise)?),
        };
        let mut chain: Option<(&Plan, Tensor)> = None;
        let mut outs: Vec<Option<Tensor>> = vec![None; rows.len()];
        for i in order {
            let row = &mut rows[i];
            let cfg = spec.for_images(schedule, row.nfe)?;
            let plan = cfg.plan(FitTarget::Noise)?;
            let reference: Option<(&Plan, &Tensor)> =
                match reference_for(spec, row.nfe, schedule, args)? {
                    Some(r) => {
                        let r_plan = r.plan(FitTarget::Noise)?;
                        let key = reference_key(spec, &r_plan);
                        let at = match references.iter().position(|c| c.0 == key) {
                            Some(at) => at,
                            None => {
                                let start = r.prior_state(&self.mu, &self.z)?;
                                let x = r
                                    .sample_observed(
                                        model,
                                        &self.mu,
                                        Some(start),
                                        &mut noise(),
                                        &mut tick,
                                    )?
                                    .x;
                                references.push((key, r_plan, x));
                                references.len() - 1
                            }
                        };
                        Some((&references[at].1, &references[at].2))
                    }
                    None => chain.as_ref().map(|(p, x)| (*p, x)),
                };
            let begin = Instant::now();
            // Stochastic rows draw on the converged run's Brownian path where the grids nest.
            let ref_plan = reference.map(|r| r.0).or(full_chain.as_ref());
            let coupling = match (spec.kind.is_stochastic(), ref_plan) {
                (true, Some(r)) => CoupledNoise::new(&plan, r, noise()).map(Some),
                _ => Ok(None),
            };
            let coupled = coupling.is_ok();
            let start_state = Some(cfg.prior_state(&self.mu, &self.z)?);
            let x = match coupling {
                Ok(Some(mut c)) => {
                    cfg.sample_observed(model, &self.mu, start_state, &mut c, &mut tick)?
                }
                Ok(None) => {
                    cfg.sample_observed(model, &self.mu, start_state, &mut noise(), &mut tick)?
                }
                Err(e) => {
                    row.note = Some(format!("no coupling to the converged run: {e}"));
                    cfg.sample_observed(model, &self.mu, start_state, &mut noise(), &mut tick)?
                }
            }
            .x;
            row.seconds += begin.elapsed().as_secs_f64();
            row.is_reference = !spec.kind.is_mrs() && row.nfe == t_steps;
            if row.is_reference {
                self.measure(row, &x, None)?;
                chain = full_chain.as_ref().map(|p| (p, x.clone()));
            } else {
                self.measure(row, &x, reference.map(|r| r.1).filter(|_| coupled))?;
            }
            outs[i] = Some(x);
        }
        Ok(outs.into_iter().flatten().collect())
    }

    fn measure(&self, row: &mut Row, x: &Tensor, converged: Option<&Tensor>) -> Result<()> {
        let (c, h, w) = self.dims;
        let xs = self.host(x)?;
        let refs = converged.map(|r| self.host(r)).transpose()?;
        let n = self.pairs.len();
        for (e, xe) in xs.iter().enumerate() {
            let gt = &self.gt_host[e % n];
            row.psnr.push(psnr(xe, gt));
            row.ssim.push(ssim(xe, gt, c, h, w));
            row.sharpness.push(gradient_energy_ratio(xe, gt, c, h, w));
            if let Some(r) = &refs {
                row.to_converged.push(psnr(xe, &r[e]));
            }
        }
        Ok(())
    }
}

/// Writes the table (or JSON lines) to stdout.
fn print_rows(
    rows: &[Row],
    args: &EvalArgs,
    pairs: &[Pair],
    source: &str,
    t_steps: usize,
) -> Result<()> {
    let images = pairs.len();
    let samples = (images * args.seeds) as f64;
    if !args.json {
        println!(
            "{} image pairs from {} ({}), {} seed(s) each; mean ± sd over images and seeds; \
             converged: {} (MR Sampler) or its {}-step chain (baselines)\n",
            images,
            source,
            pairs
                .iter()
                .map(|p| format!("{} {}×{}", p.name, p.gt.width, p.gt.height))
                .collect::<Vec<_>>()
                .join(", "),
            args.seeds,
            match args.converged {
                Converged::Own => format!(
                    "the same sampler at {} evaluations (a calibrated grid: its teacher)",
                    args.converged_nfe
                ),
                Converged::Teacher => "the calibration teacher grid at the row's NFE".to_owned(),
            },
            t_steps
        );
        println!(
            "| sampler | NFE | PSNR (dB) | SSIM | PSNR vs converged (dB) | sharpness | s/image |"
        );
        println!("|---|---|---|---|---|---|---|");
    }
    for r in rows {
        let (p, p_sd) = mean_sd(&r.psnr);
        let (s, s_sd) = mean_sd(&r.ssim);
        let (g, g_sd) = mean_sd(&r.sharpness);
        let conv = (!r.to_converged.is_empty()).then(|| mean_sd(&r.to_converged));
        let seconds = match (&r.spec, &r.classical) {
            (Some(_), _) => Some(r.seconds / samples),
            (None, Some(_)) => Some(r.seconds / images as f64),
            (None, None) => None,
        };
        if args.json {
            let line = serde_json::json!({
                "sampler": r.name(),
                "nfe": r.nfe,
                "classical": r.classical.map(|c| c.family()),
                "psnr": finite(p),
                "psnr_sd": finite(p_sd),
                "ssim": finite(s),
                "ssim_sd": finite(s_sd),
                "psnr_vs_converged": conv.and_then(|c| finite(c.0)),
                "psnr_vs_converged_sd": conv.and_then(|c| finite(c.1)),
                "is_converged_reference": r.is_reference,
                "sharpness": finite(g),
                "sharpness_sd": finite(g_sd),
                "seconds": seconds,
                "images": images,
                "seeds": if r.spec.is_some() { args.seeds } else { 1 },
            });
            println!("{line}");
        } else {
            let conv = match (conv, r.is_reference, &r.note) {
                (Some((c, c_sd)), ..) => format!("{c:.2} ± {c_sd:.2}"),
                (None, true, _) => "(is the reference)".to_owned(),
                (None, false, Some(_)) => "(not coupled)".to_owned(),
                (None, false, None) => "–".to_owned(),
            };
            println!(
                "| {} | {} | {p:.2} ± {p_sd:.2} | {s:.4} ± {s_sd:.4} | {conv} | {g:.2} ± {g_sd:.2} | {} |",
                r.name(),
                if r.spec.is_some() {
                    r.nfe.to_string()
                } else {
                    "–".to_owned()
                },
                seconds.map_or("–".to_owned(), |t| format!("{t:.3}")),
            );
        }
    }
    for r in rows {
        if let Some(note) = &r.note {
            eprintln!("note: {} @{}: {note}", r.name(), r.nfe);
        }
    }
    Ok(())
}

/// `x`, or `None` (JSON `null`) when it is not finite.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Writes the images `[C, H, W]` side by side with a white gap, each pixel as a `zoom × zoom`
/// block.
fn write_picture(images: &[Tensor], path: &Path, zoom: usize) -> Result<()> {
    let Some(first) = images.first() else {
        return Ok(());
    };
    let (c, h0, w0) = first.dims3()?;
    let (h, w) = (h0 * zoom, w0 * zoom);
    let pad = 4;
    let mut grid = image::RgbImage::from_pixel(
        (images.len() * (w + pad) + pad) as u32,
        (h + 2 * pad) as u32,
        image::Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let v = img
            .clamp(0f32, 1f32)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y / zoom, x / zoom);
                let px: [u8; 3] = std::array::from_fn(|ch| {
                    (v[ch.min(c - 1) * h0 * w0 + sy * w0 + sx] * 255.0).round() as u8
                });
                grid.put_pixel(
                    (pad + k * (w + pad) + x) as u32,
                    (pad + y) as u32,
                    image::Rgb(px),
                );
            }
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    write_atomically(path, |tmp| {
        grid.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| format!("{}: {e}", path.display()).into())
    })
}
