//! The tensor interface the solvers need, its ndarray implementation, and noise sources.
//!
//! Every solver step is "a handful of `f64` coefficients, then one fused linear combination
//! of a few tensors". A backend therefore implements only [`SamplerTensor`]'s eight methods:
//! its layout, the linear combination (overwriting or accumulating), the fused step,
//! per-sample dynamic thresholding, clamping, a finiteness check and a host round-trip. The ndarray backend runs
//! these as SIMD kernels (runtime-dispatched, scalar fallback) split across threads.

#[cfg(feature = "burn")]
mod burn_impl;
#[cfg(feature = "candle")]
mod candle_impl;
mod element;
mod kernels;
mod ndarray_impl;
mod noise;
mod normal;
mod philox;

#[cfg(feature = "burn")]
pub use burn_impl::BurnRandn;
#[cfg(feature = "candle")]
pub use candle_impl::CandleNoise;
pub use noise::{CounterDraw, NoNoise, NoiseSource, PhiloxNoise, ReplayNoise, SeededNoise};
pub use philox::philox4x32_10;

use std::borrow::Cow;

use crate::error::{Error, Result};

/// How a backend may split a kernel across threads. Results never depend on it: every kernel
/// is elementwise (or per sample), so any split gives bitwise-identical output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parallelism {
    /// One thread.
    Sequential,
    /// Rayon's global pool, split into at most this many parts (0: one per pool thread).
    /// Tensors below a size threshold (32 768 elements) stay on one thread.
    Rayon(usize),
}

impl Default for Parallelism {
    /// `Rayon(0)`: all threads of rayon's global pool.
    fn default() -> Self {
        Parallelism::Rayon(0)
    }
}

impl Parallelism {
    /// Number of parts a kernel over `n` elements is split into.
    pub fn parts_for(self, n: usize) -> usize {
        self.parts(n)
    }

    /// Number of parts to split `n` elements into.
    pub(crate) fn parts(self, n: usize) -> usize {
        const MIN_PER_PART: usize = 1 << 15;
        match self {
            Parallelism::Sequential => 1,
            Parallelism::Rayon(k) => {
                let k = if k == 0 {
                    rayon::current_num_threads()
                } else {
                    k
                };
                k.min(n / MIN_PER_PART).max(1)
            }
        }
    }
}

/// A tensor's shape and element type, as the samplers check them at their door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<'a> {
    /// The dimensions, batch axis first.
    pub shape: Cow<'a, [usize]>,
    /// The element type's name (`"f32"`, `"f64"`, `"bf16"`, …).
    pub dtype: &'static str,
}

/// One fused sampler step (`docs/math.md` §8): the network output `net` is converted into the
/// stored output `q ← convert[0]·net + convert[1]·x + convert[2]·μ`, then the state is updated
/// in place, `x ← keep·x + q_weight·q + Σ cᵢ·tᵢ`.
#[derive(Debug, Clone, Copy)]
pub struct FusedStep<'a, T> {
    /// The raw network output.
    pub net: &'a T,
    /// The mean `μ`.
    pub mu: &'a T,
    /// The conversion's weights on `net`, `x` and `μ`.
    pub convert: [f64; 3],
    /// The weight of the current state.
    pub keep: f64,
    /// The weight of the converted output.
    pub q_weight: f64,
    /// The other terms: earlier outputs, `μ`, the noise draw when it is a tensor.
    pub terms: &'a [(f64, &'a T)],
    /// The noise draw's weight and the draw, when the noise source hands it to the kernel
    /// instead of filling a tensor ([`NoiseSource::counter_draw`]); it is the last term.
    pub noise: Option<(f64, CounterDraw<'a>)>,
}

/// A tensor type the samplers can step. The first axis is the batch axis.
///
/// Eight methods: coefficients are `f64` and implementations cast them to the element type
/// inside the kernel. [`convert_and_step`](Self::convert_and_step) has a correct (two-pass)
/// default; every other method is required. Shape helpers are the free functions [`shape`],
/// [`numel`] and [`batch_size`]; an allocating combination is [`lincomb`].
pub trait SamplerTensor: Clone + Send + Sync + std::fmt::Debug + Sized {
    /// Shape and element type.
    fn layout(&self) -> Layout<'_>;

    /// `self ← keep·self + Σ cᵢ·tᵢ`; with `keep = None` self is overwritten and its old
    /// values are never read (so a NaN there does not leak). Errors on a shape mismatch.
    fn linear_combination(
        &mut self,
        keep: Option<f64>,
        terms: &[(f64, &Self)],
        par: Parallelism,
    ) -> Result<()>;

