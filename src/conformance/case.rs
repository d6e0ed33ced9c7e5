//! Parsing and validating one case.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{Mode, OdeMultistep, OrderRule, SdeMultistep, Solver, Thresholding};
use crate::error::Error;
use crate::param::{FitTarget, Parameterization};
use crate::sampler::{Baseline, BaselineSampler, Sampler};
use crate::schedule::{CumulativeFrom, IrSdeSchedule, Schedule, ThetaSchedule, TimeGrid};
use crate::spec::{GridSpec, SamplerKind, SamplerSpec};

/// Why a case could not be read or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// The file is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required key is absent.
    #[error("missing key `{key}`")]
    Missing {
        /// Dotted path of the key.
        key: String,
    },
    /// A key has the wrong JSON type.
    #[error("`{key}` must be {expected}")]
    WrongType {
        /// Dotted path of the key.
        key: String,
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `sampler.kind` or `model.kind` this runner does not know.
    #[error("unknown {what} kind \"{kind}\"")]
    UnknownKind {
        /// `sampler` or `model`.
        what: &'static str,
        /// The unknown kind.
        kind: String,
    },
    /// The library rejected the configuration or failed while sampling.
    #[error(transparent)]
    Library(#[from] Error),
}

/// The sampler a case configures, with how its model reads the output.
#[derive(Debug, Clone)]
pub struct CaseSampler {
    /// The case's sampler in the crate's text form ([`SamplerSpec`]): the format's `kind`,
    /// `solver_type`, `order`, `parameterization` and time grid; the format's other options
    /// (mode, order rule, `lambda_min`, thresholding, `denoise_last`) are set on the sampler.
    pub spec: SamplerSpec,
    /// The configured sampler (an MR Sampler or a baseline).
    pub sampler: Arc<dyn Sampler>,
    /// How the model output is read (baselines read noise).
    pub fit: FitTarget,
    /// The schedule the model evaluates `α`, `σ` on (the sampler's view of it).
    pub model_schedule: Arc<dyn Schedule>,
}

/// The model a case names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// [`ToyModel`](super::ToyModel).
    Toy,
    /// Gaussian oracle `N(m, diag c)`.
    Gaussian {
        /// Means.
        m: Vec<f64>,
        /// Variances.
        c: Vec<f64>,
        /// Per-sample shape.
        event_shape: Vec<usize>,
    },
    /// Isotropic Gaussian-mixture oracle.
    Gmm {
        /// Mixture weights.
        weights: Vec<f64>,
        /// Component means.
        means: Vec<Vec<f64>>,
        /// Component stds.
        stds: Vec<f64>,
        /// Per-sample shape.
        event_shape: Vec<usize>,
    },
}

/// The `expected` block (every key optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// The returned sample.
    pub final_: Option<Vec<f64>>,
    /// The last state before the clamp.
    pub final_unclipped: Option<Vec<f64>>,
    /// States after each evaluation.
    pub states: Option<Vec<Vec<f64>>>,
    /// Converted model outputs.
    pub model_outputs: Option<Vec<Vec<f64>>>,
    /// The grid.
    pub timesteps: Option<Vec<f64>>,
    /// Orders per evaluation.
    pub orders: Option<Vec<usize>>,
    /// Network evaluations.
    pub n_model_calls: Option<usize>,
    /// Exact probability-flow endpoint (Gaussian ODE cases).
    pub exact_endpoint: Option<Vec<f64>>,
    /// The case must fail.
    pub error: bool,
}

/// One validated case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique name.
    pub name: String,
    /// Full tensor shape, batch first.
    pub shape: Vec<usize>,
    /// The sampler.
    pub sampler: CaseSampler,
    /// The model.
    pub model: ModelSpec,
    /// `μ`, flattened.
    pub mu: Vec<f64>,
    /// The start state, flattened.
    pub x_t: Vec<f64>,
    /// The standard-normal draws, in order of use.
    pub noises: Vec<Vec<f64>>,
    /// The expected results.
    pub expected: Expected,
    /// Tolerance factor (default 1e-12).
    pub tolerance: f64,
}

