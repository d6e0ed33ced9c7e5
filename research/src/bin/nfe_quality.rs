//! Quality per network evaluation on exact oracle models (DA-CLIP schedule: cosine θ, T = 100,
//! eps = 0.005, max_sigma = 50).
//!
//! ```text
//! cargo run --release -p mrsampler-research --bin nfe_quality -- [--quick] [--json] [--oracle gaussian|gmm|both]
//!                                               [--samples N] [--threads N] [options below]
//! ```
//!
//! * Gaussian oracle (4 coordinates): the exact W2 distance per coordinate between the
//!   sampler's output law and the data law, averaged over coordinates; the output law is
//!   propagated exactly (`oracle::gaussian_output_law`, no Monte Carlo).
//! * Gaussian mixture (4 coordinates, 3 components): sliced W2 over 64 directions between N
//!   samples (default 100 000) and the exact law (each projection of the mixture is a 1-D
//!   mixture whose quantile function is tabulated), corrected for the Monte Carlo floor (the
//!   same distance for N exact samples): `sqrt(max(0, SW2² − floor²))`.
//! * Per sampler: the NFE needed to match strided posterior sampling at 100 NFE, interpolated in
//!   log-log between the measured NFEs (first crossing; `null` if never reached).
//!
//! The output clamp and thresholding are off for every sampler, so errors measure the solvers.
//!
//! `--order-rules` instead compares exact mode's order rules (`OrderRule`) on the Gaussian
//! oracle: the error per NFE of ODE-2/ODE-3 data on four grids under each rule.
//! `--curvature` instead profiles, along converged ODE trajectories of both oracles, how fast the
//! data prediction bends in λ (where few-step solvers lose accuracy).
//! `--adaptive` instead sweeps the `AdaptiveSampler`'s tolerance on both oracles (Monte Carlo)
//! and reports NFE, accepted and rejected steps and the error per tolerance (`--h-init H`: the
//! first λ-step, default 0.5 as the sampler's).
//!
//! Options of the normal tables (exact-mode MR Sampler rows):
//! * `--order-rule lower-order-final|full|step-ratio-R`: the order rule;
//! * `--corrector`: the UniC corrector (data-form ODE rows);
//! * `--prior-correction`: the prior mean correction (data-form rows);
//! * `--singlestep`: singlestep ODE rows (`Solver::OdeSinglestep`; an `s` after the order in
//!   their names);
//! * `--midpoint`: the midpoint second-order form (`SecondOrder`);
//! * `--grid NAME|custom:t0,t1,…` (repeatable): the grids, instead of the standard four.
//! * `--calibrate`: instead of named grids, each MR Sampler row at each NFE ≤ 20 runs on a grid
//!   calibrated for it (`mrsampler::Calibrator`, `docs/math.md` §10) on 1024 start states of
//!   its own (seed 2024), disjoint from the evaluation's; rows are named `…-calibrated-…`.
//!
//! Markdown tables go to stdout; with `--json` one JSON object per line instead:
//! `{"oracle", "sampler", "nfe", "error"}` and `{"oracle", "sampler", "nfe_to_match_posterior100"}`.

use std::sync::Arc;

use mrsampler::oracle::{GaussianOracle, GmmOracle, gaussian_output_law};
use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{
    AdaptiveSampler, Baseline, BaselineSampler, Calibrator, EmbeddedPair, Mode, MrSampler,
    OdeMultistep, Parameterization, PhiloxNoise, Sampler, SamplerTensor, SdeMultistep, SecondOrder,
    SeededNoise, Solver,
};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use mrsampler_research::{GAUSS_C, GAUSS_M, GMM_MEANS, GMM_S, GMM_W, MU};

#[derive(Clone, Debug)]
enum Spec {
    Mrs {
        mode: Mode,
        solver: Solver,
        param: Parameterization,
        grid: TimeGrid,
    },
    Base {
        mode: Mode,
        kind: Baseline,
    },
}

impl Spec {
    fn name(&self) -> String {
        match self {
            Spec::Mrs {
                mode,
                solver,
                param,
                grid,
            } => format!(
                "mrs-{}{}{}-{}-{}-{}",
                if solver.is_stochastic() { "sde" } else { "ode" },
                solver.order(),
                if singlestep(*mode, *solver) { "s" } else { "" },
                match param {
                    Parameterization::Data => "data",
                    Parameterization::Noise => "noise",
                },
                match grid {
                    TimeGrid::UniformLambda => "uniform-lambda",
                    _ if calibrating() => "calibrated",
                    g => g.name(),
                },
                mode_name(*mode)
            ),
            Spec::Base { mode, kind } => format!(
                "{}-{}",
                match kind {
                    Baseline::Posterior => "posterior",
                    Baseline::EulerMaruyama => "euler_maruyama",
                    Baseline::EulerOde => "euler_ode",
                    Baseline::Heun { .. } => "heun",
                },
                match mode {
                    Mode::Exact => "strided",
                    Mode::Reference => "reference",
                }
            ),
        }
    }

