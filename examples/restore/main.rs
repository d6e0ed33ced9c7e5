//! Restores an image with the shipped MR denoising network and compares samplers.
//!
//! ```text
//! cargo run --release --features restore --example restore -- [--json] [--image PATH] [--seed N]
//! ```
//!
//! The held-out photograph (`assets/restore/eval.png`, or `--image`) is degraded with Gaussian
//! noise σ = 25/255 (the task the network was trained on) and restored from one shared start
//! state and one shared noise stream by:
//! * the MR Sampler in its default configuration and in the best configuration found on the
//!   exact oracles, at 5, 10 and 20 NFE;
//! * strided posterior sampling (DA-CLIP's sampler) at 100 and 10 NFE.
//!
//! For every row: PSNR and SSIM against the clean image, PSNR against the same sampler's own
//! converged result (500 NFE; posterior sampling: its 100-step result), and wall time. A PNG
//! grid (degraded, each output, ground truth) is written to `target/restore_grid.png`.

mod metrics;
mod net;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use mrsampler::Solver;
use mrsampler::schedule::{IrSdeSchedule, Schedule};
use mrsampler::{
    Baseline, BaselineSampler, FitTarget, ModelError, MrSampler, NoiseSource, Parallelism,
    Parameterization, PhiloxNoise, Sample, Sampler, ScoreModel,
};

const NOISE_SIGMA: f64 = 25.0 / 255.0;

struct Args {
    json: bool,
    ablation: bool,
    explore: bool,
    image: Option<PathBuf>,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        ablation: false,
        explore: false,
        image: None,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--json" => a.json = true,
            "--ablation" => a.ablation = true,
            "--explore" => a.explore = true,
            "--image" => a.image = Some(it.next().ok_or("--image takes a path")?.into()),
            "--seed" => {
                a.seed = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--seed takes an integer")?
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: restore [--json] [--ablation] [--image PATH] [--seed N]"
                ));
            }
        }
    }
    Ok(a)
}

/// Counts network evaluations into a progress bar.
struct Progress<'a> {
    net: &'a mut net::RestoreNet,
    bar: &'a ProgressBar,
}

impl ScoreModel<Tensor> for Progress<'_> {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Noise
    }
    fn predict(&mut self, x: &Tensor, mu: &Tensor, t: f64) -> Result<Tensor, ModelError> {
        self.bar.inc(1);
        self.net.predict(x, mu, t)
    }
}

#[derive(Clone, Copy)]
enum Config {
    MrsDefault,
    MrsBest,
    Posterior,
    /// Order-2 MRS on linspace with the given solver and parameterization (`--ablation`).
    Ablation(Solver, Parameterization),
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Ablation(s, Parameterization::Data) if s.is_stochastic() => "mrs sde-2 data",
            Config::Ablation(s, Parameterization::Noise) if s.is_stochastic() => "mrs sde-2 noise",
            Config::Ablation(_, Parameterization::Data) => "mrs ode-2 data",
            Config::Ablation(_, Parameterization::Noise) => "mrs ode-2 noise",
            Config::MrsDefault => "mrs-default (ode-2 data linspace)",
            Config::MrsBest => "mrs-best (sde-2 data linspace)",
            Config::Posterior => "posterior (strided)",
        }
    }
}

struct Ctx<'a> {
    net: &'a mut net::RestoreNet,
    bar: ProgressBar,
    mu: Tensor,
    x_start: Tensor,
    seed: u64,
}

impl Ctx<'_> {
    fn run(
        &mut self,
        cfg: Config,
        nfe: usize,
    ) -> Result<(Sample<Tensor>, f64), Box<dyn std::error::Error>> {
        let schedule = IrSdeSchedule::da_clip();
        let mut model = Progress {
            net: self.net,
            bar: &self.bar,
        };
        let mut noise = PhiloxNoise::new(self.seed + 1);
        let start = Instant::now();
        let out = match cfg {
            Config::MrsDefault => {
                mrs(nfe)?.sample(&mut model, &self.mu, Some(self.x_start.clone()), &mut noise)?
            }
            Config::MrsBest => mrs(nfe)?.with_solver(Solver::sde(2))?.sample(
                &mut model,
                &self.mu,
                Some(self.x_start.clone()),
                &mut noise,
            )?,
            Config::Ablation(solver, param) => mrs(nfe)?
                .with_solver(solver)?
                .with_parameterization(param)?
                .sample(&mut model, &self.mu, Some(self.x_start.clone()), &mut noise)?,
            Config::Posterior => BaselineSampler::new(schedule, Baseline::Posterior, nfe)?
                .with_data_range(Some((0.0, 1.0)))?
                .sample(&mut model, &self.mu, Some(self.x_start.clone()), &mut noise)?,
        };
        Ok((out, start.elapsed().as_secs_f64()))
    }
}