type Obj = Map<String, Value>;

fn obj<'a>(v: &'a Value, key: &str) -> Result<&'a Obj, CaseError> {
    v.as_object().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "an object",
    })
}

fn req<'a>(o: &'a Obj, path: &str, key: &str) -> Result<&'a Value, CaseError> {
    o.get(key).ok_or_else(|| CaseError::Missing {
        key: format!("{path}{key}"),
    })
}

fn f64_of(v: &Value, key: &str) -> Result<f64, CaseError> {
    v.as_f64().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "a number",
    })
}

fn usize_of(v: &Value, key: &str) -> Result<usize, CaseError> {
    if let Some(u) = v.as_u64() {
        return usize::try_from(u).map_err(|_| CaseError::Invalid {
            key: key.into(),
            reason: "too large".into(),
        });
    }
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(f as usize),
        _ => Err(CaseError::WrongType {
            key: key.into(),
            expected: "a non-negative integer",
        }),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str, CaseError> {
    v.as_str().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "a string",
    })
}

fn bool_of(v: &Value, key: &str) -> Result<bool, CaseError> {
    v.as_bool().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "a boolean",
    })
}

fn vec_f64(v: &Value, key: &str) -> Result<Vec<f64>, CaseError> {
    let a = v.as_array().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "an array of numbers",
    })?;
    a.iter()
        .enumerate()
        .map(|(i, x)| f64_of(x, &format!("{key}[{i}]")))
        .collect()
}

fn vec_vec_f64(v: &Value, key: &str) -> Result<Vec<Vec<f64>>, CaseError> {
    let a = v.as_array().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "an array of arrays of numbers",
    })?;
    a.iter()
        .enumerate()
        .map(|(i, x)| vec_f64(x, &format!("{key}[{i}]")))
        .collect()
}

fn vec_usize(v: &Value, key: &str) -> Result<Vec<usize>, CaseError> {
    let a = v.as_array().ok_or_else(|| CaseError::WrongType {
        key: key.into(),
        expected: "an array of integers",
    })?;
    a.iter()
        .enumerate()
        .map(|(i, x)| usize_of(x, &format!("{key}[{i}]")))
        .collect()
}

/// Optional key with a default.
fn opt<'a, T>(
    o: &'a Obj,
    path: &str,
    key: &str,
    default: T,
    f: impl Fn(&'a Value, &str) -> Result<T, CaseError>,
) -> Result<T, CaseError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => f(v, &format!("{path}{key}")),
    }
}

/// The `name` of a raw case, or a placeholder naming its position.
pub(crate) fn case_name(v: &Value, index: usize) -> String {
    v.get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("<case #{index} without a name>"), str::to_string)
}

impl Case {
    /// The name of a raw case, or `<case #i without a name>`.
    pub fn name_of(v: &Value, index: usize) -> String {
        case_name(v, index)
    }