    /// Whether this sampler has an `nfe`-step configuration (a custom grid has only its own;
    /// calibrated rows run up to 20 steps).
    fn runs_at(&self, nfe: usize) -> bool {
        match self {
            Spec::Mrs { .. } if calibrating() => nfe <= 20,
            Spec::Mrs {
                grid: TimeGrid::Custom(v),
                ..
            } => v.len() == nfe + 1,
            _ => true,
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Spec::Mrs { mode, .. } | Spec::Base { mode, .. } => *mode,
        }
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Exact => "exact",
        Mode::Reference => "reference",
    }
}

/// The order rule applied to every exact-mode MR Sampler row (`--order-rule`).
static ORDER_RULE: std::sync::OnceLock<mrsampler::OrderRule> = std::sync::OnceLock::new();
/// Whether exact-mode data-form ODE rows get the UniC corrector (`--corrector`).
static CORRECTOR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// Whether exact-mode data-form MR Sampler rows get the prior correction (`--prior-correction`).
static PRIOR_CORRECTION: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// Whether exact-mode ODE rows use singlestep updates (`--singlestep`).
static SINGLESTEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn singlestep(mode: Mode, solver: Solver) -> bool {
    SINGLESTEP.get().copied().unwrap_or(false) && mode == Mode::Exact && !solver.is_stochastic()
}

/// The row's solver with the command line's knobs, each where it applies: exact mode for the
/// order rule, the midpoint form (orders ≥ 2) and singlestep; the corrector for the data-form
/// multistep ODE.
fn configured(mode: Mode, solver: Solver, param: Parameterization) -> Solver {
    let exact = mode == Mode::Exact;
    let order = solver.order();
    let order_rule = ORDER_RULE.get().copied().filter(|_| exact);
    let second_order = if MIDPOINT.get().copied().unwrap_or(false) && exact && order > 1 {
        SecondOrder::Midpoint
    } else {
        SecondOrder::Taylor
    };
    if solver.is_stochastic() {
        return Solver::Sde(SdeMultistep {
            order,
            second_order,
            order_rule,
        });
    }
    if singlestep(mode, solver) {
        return Solver::ode_singlestep(order);
    }
    Solver::Ode(OdeMultistep {
        second_order,
        corrector: CORRECTOR.get().copied().unwrap_or(false)
            && exact
            && param == Parameterization::Data,
        order_rule,
        ..OdeMultistep::new(order)
    })
}

/// Whether MR Sampler rows run on calibrated grids (`--calibrate`).
static CALIBRATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn calibrating() -> bool {
    CALIBRATE.get().copied().unwrap_or(false)
}

/// `spec` with its grid calibrated for `model` at `nfe` steps (`--calibrate`), else `spec`.
fn calibrated<M: mrsampler::ScoreModel<ArrayD<f64>>>(
    spec: &Spec,
    schedule: &Arc<dyn Schedule>,
    nfe: usize,
    model: &mut M,
) -> Result<Spec, mrsampler::Error> {
    let (Spec::Mrs { .. }, true) = (spec, calibrating()) else {
        return Ok(spec.clone());
    };
    let Some(sampler) = build_mrs(spec, schedule, nfe)? else {
        unreachable!("an MR Sampler row")
    };
    let mu = ArrayD::from_shape_fn(IxDyn(&[1024, 4]), |i| MU[i[1]]);
    let cal = Calibrator::new(nfe)?.calibrate(
        &sampler,
        model,
        &mu,
        &mut PhiloxNoise::new(2024),
        |_| {},
    )?;
    eprintln!(
        "{} at {nfe}: chose {} ({} evaluations of 1024 samples)",
        spec.name(),
        cal.best().name,
        cal.evaluations
    );
    let mut out = spec.clone();
    if let Spec::Mrs { grid, .. } = &mut out {
        *grid = TimeGrid::Custom(cal.grid);
    }
    Ok(out)
}

/// Whether exact-mode MR Sampler rows use the midpoint second-order form (`--midpoint`).
static MIDPOINT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Grids replacing the standard ones in the MR Sampler rows (`--grid`).
static GRIDS: std::sync::OnceLock<Vec<TimeGrid>> = std::sync::OnceLock::new();

/// The row's sampler.
fn build(
    spec: &Spec,
    schedule: &Arc<dyn Schedule>,
    nfe: usize,
) -> Result<Box<dyn Sampler>, mrsampler::Error> {
    if let Some(mrs) = build_mrs(spec, schedule, nfe)? {
        return Ok(Box::new(mrs));
    }
    let Spec::Base { mode, kind } = spec else {
        unreachable!("build_mrs builds the MR rows")
    };
    // The reference's unit steps at K < T are its defect, shown as such.
    Ok(Box::new(match mode {
        Mode::Reference if matches!(kind, Baseline::Posterior | Baseline::EulerMaruyama) => {
            BaselineSampler::from_arc(schedule.clone(), *kind, nfe)?
                .with_reference_unit_steps(true)?
        }
        _ => BaselineSampler::from_arc(schedule.clone(), *kind, nfe)?.with_mode(*mode)?,
    }))
}

