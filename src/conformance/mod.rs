//! The `mrsampler-case-v1` conformance format: fixed-input, fixed-noise replays of one sampling
//! run, for comparing implementations number by number (porting a PyTorch pipeline: dump one
//! run there, replay it here).
//!
//! [`parse_file`] splits a file into cases, [`Case::from_json`] validates one case,
//! [`run_case`] replays it on any [`SamplerTensor`] backend, [`check`] compares the result with
//! the case's `expected` block and [`result_json`] writes the runner's output line. Nothing
//! here panics on malformed input: every problem is a [`CaseError`].

mod case;
mod toy;

pub use case::{Case, CaseError, CaseSampler, Expected, ModelSpec};
pub use toy::ToyModel;

use serde_json::{Value, json};

use crate::error::Error;
use crate::model::ScoreModel;
use crate::oracle::{GaussianOracle, GmmOracle};
use crate::param::FitTarget;
use crate::sampler::{Observer, Sampler, StepView};
use crate::schedule::Schedule;
use crate::tensor::{ReplayNoise, SamplerTensor};
use std::sync::Arc;

/// Schema tag of the format.
pub const SCHEMA: &str = "mrsampler-case-v1";

/// What one replay produced (every array flattened row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The returned sample (MR Sampler: clamped to `[0, 1]`; baselines: not clamped).
    pub final_: Vec<f64>,
    /// The last state before the clamp.
    pub final_unclipped: Vec<f64>,
    /// The state after each evaluation.
    pub states: Vec<Vec<f64>>,
    /// The converted (and thresholded) model output of each evaluation.
    pub model_outputs: Vec<Vec<f64>>,
    /// The sampling grid.
    pub timesteps: Vec<f64>,
    /// Order per evaluation (0: `denoise_last`).
    pub orders: Vec<usize>,
    /// Network evaluations.
    pub n_model_calls: usize,
}

/// Splits a case file into its cases, each still raw JSON (so one bad case does not hide the
/// others). Errors if the text is not JSON, the schema is wrong, or `cases` is missing.
pub fn parse_file(text: &str) -> Result<Vec<Value>, CaseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| CaseError::Json(e.to_string()))?;
    let obj = v.as_object().ok_or(CaseError::WrongType {
        key: "<file>".into(),
        expected: "an object",
    })?;
    match obj.get("schema").and_then(Value::as_str) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(CaseError::Invalid {
                key: "schema".into(),
                reason: format!("expected \"{SCHEMA}\", found \"{other}\""),
            });
        }
        None => {
            return Err(CaseError::Missing {
                key: "schema".into(),
            });
        }
    }
    match obj.get("cases") {
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(CaseError::WrongType {
            key: "cases".into(),
            expected: "an array",
        }),
        None => Err(CaseError::Missing {
            key: "cases".into(),
        }),
    }
}

/// Records states and converted outputs.
struct Recorder {
    states: Vec<Vec<f64>>,
    outputs: Vec<Vec<f64>>,
    failed: Option<Error>,
}

impl<T: SamplerTensor> Observer<T> for Recorder {
    fn on_step(&mut self, view: &StepView<'_, T>) {
        match (view.x.to_host_f64(), view.model_output.to_host_f64()) {
            (Ok(x), Ok(q)) => {
                self.states.push(x);
                self.outputs.push(q);
            }
            (Err(e), _) | (_, Err(e)) => self.failed = Some(e),
        }
    }
    fn wants_x0_hat(&self) -> bool {
        false
    }
}

/// The model a case names, as a boxed [`ScoreModel`] on tensors `T`.
fn build_model<T: SamplerTensor>(
    case: &Case,
    fit: FitTarget,
    view: Arc<dyn Schedule>,
) -> Result<Box<dyn ScoreModel<T>>, CaseError> {
    let event: usize = case.shape[1..].iter().product();
    Ok(match &case.model {
        ModelSpec::Toy => Box::new(ToyModel::new(fit, view.t_max())),
        ModelSpec::Gaussian { m, c, event_shape } => {
            check_event(event_shape, event, m.len())?;
            Box::new(GaussianOracle::new(m.clone(), c.clone(), view)?)
        }
        ModelSpec::Gmm {
            weights,
            means,
            stds,
            event_shape,
        } => {
            check_event(event_shape, event, means.first().map_or(0, Vec::len))?;
            Box::new(GmmOracle::new(
                weights.clone(),
                means.clone(),
                stds.clone(),
                view,
            )?)
        }
    })
}

fn check_event(event_shape: &[usize], event: usize, params: usize) -> Result<(), CaseError> {
    let declared: usize = event_shape.iter().product();
    if declared != event || params != event {
        return Err(CaseError::Invalid {
            key: "model.event_shape".into(),
            reason: format!(
                "event_shape {event_shape:?} ({declared} elements) and the parameters ({params} \
                 elements) must match the per-sample size {event} of `shape`"
            ),
        });
    }
    Ok(())
}

/// Replays `case` on the backend of `proto` (any tensor of the wanted element type and
/// device; its values are not used).
pub fn run_case<T: SamplerTensor>(case: &Case, proto: &T) -> Result<Outcome, CaseError> {
    let mu = proto.new_from_host(&case.shape, &case.mu)?;
    let x_t = proto.new_from_host(&case.shape, &case.x_t)?;
    let mut noise = ReplayNoise::new(case.noises.clone());
    let mut rec = Recorder {
        states: vec![],
        outputs: vec![],
        failed: None,
    };
    let CaseSampler {
        sampler,
        fit,
        model_schedule,
        ..
    } = &case.sampler;
    let mut model = build_model::<T>(case, *fit, model_schedule.clone())?;
    let sample =
        sampler.sample_observed(&mut model.as_mut(), &mu, Some(x_t), &mut noise, &mut rec)?;
    if let Some(e) = rec.failed {
        return Err(e.into());
    }
    Ok(Outcome {
        final_: sample.x.to_host_f64()?,
        final_unclipped: sample.x_unclipped.to_host_f64()?,
        states: rec.states,
        model_outputs: rec.outputs,
        timesteps: sample.stats.timesteps,
        orders: sample.stats.orders,
        n_model_calls: sample.stats.nfe,
    })
}

