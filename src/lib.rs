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
//! use mrsampler::prelude::*;
//! use ndarray::ArrayD;
//!
//! # fn main() -> Result<(), mrsampler::Error> {
//! // DA-CLIP's schedule: cosine θ, T = 100, eps = 0.005, max_sigma = 50.
//! let sampler = MrSampler::new(IrSdeSchedule::da_clip(), 10)?.with_data_range(Some((0.0, 1.0)))?;
//!
//! // Your network: called with (x_t, μ, t), t in index units as IR-SDE networks expect.
//! let mut net = FnModel::new(FitTarget::Noise, |x: &ArrayD<f32>, mu: &ArrayD<f32>, _t: f64| {
//!     Ok((x - mu) * 5.0)
//! });
//!
//! let mu = ArrayD::<f32>::from_elem(vec![1, 3, 16, 16], 0.5); // (batch, channels, h, w)
//! let out = sampler.sample(&mut net, &mu, None, &mut SeededNoise::new(0))?;
//! assert_eq!(out.stats.nfe, 10);
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! The configuration is compiled, in pure `f64`, into a [`Plan`]; a [`Run`] applies it to
//! tensors. `docs/math.md` is the mathematics every module cites.
//!
//! * [`schedule`]: process math: [`IrSdeSchedule`](schedule::IrSdeSchedule), the
//!   [`Schedule`](schedule::Schedule) trait for continuous MR schedules, standard VP / VE
//!   schedules (μ = 0), the reference interpolation and the time grids.
//! * [`param`]: fit targets (noise / data / velocity / score) and exact converters.
//! * `solver` (private): per-step `f64` coefficients of every solver and baseline, and the
//!   `φ`-functions.
//! * `plan` (private): the planners that turn a configuration into a [`Plan`] (multistep,
//!   singlestep, baselines, the adaptive controller).
//! * [`sampler`]: the configurations ([`MrSampler`] with its [`Solver`], [`BaselineSampler`],
//!   [`AdaptiveSampler`]), the [`Sampler`] trait, the step-level [`Run`] and observers.
//! * [`tensor`]: the [`SamplerTensor`] backend trait (implemented for `ndarray` arrays of
//!   `f32` / `f64`, candle and burn tensors) and [`NoiseSource`]s.
//! * [`oracle`]: Gaussian and Gaussian-mixture models with exact posterior means.
//!
//! ## Two fidelity modes
//!
//! [`Mode::Exact`] (default) is the method without the reference implementation's defects;
//! [`Mode::Reference`] reproduces the public PyTorch implementation number for number.
//! `docs/math.md` §7 lists the differences.
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `conformance` | no | the `mrsampler-case-v1` replay format (the `conformance` module, `serde_json`) |
//! | `candle` | no | [`SamplerTensor`] for `candle_core::Tensor` (f64, f32; f16/bf16 stepped in f32), `CandleNoise`; candle 0.11 re-exported as `candle` |
//! | `cuda`, `metal` | no | `candle` on CUDA / Metal devices |
//! | `nn` | no | `candle-nn` (re-exported as `candle_nn`), for building networks on the same candle |
//! | `burn` | no | [`SamplerTensor`] for `burn::tensor::Tensor<B, D>` over any burn backend, `BurnRandn`; burn 0.18 re-exported as `burn` |
//!
//! The ndarray backend (`ndarray::Array<f32 | f64, D>`) is always available.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::float_cmp)]
#![doc(test(attr(deny(warnings))))]

mod calibrate;
mod config;
pub mod error;
mod mode;
pub mod model;
pub mod oracle;
pub mod param;
mod plan;
pub mod sampler;
pub mod schedule;
mod solver;
mod spec;
pub mod tensor;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// The `ndarray` crate (0.17) the default backend is written for: `ArrayD<f32>` and
/// `ArrayD<f64>` are [`SamplerTensor`]s of this version only, so depend on `ndarray = "0.17"`
/// or use this re-export (`mrsampler::ndarray::ArrayD`).
pub use ndarray;

/// The `candle-core` crate this build uses (feature `candle`): depend on this re-export, or on
/// the same version, so that tensors match the [`SamplerTensor`] impl.
#[cfg(feature = "candle")]
#[cfg_attr(docsrs, doc(cfg(feature = "candle")))]
pub use candle_core as candle;

/// The `candle-nn` crate this build uses (feature `nn`), for building networks on the same
/// candle version.
#[cfg(feature = "nn")]
#[cfg_attr(docsrs, doc(cfg(feature = "nn")))]
pub use candle_nn;

/// The `burn` crate this build uses (feature `burn`).
#[cfg(feature = "burn")]
#[cfg_attr(docsrs, doc(cfg(feature = "burn")))]
pub use burn;

pub use calibrate::{Calibration, CalibrationCost, CalibrationProgress, Calibrator, GridScore};
pub use config::{Mode, OdeMultistep, OrderRule, SdeMultistep, Solver, Thresholding};
pub use error::{BoxedError, Error, ModelError, Result};
pub use model::{CountingModel, FnModel, ScoreModel};
pub use param::{FitTarget, Parameterization};
pub use sampler::{
    AdaptiveSampler, Baseline, BaselineSampler, CoupledNoise, EmbeddedPair, MrSampler, Observer,
    Pending, Plan, Run, Sample, Sampler, SecondOrder, Stats, StepView, ThirdOrder, observe,
};
pub use spec::{GridSpec, SamplerKind, SamplerSpec};
pub use tensor::{
    CounterDraw, NoNoise, NoiseSource, Parallelism, PhiloxNoise, ReplayNoise, SamplerTensor,
    SeededNoise,
};

/// Everything a typical program needs, in one import: `use mrsampler::prelude::*;`.
pub mod prelude {
    pub use crate::ndarray::{ArrayD, IxDyn};
    pub use crate::schedule::{IrSdeSchedule, Schedule, TimeGrid};
    pub use crate::{
        AdaptiveSampler, Baseline, BaselineSampler, Error, FitTarget, FnModel, Mode, ModelError,
        MrSampler, NoNoise, NoiseSource, Observer, OdeMultistep, Parallelism, Parameterization,
        PhiloxNoise, Result, Sample, Sampler, SamplerTensor, ScoreModel, SdeMultistep, SeededNoise,
        Solver, StepView, observe,
    };
}

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