    /// Validates one raw case and builds its sampler.
    pub fn from_json(v: &Value) -> Result<Self, CaseError> {
        let c = obj(v, "<case>")?;
        let name = str_of(req(c, "", "name")?, "name")?.to_string();
        let shape = vec_usize(req(c, "", "shape")?, "shape")?;
        if shape.is_empty() || shape.contains(&0) {
            return Err(CaseError::Invalid {
                key: "shape".into(),
                reason: format!("{shape:?}: needs a batch axis and no zero-sized axis"),
            });
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(CaseError::Invalid {
                key: "shape".into(),
                reason: "too many elements".into(),
            })?;
        let schedule: Arc<dyn Schedule> = Arc::new(parse_schedule(req(c, "", "schedule")?)?);
        let sampler = parse_sampler(req(c, "", "sampler")?, schedule)?;
        let model = parse_model(req(c, "", "model")?)?;

        let inputs = obj(req(c, "", "inputs")?, "inputs")?;
        let mu = vec_f64(req(inputs, "inputs.", "mu")?, "inputs.mu")?;
        let x_t = vec_f64(req(inputs, "inputs.", "x_T")?, "inputs.x_T")?;
        let noises = opt(inputs, "inputs.", "noises", vec![], vec_vec_f64)?;
        for (key, len) in [("inputs.mu", mu.len()), ("inputs.x_T", x_t.len())] {
            if len != numel {
                return Err(CaseError::Invalid {
                    key: key.into(),
                    reason: format!("{len} values for shape {shape:?} ({numel} elements)"),
                });
            }
        }
        for (k, n) in noises.iter().enumerate() {
            if n.len() != numel {
                return Err(CaseError::Invalid {
                    key: format!("inputs.noises[{k}]"),
                    reason: format!("{} values for shape {shape:?} ({numel} elements)", n.len()),
                });
            }
        }
        let expected = match c.get("expected") {
            None | Some(Value::Null) => Expected::default(),
            Some(e) => parse_expected(e)?,
        };
        let tolerance = opt(c, "", "tolerance", 1e-12, f64_of)?;
        if !(tolerance >= 0.0 && tolerance.is_finite()) {
            return Err(CaseError::Invalid {
                key: "tolerance".into(),
                reason: "must be finite and >= 0".into(),
            });
        }
        Ok(Self {
            name,
            shape,
            sampler,
            model,
            mu,
            x_t,
            noises,
            expected,
            tolerance,
        })
    }
}

fn parse_schedule(v: &Value) -> Result<IrSdeSchedule, CaseError> {
    let p = "schedule.";
    let s = obj(v, "schedule")?;
    let theta: ThetaSchedule =
        str_of(req(s, p, "theta_schedule")?, "schedule.theta_schedule")?.parse()?;
    let steps = usize_of(req(s, p, "T")?, "schedule.T")?;
    let eps = f64_of(req(s, p, "eps")?, "schedule.eps")?;
    let cum: CumulativeFrom = opt(s, p, "cumulative_from", "zero", str_of)?.parse()?;
    let input = opt(s, p, "max_sigma_input", None, |v, k| f64_of(v, k).map(Some))?;
    let sigma_inf = opt(s, p, "max_sigma", None, |v, k| f64_of(v, k).map(Some))?;
    let sched = match (input, sigma_inf) {
        (Some(ms), si) => {
            let sched = IrSdeSchedule::new(theta, steps, eps, ms)?;
            if let Some(si) = si
                && (sched.sigma_inf() - si).abs() > 1e-12 * si.abs()
            {
                return Err(CaseError::Invalid {
                    key: "schedule.max_sigma".into(),
                    reason: format!(
                        "{si} disagrees with max_sigma_input {ms} (σ∞ = {} by the ÷255 rule)",
                        sched.sigma_inf()
                    ),
                });
            }
            sched
        }
        (None, Some(si)) => IrSdeSchedule::with_sigma_inf(theta, steps, eps, si)?,
        (None, None) => {
            return Err(CaseError::Missing {
                key: "schedule.max_sigma".into(),
            });
        }
    };
    Ok(sched.with_cumulative_from(cum))
}

fn parse_mode(o: &Obj, p: &str) -> Result<Mode, CaseError> {
    match str_of(req(o, p, "mode")?, "sampler.mode")? {
        "reference" => Ok(Mode::Reference),
        "exact" => Ok(Mode::Exact),
        other => Err(CaseError::Invalid {
            key: "sampler.mode".into(),
            reason: format!("\"{other}\": use \"reference\" or \"exact\""),
        }),
    }
}

fn parse_sampler(v: &Value, schedule: Arc<dyn Schedule>) -> Result<CaseSampler, CaseError> {
    let p = "sampler.";
    let s = obj(v, "sampler")?;
    let kind = str_of(req(s, p, "kind")?, "sampler.kind")?;
    let baseline = match kind {
        "mrs" => None,
        "euler_maruyama" => Some(SamplerKind::EulerMaruyama),
        "posterior" => Some(SamplerKind::Posterior),
        "euler_ode" => Some(SamplerKind::EulerOde),
        "heun_ode" => Some(SamplerKind::HeunOde),
        "heun_sde" => Some(SamplerKind::HeunSde),
        other => {
            return Err(CaseError::UnknownKind {
                what: "sampler",
                kind: other.into(),
            });
        }
    };
    let mode = parse_mode(s, p)?;
    let steps = usize_of(req(s, p, "num_steps")?, "sampler.num_steps")?;
    if let Some(kind) = baseline {
        let spec = SamplerSpec::baseline(kind);
        let b = kind.baseline().ok_or(Error::StepOrder {
            what: "a baseline kind without a baseline",
        })?;
        // A reference-mode case asks for the reference's arithmetic, unit steps included.
        let sampler = BaselineSampler::from_arc(schedule.clone(), b, steps)?;
        let unit_steps = mode == Mode::Reference
            && matches!(b, Baseline::EulerMaruyama | Baseline::Posterior)
            && schedule.knots().is_some_and(|k| steps + 1 < k.t.len());
        let sampler = if unit_steps {
            sampler.with_reference_unit_steps(true)?
        } else {
            sampler.with_mode(mode)?
        };
        return Ok(CaseSampler {
            spec,
            sampler: Arc::new(sampler),
            fit: FitTarget::Noise,
            model_schedule: schedule,
        });
    }
    let order = usize_of(req(s, p, "order")?, "sampler.order")?;
    let kind = match str_of(req(s, p, "solver_type")?, "sampler.solver_type")? {
        "ode" => SamplerKind::MrsOde,
        "sde" => SamplerKind::MrsSde,
        other => {
            return Err(CaseError::Invalid {
                key: "sampler.solver_type".into(),
                reason: format!("\"{other}\": use \"ode\" or \"sde\""),
            });
        }
    };
    let param: Parameterization =
        str_of(req(s, p, "parameterization")?, "sampler.parameterization")?.parse()?;
    let fit: FitTarget = str_of(req(s, p, "fit_target")?, "sampler.fit_target")?.parse()?;
    let rho = opt(s, p, "rho", 7.0, f64_of)?;
    let offset = opt(s, p, "timestep_offset", 0.0, f64_of)?;
    let custom = opt(s, p, "timesteps", None, |v, k| vec_f64(v, k).map(Some))?;
    let grid_name = str_of(req(s, p, "time_schedule")?, "sampler.time_schedule")?;
    let grid = match (grid_name, custom) {
        ("custom", Some(times)) => {
            if times.len() != steps + 1 {
                return Err(CaseError::Invalid {
                    key: "sampler.timesteps".into(),
                    reason: format!("{} times for num_steps = {steps}", times.len()),
                });
            }
            GridSpec::Times(times)
        }
        ("custom", None) => {
            return Err(CaseError::Invalid {
                key: "sampler.timesteps".into(),
                reason: "the custom grid needs its list of times".into(),
            });
        }
        (name, _) => GridSpec::Named(match name.parse()? {
            TimeGrid::KarrasN { .. } => TimeGrid::KarrasN { rho },
            TimeGrid::KarrasT { .. } => TimeGrid::KarrasT { rho },
            TimeGrid::Leading { .. } => TimeGrid::Leading { offset },
            other => other,
        }),
    };
    if steps == 0 && !matches!(grid, GridSpec::Times(_)) {
        return Err(Error::setting("num_steps", 0, "at least one step is needed").into());
    }
    let spec = SamplerSpec {
        kind,
        order,
        param,
        grid,
    };
    // Exact mode replays the specification's order rule (`lower_order_final`), which the
    // library's default refines (`OrderRule`'s documentation).
    let rule = (mode == Mode::Exact).then_some(OrderRule::LowerOrderFinal);
    let solver = match kind {
        SamplerKind::MrsSde => Solver::Sde(SdeMultistep {
            order_rule: rule,
            ..SdeMultistep::new(order)
        }),
        _ => Solver::Ode(OdeMultistep {
            order_rule: rule,
            ..OdeMultistep::new(order)
        }),
    };
    let lambda_min = opt(s, p, "lambda_min", None, |v, k| f64_of(v, k).map(Some))?;
    // The reference's Karras grids span the whole schedule whatever lambda_min says; the
    // sampler refuses the pair, so the replay leaves lambda_min out for them.
    let lambda_min = lambda_min.filter(|_| {
        !matches!(
            spec.grid,
            GridSpec::Named(TimeGrid::KarrasN { .. } | TimeGrid::KarrasT { .. })
        )
    });
    let thresholding = opt(s, p, "thresholding", false, bool_of)?;
    let ratio = opt(s, p, "threshold_ratio", 0.995, f64_of)?;
    let tmax = opt(s, p, "threshold_max", 1.5, f64_of)?;
    let floor = opt(s, p, "threshold_floor", 1.0, f64_of)?;
    let denoise_last = opt(s, p, "denoise_last", false, bool_of)?;
    let thresholds = if thresholding {
        Some(Thresholding::bounded(ratio, floor, tmax)?)
    } else {
        None
    };
    // The format's MRS `final` is clipped to the image range [0, 1].
    let mut sampler = spec
        .build_mrs(schedule, steps)?
        .ok_or(Error::StepOrder {
            what: "an MR Sampler kind that built no MR Sampler",
        })?
        .with_mode(mode)?
        .with_data_range(Some((0.0, 1.0)))?
        .with_solver(solver)?
        .with_lambda_min(lambda_min)?
        .with_denoise_last(denoise_last)?;
    // The format accepts thresholding where exact mode has nothing to threshold (the noise form
    // without a final data prediction), as a no-op; the sampler refuses that pair.
    if sampler.has_data_predictions_to_threshold() {
        sampler = sampler.with_thresholding(thresholds)?;
    }
    Ok(CaseSampler {
        spec,
        model_schedule: sampler.model_schedule()?,
        sampler: Arc::new(sampler),
        fit,
    })
}

fn parse_model(v: &Value) -> Result<ModelSpec, CaseError> {
    let p = "model.";
    let m = obj(v, "model")?;
    match str_of(req(m, p, "kind")?, "model.kind")? {
        "toy" => Ok(ModelSpec::Toy),
        "gaussian_oracle" => Ok(ModelSpec::Gaussian {
            m: vec_f64(req(m, p, "m")?, "model.m")?,
            c: vec_f64(req(m, p, "c")?, "model.c")?,
            event_shape: vec_usize(req(m, p, "event_shape")?, "model.event_shape")?,
        }),
        "gmm_oracle" => Ok(ModelSpec::Gmm {
            weights: vec_f64(req(m, p, "weights")?, "model.weights")?,
            means: vec_vec_f64(req(m, p, "means")?, "model.means")?,
            stds: vec_f64(req(m, p, "stds")?, "model.stds")?,
            event_shape: vec_usize(req(m, p, "event_shape")?, "model.event_shape")?,
        }),
        other => Err(CaseError::UnknownKind {
            what: "model",
            kind: other.into(),
        }),
    }
}

fn parse_expected(v: &Value) -> Result<Expected, CaseError> {
    let p = "expected.";
    let e = obj(v, "expected")?;
    let some = |v: &Value, k: &str| vec_f64(v, k).map(Some);
    Ok(Expected {
        final_: opt(e, p, "final", None, some)?,
        final_unclipped: opt(e, p, "final_unclipped", None, some)?,
        states: opt(e, p, "states", None, |v, k| vec_vec_f64(v, k).map(Some))?,
        model_outputs: opt(e, p, "model_outputs", None, |v, k| {
            vec_vec_f64(v, k).map(Some)
        })?,
        timesteps: opt(e, p, "timesteps", None, some)?,
        orders: opt(e, p, "orders", None, |v, k| vec_usize(v, k).map(Some))?,
        n_model_calls: opt(e, p, "n_model_calls", None, |v, k| usize_of(v, k).map(Some))?,
        exact_endpoint: opt(e, p, "exact_endpoint", None, some)?,
        error: !matches!(
            e.get("error"),
            None | Some(Value::Null) | Some(Value::Bool(false))
        ),
    })
}