/// The runner's output line for one case: every key of the contract, or `error`.
pub fn result_json(name: &str, result: &Result<Outcome, CaseError>) -> Value {
    match result {
        Ok(o) => json!({
            "name": name,
            "final": o.final_,
            "final_unclipped": o.final_unclipped,
            "states": o.states,
            "model_outputs": o.model_outputs,
            "timesteps": o.timesteps,
            "orders": o.orders,
            "n_model_calls": o.n_model_calls,
        }),
        Err(e) => json!({ "name": name, "error": e.to_string() }),
    }
}

/// Compares a replay with the case's `expected` block. Returns the mismatches (empty: pass).
///
/// Floats must satisfy `|got − want| ≤ tol·max(1, |want|)` with the case's tolerance (default
/// 1e-12); orders and call counts must be equal; `expected.error` requires an error.
/// `exact_endpoint` (Gaussian ODE cases) is checked against the Gaussian oracle's exact
/// probability-flow map over the replayed grid.
pub fn check(case: &Case, result: &Result<Outcome, CaseError>) -> Vec<String> {
    let exp = &case.expected;
    let tol = case.tolerance;
    let mut bad = Vec::new();
    let o = match (result, exp.error) {
        (Err(_), true) => return bad,
        (Ok(_), true) => {
            bad.push("expected an error, but the run succeeded".into());
            return bad;
        }
        (Err(e), false) => {
            bad.push(format!("run failed: {e}"));
            return bad;
        }
        (Ok(o), false) => o,
    };
    let cmp = |bad: &mut Vec<String>, key: &str, got: &[f64], want: &[f64]| {
        compare(bad, tol, key, got, want)
    };
    if let Some(w) = &exp.final_ {
        cmp(&mut bad, "final", &o.final_, w);
    }
    if let Some(w) = &exp.final_unclipped {
        cmp(&mut bad, "final_unclipped", &o.final_unclipped, w);
    }
    if let Some(w) = &exp.timesteps {
        cmp(&mut bad, "timesteps", &o.timesteps, w);
    }
    for (key, got, want) in [
        ("states", &o.states, &exp.states),
        ("model_outputs", &o.model_outputs, &exp.model_outputs),
    ] {
        if let Some(w) = want {
            if got.len() != w.len() {
                bad.push(format!(
                    "{key}: {} entries != expected {}",
                    got.len(),
                    w.len()
                ));
            } else {
                for (k, (g, w)) in got.iter().zip(w).enumerate() {
                    cmp(&mut bad, &format!("{key}[{k}]"), g, w);
                }
            }
        }
    }
    if let Some(w) = &exp.exact_endpoint
        && let ModelSpec::Gaussian { m, c, .. } = &case.model
    {
        match exact_endpoint(case, m, c, &o.timesteps) {
            Ok(e) => cmp(&mut bad, "exact_endpoint (oracle map)", &e, w),
            Err(e) => bad.push(format!("exact_endpoint: {e}")),
        }
    }
    if let Some(w) = &exp.orders
        && &o.orders != w
    {
        bad.push(format!("orders: {:?} != expected {w:?}", o.orders));
    }
    if let Some(w) = exp.n_model_calls
        && o.n_model_calls != w
    {
        bad.push(format!(
            "n_model_calls: {} != expected {w}",
            o.n_model_calls
        ));
    }
    bad
}

fn compare(bad: &mut Vec<String>, tol: f64, key: &str, got: &[f64], want: &[f64]) {
    if got.len() != want.len() {
        bad.push(format!(
            "{key}: length {} != expected {}",
            got.len(),
            want.len()
        ));
        return;
    }
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| (i, (g - w).abs() / w.abs().max(1.0)))
        .fold(
            (0, 0.0f64),
            |a, b| if b.1 > a.1 || b.1.is_nan() { b } else { a },
        );
    if worst.1.is_nan() || worst.1 > tol {
        bad.push(format!(
            "{key}[{}]: got {}, expected {} (scaled error {:.3e} > {tol:e})",
            worst.0, got[worst.0], want[worst.0], worst.1
        ));
    }
}

/// The exact probability-flow solution from `x_T` over `timesteps[0] → timesteps[M]`.
fn exact_endpoint(
    case: &Case,
    m: &[f64],
    c: &[f64],
    timesteps: &[f64],
) -> Result<Vec<f64>, CaseError> {
    let view = case.sampler.model_schedule.clone();
    let oracle = GaussianOracle::new(m.to_vec(), c.to_vec(), view)?;
    let (t1, t0) = match (timesteps.first(), timesteps.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => {
            return Err(CaseError::Invalid {
                key: "timesteps".into(),
                reason: "empty grid".into(),
            });
        }
    };
    let d = m.len();
    Ok(case
        .x_t
        .iter()
        .zip(&case.mu)
        .enumerate()
        .map(|(j, (&x, &mu))| oracle.pf_ode_map(j % d, x, mu, t1, t0))
        .collect())
}