/// The row's MR Sampler (`None` for a baseline row).
fn build_mrs(
    spec: &Spec,
    schedule: &Arc<dyn Schedule>,
    nfe: usize,
) -> Result<Option<MrSampler>, mrsampler::Error> {
    let Spec::Mrs {
        mode,
        solver,
        param,
        grid,
    } = spec
    else {
        return Ok(None);
    };
    Ok(Some(
        MrSampler::from_arc(schedule.clone(), nfe)?
            .with_mode(*mode)?
            .with_parameterization(*param)?
            .with_solver(configured(*mode, *solver, *param))?
            .with_grid(grid.clone())?
            .with_prior_correction(
                PRIOR_CORRECTION.get().copied().unwrap_or(false)
                    && *mode == Mode::Exact
                    && *param == Parameterization::Data,
            )?,
    ))
}

/// The schedule view the sampler evaluates α, σ with (the oracle must use the same).
fn view(spec: &Spec, schedule: &Arc<dyn Schedule>) -> Arc<dyn Schedule> {
    match spec.mode() {
        Mode::Exact => schedule.clone(),
        Mode::Reference => {
            Arc::new(mrsampler::schedule::ReferenceInterp::new(schedule.clone()).expect("discrete"))
        }
    }
}

fn gaussian_error(
    spec: &Spec,
    schedule: &Arc<dyn Schedule>,
    nfe: usize,
) -> Result<f64, mrsampler::Error> {
    let mut oracle = GaussianOracle::new(GAUSS_M.to_vec(), GAUSS_C.to_vec(), view(spec, schedule))?;
    let spec = &calibrated(spec, schedule, nfe, &mut oracle)?;
    let law = gaussian_output_law(&build(spec, schedule, nfe)?, &oracle, &MU)?;
    let per = law.w2_per_coordinate(&GAUSS_M, &GAUSS_C);
    let e = per.iter().sum::<f64>() / per.len() as f64;
    if e.is_finite() {
        Ok(e)
    } else {
        Err(mrsampler::Error::StepOrder {
            what: "non-finite output law",
        })
    }
}

