//! Per-step coefficients of every solver, in pure `f64` (`docs/math.md` §4.2, §6, §7.2).
//!
//! A step is always "one fused linear combination" of the current state `x_s`, the last few
//! converted model outputs `q₀, q₁, q₂` (most recent first), the mean `μ`, an optional
//! intermediate stage and an optional fresh noise draw `z`. This module computes the weights;
//! the [`sampler`](crate::sampler) module applies them to tensors.

mod baseline_steps;
mod multistep;
mod phi;
mod singlestep;
mod unipc;

pub(crate) use baseline_steps::{
    ProcessAt, euler_coefficients, heun_corrector_coefficients, posterior_coefficients_exact,
    posterior_coefficients_reference,
};
pub(crate) use multistep::{Equation, Node, multistep_coefficients};
pub use multistep::{SecondOrder, ThirdOrder};
pub(crate) use singlestep::{singlestep_coefficients, singlestep_fractions};
pub(crate) use unipc::unic_corrected_state;

/// Weights of one update `out = x·x_s + stage·x̂ + Σ q[i]·q_i + mu·μ + noise·z`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepCoeffs {
    /// Weight of the current state `x_s`.
    pub x: f64,
    /// Weight of the intermediate stage (Heun's predictor); 0 for single-stage updates.
    pub stage: f64,
    /// Weights of the last four converted model outputs, most recent first.
    pub q: [f64; 4],
    /// Weight of the mean `μ`.
    pub mu: f64,
    /// Weight of a fresh standard-normal draw; `None` when the step draws no noise.
    pub noise: Option<f64>,
}

impl StepCoeffs {
    /// All weights zero, no noise.
    pub(crate) const ZERO: Self = Self {
        x: 0.0,
        stage: 0.0,
        q: [0.0; 4],
        mu: 0.0,
        noise: None,
    };
}
