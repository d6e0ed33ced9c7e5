//! Analytic models with exact answers, for tests, benchmarks and users' own property tests.
//!
//! For Gaussian (and Gaussian-mixture) data under the MR process the posterior mean
//! `E[x₀ | x_t, μ]` is closed-form, so these models are the *ideal* network: a sampler's
//! error against them is pure discretization error. They predict data (`x̂₀`) and evaluate
//! `α(t)`, `σ(t)` through the schedule view they are given, normally
//! [`MrSampler::model_schedule`](crate::MrSampler::model_schedule), so in reference mode they
//! see the same interpolated coefficients as the sampler (`docs/math.md` §9.7).
//!
//! They work on every backend through the host round-trip of
//! [`SamplerTensor`](crate::SamplerTensor).

mod gaussian;
mod gmm;
mod propagate;

pub use gaussian::GaussianOracle;
pub use gmm::GmmOracle;
pub use propagate::{GaussianLaw, Start, gaussian_output_law, gaussian_output_law_from};

use crate::error::{Error, ModelError, Result};
use crate::param::FitTarget;

/// Expresses an exact data prediction `x0` at state `x` as the quantity `fit` (`docs/math.md` §2):
/// noise `ε = (x − μ − α(x̂₀ − μ))/σ`, velocity `α σ∞ ε − (σ/σ∞)(x̂₀ − μ)`, score `−ε/σ`.
pub(crate) fn express(
    fit: FitTarget,
    x0: f64,
    x: f64,
    mu: f64,
    alpha: f64,
    sigma: f64,
    sigma_inf: f64,
) -> f64 {
    let eps = || (x - mu - alpha * (x0 - mu)) / sigma;
    match fit {
        FitTarget::Data => x0,
        FitTarget::Noise => eps(),
        FitTarget::Velocity => alpha * sigma_inf * eps() - (sigma / sigma_inf) * (x0 - mu),
        FitTarget::Score => -eps() / sigma,
    }
}

/// Splits a batch shape `[B, event…]` into `(B, event size)` and checks the event size.
pub(crate) fn batch_split(
    shape: &[usize],
    event: usize,
) -> std::result::Result<(usize, usize), ModelError> {
    let total: usize = shape.iter().product();
    if event == 0 || !total.is_multiple_of(event) {
        return Err(Error::ShapeMismatch {
            what: "oracle input (event size)",
            expected: vec![event],
            found: shape.to_vec(),
        }
        .into());
    }
    Ok((total / event, event))
}

pub(crate) fn check_finite(what: &'static str, v: &[f64]) -> Result<()> {
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(Error::setting(
            what,
            bad,
            "every oracle parameter must be finite",
        ));
    }
    Ok(())
}