/// Quantiles of the data law projected on `dir` (a 1-D Gaussian mixture) at `(i + ½)/n`,
/// by inverting the mixture CDF tabulated on a fine grid.
fn projected_quantiles(dir: &[f64; 4], n: usize) -> Vec<f64> {
    let centers: Vec<f64> = GMM_MEANS
        .iter()
        .map(|m| m.iter().zip(dir).map(|(a, b)| a * b).sum())
        .collect();
    let lo = centers
        .iter()
        .zip(&GMM_S)
        .map(|(c, s)| c - 9.0 * s)
        .fold(f64::INFINITY, f64::min);
    let hi = centers
        .iter()
        .zip(&GMM_S)
        .map(|(c, s)| c + 9.0 * s)
        .fold(f64::NEG_INFINITY, f64::max);
    let cdf = |x: f64| -> f64 {
        GMM_W
            .iter()
            .zip(&centers)
            .zip(&GMM_S)
            .map(|((w, c), s)| w * 0.5 * libm::erfc(-(x - c) / (s * std::f64::consts::SQRT_2)))
            .sum()
    };
    let grid = 400_000;
    let xs: Vec<f64> = (0..=grid)
        .map(|i| lo + (hi - lo) * i as f64 / grid as f64)
        .collect();
    let fs: Vec<f64> = xs.iter().map(|&x| cdf(x)).collect();
    let mut j = 0;
    (0..n)
        .map(|i| {
            let p = (i as f64 + 0.5) / n as f64;
            while j + 1 < grid && fs[j + 1] < p {
                j += 1;
            }
            let (f0, f1) = (fs[j], fs[j + 1]);
            let u = if f1 > f0 {
                ((p - f0) / (f1 - f0)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            xs[j] + u * (xs[j + 1] - xs[j])
        })
        .collect()
}

struct GmmBench {
    dirs: Vec<[f64; 4]>,
    quantiles: Vec<Vec<f64>>,
    floor_sq: f64,
    n: usize,
}

impl GmmBench {
    fn new(schedule: &Arc<dyn Schedule>, n: usize) -> Self {
        let oracle = gmm(schedule.clone());
        let mut rng = StdRng::seed_from_u64(2024);
        let dirs: Vec<[f64; 4]> = (0..64)
            .map(|_| {
                let v: [f64; 4] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.map(|x| x / norm)
            })
            .collect();
        let quantiles = dirs.iter().map(|d| projected_quantiles(d, n)).collect();
        let mut b = Self {
            dirs,
            quantiles,
            floor_sq: 0.0,
            n,
        };
        // The Monte Carlo floor: exact samples of the same size against the exact law.
        let exact = oracle.sample_data(n, &mut rng);
        b.floor_sq = b.sliced_w2_sq(&exact);
        b
    }

    /// Sliced W2² between samples (`[n, 4]` row-major) and the exact data law.
    fn sliced_w2_sq(&self, x: &[f64]) -> f64 {
        self.dirs
            .iter()
            .zip(&self.quantiles)
            .map(|(d, q)| {
                let mut p: Vec<f64> = x
                    .chunks(4)
                    .map(|r| r.iter().zip(d).map(|(u, v)| u * v).sum())
                    .collect();
                p.sort_by(f64::total_cmp);
                p.iter().zip(q).map(|(u, v)| (u - v).powi(2)).sum::<f64>() / self.n as f64
            })
            .sum::<f64>()
            / self.dirs.len() as f64
    }

    fn error(
        &self,
        spec: &Spec,
        schedule: &Arc<dyn Schedule>,
        nfe: usize,
    ) -> Result<f64, mrsampler::Error> {
        let mut oracle = gmm(view(spec, schedule));
        let spec = &calibrated(spec, schedule, nfe, &mut oracle)?;
        let mu = ArrayD::from_shape_fn(IxDyn(&[self.n, 4]), |i| MU[i[1]]);
        let mut noise = SeededNoise::new(7);
        let out = build(spec, schedule, nfe)?.sample(&mut oracle, &mu, None, &mut noise)?;
        let x = out.x_unclipped.to_host_f64()?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(mrsampler::Error::StepOrder {
                what: "non-finite output",
            });
        }
        Ok((self.sliced_w2_sq(&x) - self.floor_sq).max(0.0).sqrt())
    }
}

fn gmm(schedule: Arc<dyn Schedule>) -> GmmOracle {
    GmmOracle::new(
        GMM_W.to_vec(),
        GMM_MEANS.iter().map(|m| m.to_vec()).collect(),
        GMM_S.to_vec(),
        schedule,
    )
    .expect("valid mixture")
}

/// NFE where the error first reaches `target`, log-log interpolated.
fn nfe_to_match(nfes: &[usize], errs: &[Option<f64>], target: f64) -> Option<f64> {
    let mut prev: Option<(f64, f64)> = None;
    for (&n, e) in nfes.iter().zip(errs) {
        let Some(e) = *e else {
            prev = None;
            continue;
        };
        if e <= target {
            return Some(match prev {
                Some((pn, pe)) if pe > target => {
                    let (ln0, ln1) = (pn.ln(), (n as f64).ln());
                    let (le0, le1) = (pe.ln(), e.ln());
                    (ln0 + (target.ln() - le0) * (ln1 - ln0) / (le1 - le0)).exp()
                }
                _ => n as f64,
            });
        }
        prev = Some((n as f64, e));
    }
    None
}

fn specs(quick: bool) -> Vec<Spec> {
    let mut v = vec![
        Spec::Base {
            mode: Mode::Exact,
            kind: Baseline::Posterior,
        },
        Spec::Base {
            mode: Mode::Reference,
            kind: Baseline::Posterior,
        },
        Spec::Base {
            mode: Mode::Exact,
            kind: Baseline::EulerMaruyama,
        },
        Spec::Base {
            mode: Mode::Reference,
            kind: Baseline::EulerMaruyama,
        },
        Spec::Base {
            mode: Mode::Exact,
            kind: Baseline::EulerOde,
        },
        Spec::Base {
            mode: Mode::Reference,
            kind: Baseline::EulerOde,
        },
    ];
    let modes: &[Mode] = if quick || calibrating() {
        &[Mode::Exact]
    } else {
        &[Mode::Exact, Mode::Reference]
    };
    let grids = if calibrating() {
        // One row per solver; the grid is replaced by the calibrated one per NFE.
        vec![TimeGrid::Linspace]
    } else if let Some(g) = GRIDS.get() {
        g.clone()
    } else if quick {
        vec![TimeGrid::Linspace, TimeGrid::UniformLambda]
    } else {
        vec![
            TimeGrid::Linspace,
            TimeGrid::UniformLambda,
            TimeGrid::KarrasN { rho: 7.0 },
            TimeGrid::KarrasT { rho: 7.0 },
        ]
    };
    for &mode in modes {
        for grid in &grids {
            for solver in [
                Solver::ode(1),
                Solver::ode(2),
                Solver::ode(3),
                Solver::sde(1),
                Solver::sde(2),
            ] {
                for param in [Parameterization::Data, Parameterization::Noise] {
                    v.push(Spec::Mrs {
                        mode,
                        solver,
                        param,
                        grid: grid.clone(),
                    });
                }
            }
        }
    }
    v
}

struct Args {
    order_rules: bool,
    adaptive: bool,
    curvature: bool,
    h_init: f64,
    quick: bool,
    json: bool,
    gaussian: bool,
    gmm: bool,
    samples: Option<usize>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        order_rules: false,
        adaptive: false,
        curvature: false,
        h_init: 0.5,
        quick: false,
        json: false,
        gaussian: true,
        gmm: true,
        samples: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut grids = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--order-rules" => a.order_rules = true,
            "--adaptive" => a.adaptive = true,
            "--curvature" => a.curvature = true,
            "--h-init" => {
                a.h_init = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|h: &f64| *h > 0.0)
                    .ok_or("--h-init takes a positive λ-step")?
            }
            "--corrector" => {
                let _ = CORRECTOR.set(true);
            }
            "--midpoint" => {
                let _ = MIDPOINT.set(true);
            }
            "--singlestep" => {
                let _ = SINGLESTEP.set(true);
            }
            "--prior-correction" => {
                let _ = PRIOR_CORRECTION.set(true);
            }
            "--calibrate" => {
                let _ = CALIBRATE.set(true);
            }
            "--grid" => {
                let v = it
                    .next()
                    .ok_or("--grid takes a grid name or custom:t0,t1,...")?;
                let g = match v.strip_prefix("custom:") {
                    Some(list) => TimeGrid::Custom(
                        list.split(',')
                            .map(|x| x.trim().parse::<f64>())
                            .collect::<Result<_, _>>()
                            .map_err(|_| "bad custom grid time")?,
                    ),
                    None => v.parse::<TimeGrid>().map_err(|e| e.to_string())?,
                };
                grids.push(g);
            }
            "--order-rule" => {
                let rule = match it.next().as_deref() {
                    Some("lower-order-final") => mrsampler::OrderRule::LowerOrderFinal,
                    Some("full") => mrsampler::OrderRule::Full,
                    Some(r) if r.starts_with("step-ratio-") => mrsampler::OrderRule::StepRatio {
                        max_ratio: r["step-ratio-".len()..]
                            .parse()
                            .map_err(|_| "bad step-ratio-R")?,
                    },
                    _ => {
                        return Err(
                            "--order-rule takes lower-order-final, full or step-ratio-R".into()
                        );
                    }
                };
                let _ = ORDER_RULE.set(rule);
            }
            "--json" => a.json = true,
            "--oracle" => match it.next().as_deref() {
                Some("gaussian") => a.gmm = false,
                Some("gmm") => a.gaussian = false,
                Some("both") => {}
                _ => return Err("--oracle takes gaussian, gmm or both".into()),
            },
            "--samples" => {
                a.samples = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .ok_or("--samples takes a count")?,
                )
            }
            "--threads" => {
                a.threads = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--threads takes a positive count")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !grids.is_empty() {
        let _ = GRIDS.set(grids);
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let schedule: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
    if args.order_rules {
        order_rules(&schedule);
        return;
    }
    let nfes: Vec<usize> = if args.quick {
        vec![3, 5, 10, 20, 50, 100]
    } else {
        vec![3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100]
    };
    let specs = specs(args.quick);
    let samples = args
        .samples
        .unwrap_or(if args.quick { 20_000 } else { 100_000 });
    if args.curvature {
        curvature(&schedule);
        return;
    }
    if args.adaptive {
        if args.gaussian {
            adaptive_table(&schedule, None, samples, args.h_init);
        }
        if args.gmm {
            adaptive_table(
                &schedule,
                Some(&GmmBench::new(&schedule, samples)),
                samples,
                args.h_init,
            );
        }
        return;
    }
    let mut oracles: Vec<&str> = vec![];
    if args.gaussian {
        oracles.push("gaussian");
    }
    if args.gmm {
        oracles.push("gmm");
    }
    for oracle in oracles {
        let bench = (oracle == "gmm").then(|| GmmBench::new(&schedule, samples));
        // Work split across threads by sampler.
        let results: Vec<Vec<Option<f64>>> = std::thread::scope(|scope| {
            let chunk = specs.len().div_ceil(args.threads);
            let handles: Vec<_> = specs
                .chunks(chunk)
                .map(|part| {
                    let (schedule, nfes, bench) = (&schedule, &nfes, &bench);
                    scope.spawn(move || {
                        part.iter()
                            .map(|spec| {
                                nfes.iter()
                                    .map(|&n| {
                                        if !spec.runs_at(n) {
                                            return None;
                                        }
                                        let r = match bench {
                                            None => gaussian_error(spec, schedule, n),
                                            Some(b) => b.error(spec, schedule, n),
                                        };
                                        r.ok()
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect()
        });
        let target = results[0][nfes.iter().position(|&n| n == 100).expect("100 measured")];
        if args.json {
            for (spec, errs) in specs.iter().zip(&results) {
                for (&n, e) in nfes.iter().zip(errs) {
                    if let Some(e) = e {
                        println!(
                            r#"{{"oracle": "{oracle}", "sampler": "{}", "nfe": {n}, "error": {e:e}}}"#,
                            spec.name()
                        );
                    }
                }
            }
            for (spec, errs) in specs.iter().zip(&results) {
                let m = target.and_then(|t| nfe_to_match(&nfes, errs, t));
                let m = m.map_or("null".to_string(), |v| format!("{v:.2}"));
                println!(
                    r#"{{"oracle": "{oracle}", "sampler": "{}", "nfe_to_match_posterior100": {m}}}"#,
                    spec.name()
                );
            }
            continue;
        }
        match &bench {
            None => {
                println!("\n### Gaussian oracle: exact W2 per coordinate (mean over coordinates)\n")
            }
            Some(b) => println!(
                "\n### Gaussian mixture oracle: sliced W2 ({} directions, {} samples, floor {:.2e} removed)\n",
                b.dirs.len(),
                b.n,
                b.floor_sq.sqrt()
            ),
        }
        print!("| sampler |");
        for n in &nfes {
            print!(" {n} |");
        }
        println!(" NFE to match posterior@100 |");
        println!("|---|{}---|", "---|".repeat(nfes.len()));
        for (spec, errs) in specs.iter().zip(&results) {
            print!("| {} |", spec.name());
            for e in errs {
                match e {
                    Some(e) if *e > 0.0 => print!(" {e:.2e} |"),
                    Some(_) => print!(" <floor |"),
                    None => print!(" n/a |"),
                }
            }
            let m = target.and_then(|t| nfe_to_match(&nfes, errs, t));
            println!(
                " {} |",
                m.map_or("never".to_string(), |v| format!("{v:.1}"))
            );
        }
        if let Some(t) = target {
            println!("\nposterior@100 (strided) error: {t:.3e}");
        }
    }
}

/// Exact-mode order rules compared on the Gaussian oracle (exact W2 per coordinate, mean).
fn order_rules(schedule: &Arc<dyn Schedule>) {
    use mrsampler::OrderRule;
    let nfes = [3usize, 4, 5, 6, 8, 10, 12, 14, 15, 16, 20, 30, 50, 100];
    let rules = [
        ("lower-order-final", OrderRule::LowerOrderFinal),
        ("full", OrderRule::Full),
        ("step-ratio-1.5", OrderRule::StepRatio { max_ratio: 1.5 }),
        ("step-ratio-2", OrderRule::StepRatio { max_ratio: 2.0 }),
        ("step-ratio-4", OrderRule::StepRatio { max_ratio: 4.0 }),
    ];
    let target = gaussian_error(
        &Spec::Base {
            mode: Mode::Exact,
            kind: Baseline::Posterior,
        },
        schedule,
        100,
    )
    .expect("posterior runs");
    print!("| sampler | rule |");
    for n in nfes {
        print!(" {n} |");
    }
    println!(" NFE to match posterior@100 |");
    println!("|---|---|{}---|", "---|".repeat(nfes.len()));
    let grids = [
        TimeGrid::Linspace,
        TimeGrid::UniformLambda,
        TimeGrid::KarrasN { rho: 7.0 },
        TimeGrid::KarrasT { rho: 7.0 },
    ];
    for order in [2, 3] {
        for grid in &grids {
            for (rname, rule) in rules {
                let errs: Vec<Option<f64>> = nfes
                    .iter()
                    .map(|&n| {
                        let s = MrSampler::from_arc(schedule.clone(), n)
                            .ok()?
                            .with_solver(OdeMultistep {
                                order_rule: Some(rule),
                                ..OdeMultistep::new(order)
                            })
                            .ok()?
                            .with_grid(grid.clone())
                            .ok()?;
                        let oracle = GaussianOracle::new(
                            GAUSS_M.to_vec(),
                            GAUSS_C.to_vec(),
                            schedule.clone(),
                        )
                        .ok()?;
                        let per = gaussian_output_law(&s, &oracle, &MU)
                            .ok()?
                            .w2_per_coordinate(&GAUSS_M, &GAUSS_C);
                        Some(per.iter().sum::<f64>() / per.len() as f64)
                    })
                    .collect();
                let gname = match grid {
                    TimeGrid::UniformLambda => "uniform-lambda",
                    g => g.name(),
                };
                print!("| ode{order}-data-{gname} | {rname} |");
                for e in &errs {
                    match e {
                        Some(e) => print!(" {e:.2e} |"),
                        None => print!(" n/a |"),
                    }
                }
                let m = nfe_to_match(&nfes, &errs, target);
                println!(
                    " {} |",
                    m.map_or("never".to_string(), |v| format!("{v:.1}"))
                );
            }
        }
    }
    println!("\nposterior@100 (strided) error: {target:.3e}");
}

/// `--adaptive`: the `AdaptiveSampler` over a sweep of tolerances (`rtol = atol = tol`), by
/// Monte Carlo on `samples` draws for both oracles (its steps depend on the batch, so the
/// Gaussian law cannot be propagated exactly). The Gaussian error is the W2 per coordinate from
/// the sample moments, with the same estimator's value on exact data samples removed in
/// quadrature; the mixture error is the sliced W2 of the normal tables.
fn adaptive_table(
    schedule: &Arc<dyn Schedule>,
    bench: Option<&GmmBench>,
    samples: usize,
    h_init: f64,
) {
    let posterior = Spec::Base {
        mode: Mode::Exact,
        kind: Baseline::Posterior,
    };
    let (target, floor_sq) = match bench {
        Some(b) => (
            b.error(&posterior, schedule, 100).expect("posterior runs"),
            0.0,
        ),
        None => {
            let o = GaussianOracle::new(GAUSS_M.to_vec(), GAUSS_C.to_vec(), schedule.clone())
                .expect("valid law");
            let exact = o.sample_data(samples, &mut StdRng::seed_from_u64(99));
            (
                gaussian_error(&posterior, schedule, 100).expect("posterior runs"),
                moment_w2(&exact).powi(2),
            )
        }
    };
    let tols = [0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002];
    let configs = [
        (
            "12-data",
            EmbeddedPair::Orders12,
            Parameterization::Data,
            false,
        ),
        (
            "23-data",
            EmbeddedPair::Orders23,
            Parameterization::Data,
            false,
        ),
        (
            "12-data+pc",
            EmbeddedPair::Orders12,
            Parameterization::Data,
            true,
        ),
        (
            "23-data+pc",
            EmbeddedPair::Orders23,
            Parameterization::Data,
            true,
        ),
        (
            "23-noise",
            EmbeddedPair::Orders23,
            Parameterization::Noise,
            false,
        ),
    ];
    match bench {
        None => println!(
            "\n### Adaptive steps, Gaussian oracle: W2 per coordinate from {samples} samples (floor {:.2e} removed)\n",
            floor_sq.sqrt()
        ),
        Some(b) => println!(
            "\n### Adaptive steps, Gaussian mixture oracle: sliced W2 ({} directions, {} samples, floor {:.2e} removed)\n",
            b.dirs.len(),
            b.n,
            b.floor_sq.sqrt()
        ),
    }
    println!("| pair-form | tol | NFE | accepted | rejected | error |");
    println!("|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for (name, pair, param, pc) in configs {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for tol in tols {
            let sampler = AdaptiveSampler::from_arc(schedule.clone())
                .and_then(|s| s.with_tolerance(tol, tol))
                .and_then(|s| s.with_initial_step(h_init))
                .and_then(|s| s.with_pair(pair))
                .and_then(|s| s.with_parameterization(param))
                .and_then(|s| s.with_prior_correction(pc))
                .expect("valid settings");
            let mu = ArrayD::from_shape_fn(IxDyn(&[samples, 4]), |i| MU[i[1]]);
            let mut noise = SeededNoise::new(7);
            let out = match bench {
                Some(_) => sampler.sample(&mut gmm(schedule.clone()), &mu, None, &mut noise),
                None => {
                    let mut o =
                        GaussianOracle::new(GAUSS_M.to_vec(), GAUSS_C.to_vec(), schedule.clone())
                            .expect("valid law");
                    sampler.sample(&mut o, &mu, None, &mut noise)
                }
            };
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    println!("| {name} | {tol} | failed: {e} | | | |");
                    continue;
                }
            };
            let x = out.x_unclipped.to_host_f64().expect("host copy");
            let err = match bench {
                Some(b) => (b.sliced_w2_sq(&x) - b.floor_sq).max(0.0).sqrt(),
                None => (moment_w2(&x).powi(2) - floor_sq).max(0.0).sqrt(),
            };
            let st = &out.stats;
            println!(
                "| {name} | {tol} | {} | {} | {} | {err:.2e} |",
                st.nfe, st.steps, st.rejected_steps
            );
            points.push((st.nfe as f64, err));
        }
        // Smallest NFE at which the error reaches the target, log-log interpolated between
        // consecutive tolerances.
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut hit = None;
        for w in points.windows(2) {
            let ((n0, e0), (n1, e1)) = (w[0], w[1]);
            if e0 <= target {
                hit = Some(n0);
                break;
            }
            if e1 <= target {
                hit = Some(if n1 > n0 && e1 > 0.0 {
                    let f = (target.ln() - e0.ln()) / (e1.ln() - e0.ln());
                    (n0.ln() + f * (n1.ln() - n0.ln())).exp()
                } else {
                    n1
                });
                break;
            }
        }
        summary.push((name, hit));
    }
    println!("\n| pair-form | NFE to match posterior@100 |\n|---|---|");
    for (name, hit) in summary {
        println!(
            "| {name} | {} |",
            hit.map_or("never".to_string(), |v| format!("{v:.1}"))
        );
    }
    println!("\nposterior@100 (strided) error: {target:.3e}");
}

/// Mean over coordinates of the W2 distance between `N(sample mean, sample variance)` and the
/// Gaussian benchmark law, for samples `[n, 4]` row-major.
fn moment_w2(x: &[f64]) -> f64 {
    let n = (x.len() / 4) as f64;
    (0..4)
        .map(|j| {
            let mean = x.iter().skip(j).step_by(4).sum::<f64>() / n;
            let var = x
                .iter()
                .skip(j)
                .step_by(4)
                .map(|v| (v - mean).powi(2))
                .sum::<f64>()
                / n;
            ((mean - GAUSS_M[j]).powi(2) + (var.sqrt() - GAUSS_C[j].sqrt()).powi(2)).sqrt()
        })
        .sum::<f64>()
        / 4.0
}

/// `(λ, x̂₀ of every draw)` at each evaluation of a pass.
type Trace = Vec<(f64, Vec<f64>)>;

/// `--curvature`: along converged trajectories (ODE-3 data, 600 uniform-λ steps, prior
/// correction, 4 000 prior draws) the RMS over draws and coordinates of `d²x̂₀/dλ²` (second
/// differences of the data predictions the solver sees), per λ-bin, and the narrowest
/// λ-interval holding 80 % of its integral, for both oracles.
fn curvature(schedule: &Arc<dyn Schedule>) {
    let n = 4000;
    let steps = 600;
    let sampler = MrSampler::from_arc(schedule.clone(), steps)
        .and_then(|s| s.with_solver(Solver::ode(3)))
        .and_then(|s| s.with_grid(TimeGrid::UniformLambda))
        .and_then(|s| s.with_prior_correction(true))
        .expect("valid settings");
    let mu = ArrayD::from_shape_fn(IxDyn(&[n, 4]), |i| MU[i[1]]);
    let profile = |name: &str, model: &mut dyn FnMut(&mut Trace)| {
        let mut rec: Trace = Vec::new();
        model(&mut rec);
        // Second differences in λ of each draw's x̂₀ (the grid is uniform in λ before the limit).
        let usable: Vec<&(f64, Vec<f64>)> = rec.iter().filter(|(l, _)| l.is_finite()).collect();
        let mut curv = Vec::new();
        for w in usable.windows(3) {
            let (l0, a) = (w[0].0, &w[0].1);
            let (l1, b) = (w[1].0, &w[1].1);
            let (l2, c) = (w[2].0, &w[2].1);
            let (h0, h1) = (l1 - l0, l2 - l1);
            let ms = a
                .iter()
                .zip(b)
                .zip(c)
                .map(|((a, b), c)| {
                    let d2 = 2.0 * ((c - b) / h1 - (b - a) / h0) / (h0 + h1);
                    d2 * d2
                })
                .sum::<f64>()
                / a.len() as f64;
            curv.push((l1, ms.sqrt(), 0.5 * (h0 + h1)));
        }
        let total: f64 = curv.iter().map(|(_, c, h)| c * h).sum();
        // Narrowest window holding 80 % of the integral.
        let mut best = (f64::INFINITY, 0.0, 0.0);
        let mut j = 0;
        let mut acc = 0.0;
        for i in 0..curv.len() {
            while j < curv.len() && acc < 0.8 * total {
                acc += curv[j].1 * curv[j].2;
                j += 1;
            }
            if acc >= 0.8 * total {
                let width = curv[j - 1].0 - curv[i].0;
                if width < best.0 {
                    best = (width, curv[i].0, curv[j - 1].0);
                }
            }
            acc -= curv[i].1 * curv[i].2;
        }
        let peak = curv
            .iter()
            .copied()
            .fold((0.0, 0.0, 0.0), |m, c| if c.1 > m.1 { c } else { m });
        let range = curv.last().map_or(f64::NAN, |c| c.0) - curv.first().map_or(f64::NAN, |c| c.0);
        println!(
            "| {name} | {:.3e} | {:.2} | [{:.2}, {:.2}] | {:.2} of {range:.2} |",
            peak.1, peak.0, best.1, best.2, best.0
        );
    };
    println!(
        "| oracle | peak RMS of d²x̂₀/dλ² | at λ | narrowest λ-window with 80 % of its integral | width |"
    );
    println!("|---|---|---|---|---|");
    let record = |rec: &mut Vec<(f64, Vec<f64>)>,
                  mut m: &mut dyn mrsampler::ScoreModel<ArrayD<f64>>| {
        let mut obs = |v: &mrsampler::StepView<'_, ArrayD<f64>>| {
            rec.push((schedule.lambda(v.t), v.x0_hat.iter().copied().collect()));
        };
        sampler
            .sample_observed(&mut m, &mu, None, &mut SeededNoise::new(11), &mut obs)
            .expect("converged solve runs");
    };
    profile("gaussian", &mut |rec| {
        let mut o = GaussianOracle::new(GAUSS_M.to_vec(), GAUSS_C.to_vec(), schedule.clone())
            .expect("valid law");
        record(rec, &mut o);
    });
    profile("gmm", &mut |rec| {
        let mut o = gmm(schedule.clone());
        record(rec, &mut o);
    });
}