/// The MR Sampler on DA-CLIP's schedule with `nfe` evaluations, its output clamped to the
/// image range.
fn mrs(nfe: usize) -> mrsampler::Result<MrSampler> {
    MrSampler::new(IrSdeSchedule::da_clip(), nfe)?.with_data_range(Some((0.0, 1.0)))
}

fn load_image(
    path: &std::path::Path,
    device: &Device,
) -> Result<Tensor, Box<dyn std::error::Error>> {
    let img = image::open(path)?.to_rgb8();
    let (w, h) = (img.width() as usize / 2 * 2, img.height() as usize / 2 * 2);
    let mut data = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(x as u32, y as u32);
            for c in 0..3 {
                data[c * h * w + y * w + x] = p[c] as f32 / 255.0;
            }
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

fn write_grid(images: &[Tensor], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let (_, _, h, w) = images[0].dims4()?;
    let pad = 4;
    let mut grid = image::RgbImage::from_pixel(
        (images.len() * (w + pad) + pad) as u32,
        (h + 2 * pad) as u32,
        image::Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let v = img.clamp(0f32, 1f32)?.flatten_all()?.to_vec1::<f32>()?;
        for y in 0..h {
            for x in 0..w {
                let px: [u8; 3] =
                    std::array::from_fn(|c| (v[c * h * w + y * w + x] * 255.0).round() as u8);
                grid.put_pixel(
                    (pad + k * (w + pad) + x) as u32,
                    (pad + y) as u32,
                    image::Rgb(px),
                );
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    grid.save(path)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let device = Device::Cpu;
    let mut net = net::RestoreNet::load(&root.join("assets/restore/model.safetensors"), &device)?;
    let clean = load_image(
        &args
            .image
            .clone()
            .unwrap_or(root.join("assets/restore/eval.png")),
        &device,
    )?;

    // Degrade: μ = clean + σ·n; start state x_T = μ + σ∞·z. Both from fixed Philox streams.
    let mut rng = PhiloxNoise::new(args.seed);
    let mut n = clean.clone();
    rng.fill_standard_normal(&mut n, Parallelism::default())?;
    let mu =
        mrsampler::tensor::lincomb(&[(1.0, &clean), (NOISE_SIGMA, &n)], Parallelism::default())?;
    let mut z = clean.clone();
    rng.fill_standard_normal(&mut z, Parallelism::default())?;
    let sigma_start = IrSdeSchedule::da_clip().sigma(100.0);
    let x_start =
        mrsampler::tensor::lincomb(&[(1.0, &mu), (sigma_start, &z)], Parallelism::default())?;

    if args.ablation {
        return ablation(&mut net, &clean, &mu, &x_start, args.seed);
    }
    if args.explore {
        return explore(&mut net, &clean, &mu, &x_start, args.seed);
    }
    let rows: Vec<(Config, usize)> = vec![
        (Config::MrsDefault, 5),
        (Config::MrsDefault, 10),
        (Config::MrsDefault, 20),
        (Config::MrsBest, 5),
        (Config::MrsBest, 10),
        (Config::MrsBest, 20),
        (Config::Posterior, 10),
        (Config::Posterior, 100),
    ];
    let references = [(Config::MrsDefault, 500), (Config::MrsBest, 500)];
    let total: usize =
        rows.iter().map(|r| r.1).sum::<usize>() + references.iter().map(|r| r.1).sum::<usize>();
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} network evaluations, {elapsed} ({eta} left)",
    )?);
    let mut ctx = Ctx {
        net: &mut net,
        bar,
        mu: mu.clone(),
        x_start,
        seed: args.seed,
    };
    let mut converged = Vec::new();
    for (cfg, nfe) in references {
        converged.push(ctx.run(cfg, nfe)?.0.x);
    }
    let mut results = Vec::new();
    for (cfg, nfe) in &rows {
        let (out, secs) = ctx.run(*cfg, *nfe)?;
        results.push((*cfg, *nfe, out.x, secs));
    }
    ctx.bar.finish_and_clear();
    let posterior100 = results
        .iter()
        .find(|r| matches!(r.0, Config::Posterior) && r.1 == 100)
        .map(|r| r.2.clone())
        .expect("row present");

    let clean_v = clean.to_dtype(DType::F64)?;
    if !args.json {
        let d = metrics::psnr(&mu.clamp(0f32, 1f32)?, &clean_v)?;
        println!(
            "Gaussian denoising, σ = 25/255, image {:?}; degraded input PSNR {d:.2} dB\n",
            clean.dims()
        );
        println!("| sampler | NFE | PSNR (dB) | SSIM | PSNR vs own converged (dB) | seconds |");
        println!("|---|---|---|---|---|---|");
    }
    for (cfg, nfe, x, secs) in &results {
        let reference = match cfg {
            Config::MrsDefault => &converged[0],
            Config::MrsBest => &converged[1],
            Config::Posterior | Config::Ablation(..) => &posterior100,
        };
        let p = metrics::psnr(x, &clean_v)?;
        let s = metrics::ssim(x, &clean_v)?;
        let c = metrics::psnr(x, reference)?;
        if args.json {
            println!(
                r#"{{"sampler": "{}", "nfe": {nfe}, "psnr": {p:.4}, "ssim": {s:.5}, "psnr_vs_converged": {c:.4}, "seconds": {secs:.3}}}"#,
                cfg.name()
            );
        } else {
            println!(
                "| {} | {nfe} | {p:.2} | {s:.4} | {} | {secs:.2} |",
                cfg.name(),
                if c.is_infinite() {
                    "∞ (is the reference)".to_string()
                } else {
                    format!("{c:.2}")
                }
            );
        }
    }
    let mut grid = vec![mu.clamp(0f32, 1f32)?];
    grid.extend(results.iter().map(|r| r.2.clone()));
    grid.push(clean.clone());
    let grid_path = root.join("target/restore_grid.png");
    write_grid(&grid, &grid_path)?;
    if !args.json {
        println!(
            "\ngrid (degraded, then each row in order, then ground truth): {}",
            grid_path.display()
        );
    }
    Ok(())
}

/// The paper's two ablations on this model: noise vs data parameterization and ODE vs SDE,
/// order 2 on linspace, at NFE 5, 10, 20 and 50 (PSNR / SSIM against the clean image).
fn ablation(
    net: &mut net::RestoreNet,
    clean: &Tensor,
    mu: &Tensor,
    x_start: &Tensor,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let nfes = [5, 10, 20, 50];
    let bar = ProgressBar::new((4 * nfes.iter().sum::<usize>()) as u64);
    let mut ctx = Ctx {
        net,
        bar,
        mu: mu.clone(),
        x_start: x_start.clone(),
        seed,
    };
    let clean_v = clean.to_dtype(DType::F64)?;
    let mut lines = Vec::new();
    for solver in [Solver::ode(2), Solver::sde(2)] {
        for param in [Parameterization::Data, Parameterization::Noise] {
            let cfg = Config::Ablation(solver, param);
            let mut line = format!("| {} |", cfg.name());
            for nfe in nfes {
                match ctx.run(cfg, nfe) {
                    Ok((out, _)) => {
                        line += &format!(
                            " {:.2} / {:.3} |",
                            metrics::psnr(&out.x, &clean_v)?,
                            metrics::ssim(&out.x, &clean_v)?
                        )
                    }
                    Err(e) => line += &format!(" error: {e} |"),
                }
            }
            lines.push(line);
        }
    }
    ctx.bar.finish_and_clear();
    println!("| sampler (order 2, linspace) | NFE 5 | NFE 10 | NFE 20 | NFE 50 |");
    println!("|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// PSNR / SSIM of the data-form ODE on three grids, orders 2 and 3, with and without the UniC
/// corrector and the prior correction, at 5, 10 and 20 NFE (how the "best configuration" was
/// chosen); then singlestep updates, the midpoint second-order form, and the adaptive-step
/// solver over a sweep of tolerances.
fn explore(
    net: &mut net::RestoreNet,
    clean: &Tensor,
    mu: &Tensor,
    x_start: &Tensor,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    use mrsampler::schedule::TimeGrid;
    use mrsampler::{AdaptiveSampler, EmbeddedPair, OdeMultistep, SdeMultistep, SecondOrder};
    let clean_v = clean.to_dtype(DType::F64)?;
    let mut row = |name: String,
                   build: &dyn Fn(usize) -> mrsampler::Result<MrSampler>|
     -> Result<(), Box<dyn std::error::Error>> {
        let mut line = format!("| {name} |");
        for nfe in [5, 10, 20] {
            let out = build(nfe)?.sample(
                net,
                mu,
                Some(x_start.clone()),
                &mut PhiloxNoise::new(seed + 1),
            )?;
            line += &format!(
                " {:.2} / {:.3} |",
                metrics::psnr(&out.x, &clean_v)?,
                metrics::ssim(&out.x, &clean_v)?
            );
        }
        println!("{line}");
        Ok(())
    };
    println!("| configuration | NFE 5 | NFE 10 | NFE 20 |");
    println!("|---|---|---|---|");
    let grids = [
        ("linspace", TimeGrid::Linspace),
        ("uniform-lambda", TimeGrid::UniformLambda),
        ("karras-t", TimeGrid::KarrasT { rho: 7.0 }),
    ];
    for (gname, grid) in &grids {
        for order in [2, 3] {
            for (corrector, prior) in [(false, false), (true, false), (false, true), (true, true)] {
                let name = format!(
                    "ode-{order} data {gname}{}{}",
                    if corrector { " + UniC" } else { "" },
                    if prior { " + prior corr." } else { "" }
                );
                row(name, &|nfe| {
                    mrs(nfe)?
                        .with_solver(OdeMultistep {
                            corrector,
                            ..OdeMultistep::new(order)
                        })?
                        .with_grid(grid.clone())?
                        .with_prior_correction(prior)
                })?;
            }
        }
    }
    for (gname, grid) in &grids {
        for order in [2, 3] {
            row(format!("ode-{order}s data {gname} (singlestep)"), &|nfe| {
                mrs(nfe)?
                    .with_solver(Solver::ode_singlestep(order))?
                    .with_grid(grid.clone())
            })?;
        }
        for sde in [false, true] {
            let kind = if sde { "sde" } else { "ode" };
            // The ODE's Taylor rows are above; the SDE's are printed here for comparison.
            let forms: &[SecondOrder] = if sde {
                &[SecondOrder::Taylor, SecondOrder::Midpoint]
            } else {
                &[SecondOrder::Midpoint]
            };
            for &second_order in forms {
                let fname = match second_order {
                    SecondOrder::Taylor => "taylor",
                    SecondOrder::Midpoint => "midpoint",
                };
                let solver = if sde {
                    Solver::Sde(SdeMultistep {
                        second_order,
                        ..SdeMultistep::new(2)
                    })
                } else {
                    Solver::Ode(OdeMultistep {
                        second_order,
                        ..OdeMultistep::new(2)
                    })
                };
                row(format!("{kind}-2 data {gname} ({fname})"), &|nfe| {
                    mrs(nfe)?.with_solver(solver)?.with_grid(grid.clone())
                })?;
            }
        }
    }
    println!("\n| adaptive (rtol = atol = tol) | tol | NFE | accepted / rejected | PSNR / SSIM |");
    println!("|---|---|---|---|---|");
    for (pname, pair) in [
        ("orders 1/2", EmbeddedPair::Orders12),
        ("orders 2/3", EmbeddedPair::Orders23),
    ] {
        for tol in [0.2, 0.1, 0.05, 0.02, 0.01] {
            let out = AdaptiveSampler::new(IrSdeSchedule::da_clip())?
                .with_pair(pair)?
                .with_tolerance(tol, tol)?
                .with_data_range(Some((0.0, 1.0)))?
                .sample(
                    net,
                    mu,
                    Some(x_start.clone()),
                    &mut PhiloxNoise::new(seed + 1),
                )?;
            println!(
                "| {pname} | {tol} | {} | {} / {} | {:.2} / {:.3} |",
                out.stats.nfe,
                out.stats.steps,
                out.stats.rejected_steps,
                metrics::psnr(&out.x, &clean_v)?,
                metrics::ssim(&out.x, &clean_v)?
            );
        }
    }
    Ok(())
}