    /// One fused step on the state `self` and the stored-output buffer `q` (see
    /// [`FusedStep`]). Backends override it to do both in one pass over memory.
    fn convert_and_step(
        &mut self,
        q: &mut Self,
        step: FusedStep<'_, Self>,
        par: Parallelism,
    ) -> Result<()> {
        convert_then_step(self, q, step, par)
    }

    /// Dynamic thresholding per sample (`docs/math.md` §6.2): `s = quantile(|x|, ratio)` over
    /// each sample, clamped to `[floor, max]`, then `x ← clamp(x, −s, s)/s`.
    fn threshold_per_sample(
        &mut self,
        ratio: f64,
        floor: f64,
        max: f64,
        par: Parallelism,
    ) -> Result<()>;

    /// Elementwise clamp to `[lo, hi]` (NaN stays NaN).
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self>;

    /// Whether every element is finite.
    fn all_finite(&self, par: Parallelism) -> Result<bool>;

    /// The elements, widened to `f64`, in row-major order.
    fn to_host_f64(&self) -> Result<Vec<f64>>;

    /// A tensor of `shape` holding `data` (row-major), on `self`'s device and dtype.
    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self>;
}

/// The shape of `x`.
pub fn shape<T: SamplerTensor>(x: &T) -> Vec<usize> {
    x.layout().shape.into_owned()
}

/// The number of elements of `x`.
pub fn numel<T: SamplerTensor>(x: &T) -> usize {
    x.layout().shape.iter().product()
}

/// The batch size of `x` (its first axis; 1 for a scalar).
pub fn batch_size<T: SamplerTensor>(x: &T) -> usize {
    x.layout().shape.first().copied().unwrap_or(1)
}

/// `Σ cᵢ·tᵢ` as a new tensor (shaped like the first term).
pub fn lincomb<T: SamplerTensor>(terms: &[(f64, &T)], par: Parallelism) -> Result<T> {
    let (_, first) = terms.first().ok_or(Error::StepOrder {
        what: "lincomb called with no terms",
    })?;
    let mut out = (*first).clone();
    out.linear_combination(None, terms, par)?;
    Ok(out)
}

/// The two-pass form of [`SamplerTensor::convert_and_step`]: the conversion into `q`, then
/// the update of `x` (the default, and the fallback of backends that fuse).
pub(crate) fn convert_then_step<T: SamplerTensor>(
    x: &mut T,
    q: &mut T,
    step: FusedStep<'_, T>,
    par: Parallelism,
) -> Result<()> {
    let c = step.convert;
    q.linear_combination(None, &[(c[0], step.net), (c[1], &*x), (c[2], step.mu)], par)?;
    // A counter draw becomes a tensor through the host, in f64 (as `PhiloxNoise` fills
    // tensors of backends other than ndarray).
    let z = match &step.noise {
        Some((_, draw)) => {
            let shape = shape(x);
            let mut host = vec![0f64; shape.iter().product()];
            draw.fill_f64(&mut host, 0)?;
            Some(x.new_from_host(&shape, &host)?)
        }
        None => None,
    };
    let mut all: Vec<(f64, &T)> = Vec::with_capacity(step.terms.len() + 2);
    all.push((step.q_weight, &*q));
    all.extend_from_slice(step.terms);
    if let (Some((w, _)), Some(z)) = (step.noise, &z) {
        all.push((w, z));
    }
    x.linear_combination(Some(step.keep), &all, par)
}

/// Positions of the linear-interpolation quantile of `n` sorted values at `ratio`
/// (`torch.quantile`): `v[lo] + frac·(v[hi] − v[lo])`.
pub(crate) fn quantile_positions(n: usize, ratio: f64) -> (usize, usize, f64) {
    let p = ratio * n.saturating_sub(1) as f64;
    let lo = (p.floor() as usize).min(n.saturating_sub(1));
    let hi = (p.ceil() as usize).min(n.saturating_sub(1));
    (lo, hi, p - lo as f64)
}

/// Checks that `found` has the shape `expected`.
pub(crate) fn check_same_shape<T: SamplerTensor>(
    what: &'static str,
    expected: &[usize],
    found: &T,
) -> Result<()> {
    let layout = found.layout();
    if *layout.shape != *expected {
        return Err(Error::ShapeMismatch {
            what,
            expected: expected.to_vec(),
            found: layout.shape.into_owned(),
        });
    }
    Ok(())
}

/// Linear-interpolation quantile of sorted `v`, as `torch.quantile` (test reference).
#[cfg(test)]
pub(crate) fn quantile_sorted(v: &[f64], ratio: f64) -> f64 {
    let (lo, hi, frac) = quantile_positions(v.len(), ratio);
    v[lo] + frac * (v[hi] - v[lo])
}
