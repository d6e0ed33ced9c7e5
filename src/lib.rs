//! # mrsampler
//!
//! Fast samplers for **Mean-Reverting (MR) diffusion models** (IR-SDE, DA-CLIP universal
//! image restoration). The MR process `dx = θ_t(μ − x)dt + σ_t dw` restores an image by running
//! backwards from `μ + noise`, where `μ` is the degraded image. The stock samplers need 100+
//! network evaluations (NFE); the **MR Sampler** (Li et al., *MRS: a fast sampler for mean
//! reverting diffusion*, ICLR 2025) solves the probability-flow ODE and the reverse SDE
//! semi-analytically with exponential integrators, and keeps quality at 5–20 NFE.
//!
//! ## Quick start
//!
//! Implement [`ScoreModel`] for your network (or wrap a closure in [`FnModel`]), pick a
//! schedule and a sampler, and sample:
//!
//! ```
//! use mrsampler::{FitTarget, FnModel, MrSampler, Sampler, SeededNoise};
//! use mrsampler::schedule::IrSdeSchedule;
//! use ndarray::ArrayD;
//!
//! # fn main() -> Result<(), mrsampler::Error> {
//! // DA-CLIP's schedule: cosine θ, T = 100, eps = 0.005, max_sigma = 50.
//! let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 10)?;
//!
//! // Your network: called with (x_t, μ, t), t in index units as IR-SDE networks expect.
//! let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f32>, mu: &ArrayD<f32>, _t: f64| {
//!     Ok((x - mu) * 5.0)
//! });
//!
//! let mu = ArrayD::<f32>::from_elem(vec![1, 3, 16, 16], 0.5); // the degraded image
//! let out = sampler.sample(&mut net, &mu, None, &mut SeededNoise::new(0))?;
//! assert_eq!(out.stats.nfe, 10);
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! * [`schedule`]: pure `f64` process math: [`IrSdeSchedule`](schedule::IrSdeSchedule),
//!   the [`Schedule`](schedule::Schedule) trait for continuous MR schedules, standard VP / VE
//!   schedules (μ = 0), the reference interpolation and the time grids.
//! * [`param`]: fit targets (noise / data / velocity / score) and exact converters.
//! * [`solver`]: per-step `f64` coefficients of every solver and baseline.
//! * [`sampler`]: [`MrSampler`] (with optional UniC corrector, order rules, singlestep
//!   updates), [`BaselineSampler`], the step-level [`Run`], observers, and the
//!   tolerance-driven [`AdaptiveSampler`].
//! * [`tensor`]: the [`SamplerTensor`] backend trait (implemented for `ndarray` arrays of
//!   `f32` / `f64`) and [`NoiseSource`]s.
//! * [`oracle`]: Gaussian and Gaussian-mixture models with exact posterior means.
//!
//! ## Two fidelity modes
//!
//! [`Mode::Exact`](schedule::Mode::Exact) (default) is the method without the reference
//! implementation's defects; [`Mode::Reference`](schedule::Mode::Reference) reproduces the
//! public PyTorch implementation number for number. `docs/architecture.md` lists the
//! differences.
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `conformance` | no | the `mrsampler-case-v1` replay format (the `conformance` module, `serde_json`) |
//! | `candle` | no | [`SamplerTensor`] for `candle_core::Tensor` (f64, f32; f16/bf16 stepped in f32), `CandleNoise` |
//! | `cuda`, `metal` | no | `candle` on CUDA / Metal devices |
//! | `nn` | no | `candle-nn`, for the examples that build networks |
//! | `burn` | no | [`SamplerTensor`] for `burn::tensor::Tensor<B, D>` over any burn backend, `BurnRandn` |
//!
//! The ndarray backend (`ndarray::Array<f32 | f64, D>`) is always available.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::float_cmp)]
#![doc(test(attr(deny(warnings))))]

pub mod error;
pub mod model;
pub mod oracle;
pub mod param;
pub mod sampler;
pub mod schedule;
pub mod solver;
pub mod tensor;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use error::{Error, ModelError, Result};
pub use model::{CountingModel, FnModel, ScoreModel};
pub use param::{FitTarget, Parameterization};
pub use sampler::{
    AdaptiveSampler, Baseline, BaselineSampler, EmbeddedPair, MrSampler, Observer, OrderRule,
    Pending, Run, Sample, Sampler, Stats, StepView, Stepping, Thresholding,
};
pub use tensor::{NoiseSource, Parallelism, PhiloxNoise, ReplayNoise, SamplerTensor, SeededNoise};

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
