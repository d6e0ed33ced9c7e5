//! The tensor interface the solvers need, its ndarray implementation, and noise sources.
//!
//! Every solver step is "a handful of `f64` coefficients, then one fused linear combination
//! of a few tensors". A backend therefore implements only [`SamplerTensor`]: the fused
//! combination (allocating, overwriting and accumulating), per-sample dynamic thresholding,
//! clamping, a finiteness check, shape queries and a host round-trip. The ndarray backend runs
//! these as SIMD kernels (runtime-dispatched, scalar fallback) split across threads.

#[cfg(feature = "burn")]
mod burn_impl;
#[cfg(feature = "candle")]
mod candle_impl;
mod kernels;
mod ndarray_impl;
mod noise;
mod normal;
mod philox;

#[cfg(feature = "burn")]
pub use burn_impl::BurnRandn;
#[cfg(feature = "candle")]
pub use candle_impl::CandleNoise;
pub use ndarray_impl::NdElement;
pub use noise::{NoNoise, NoiseSource, PhiloxNoise, ReplayNoise, SeededNoise};
pub use philox::philox4x32_10;

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

/// A tensor type the samplers can step. The first axis is the batch axis.
///
/// Coefficients are `f64`; implementations cast them to the element type inside the kernel.
/// Only [`lincomb`](Self::lincomb), [`lincomb_assign`](Self::lincomb_assign) and the
/// non-arithmetic methods are required; the rest have correct (slower) defaults.
pub trait SamplerTensor: Clone + Send + Sync + std::fmt::Debug + Sized {
    /// Full shape, batch first.
    fn shape(&self) -> Vec<usize>;

    /// Whether the tensor has exactly `shape` (override to avoid allocating).
    fn has_shape(&self, shape: &[usize]) -> bool {
        self.shape() == shape
    }

    /// Number of samples (the size of the first axis; 1 for a 0-d tensor).
    fn batch_size(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }

    /// Total number of elements.
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// `Σ cᵢ·tᵢ` as a new tensor. `terms` is non-empty and all tensors have one shape
    /// ([`Error::ShapeMismatch`] otherwise).
    fn lincomb(terms: &[(f64, &Self)], par: Parallelism) -> Result<Self>;

    /// `self ← Σ cᵢ·tᵢ`, reusing `self`'s storage (its old values are not read).
    fn lincomb_into(&mut self, terms: &[(f64, &Self)], par: Parallelism) -> Result<()> {
        *self = Self::lincomb(terms, par)?;
        Ok(())
    }

    /// `self ← a·self + Σ cᵢ·tᵢ`, in place.
    fn lincomb_assign(&mut self, a: f64, terms: &[(f64, &Self)], par: Parallelism) -> Result<()>;

    /// One fused solver step: `q ← c₀·net + c₁·x + c₂·μ` (the output conversion), then
    /// `x ← a·x + b·q + Σ cᵢ·tᵢ`. A backend may do both in one pass over memory.
    #[allow(clippy::too_many_arguments)]
    fn convert_and_step(
        x: &mut Self,
        q: &mut Self,
        net: &Self,
        mu: &Self,
        convert: [f64; 3],
        a: f64,
        b: f64,
        terms: &[(f64, &Self)],
        par: Parallelism,
    ) -> Result<()> {
        convert_then_step(x, q, net, mu, convert, a, b, terms, par)
    }

    /// Dynamic thresholding per batch element (spec §3.5): `s = quantile(|x|, ratio)` with
    /// linear interpolation, clamped to `[floor, max]`, then `x ← clamp(x, −s, s)/s`.
    fn threshold_per_sample(
        &mut self,
        ratio: f64,
        floor: f64,
        max: f64,
        par: Parallelism,
    ) -> Result<()>;

    /// Elementwise clamp into `[lo, hi]`, as a new tensor.
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self>;

    /// True when no element is NaN or ±∞.
    fn all_finite(&self, par: Parallelism) -> Result<bool>;

    /// All elements in row-major order, as `f64`.
    fn to_host_f64(&self) -> Result<Vec<f64>>;

    /// A tensor with `self`'s element type and device holding `data` (row-major) in `shape`.
    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self>;
}

/// The two-pass form of [`SamplerTensor::convert_and_step`]: the conversion into `q`, then
/// the update of `x` (the default, and the fallback of backends that fuse).
#[allow(clippy::too_many_arguments)]
pub(crate) fn convert_then_step<T: SamplerTensor>(
    x: &mut T,
    q: &mut T,
    net: &T,
    mu: &T,
    convert: [f64; 3],
    a: f64,
    b: f64,
    terms: &[(f64, &T)],
    par: Parallelism,
) -> Result<()> {
    q.lincomb_into(
        &[(convert[0], net), (convert[1], &*x), (convert[2], mu)],
        par,
    )?;
    let mut all: Vec<(f64, &T)> = Vec::with_capacity(terms.len() + 1);
    all.push((b, &*q));
    all.extend_from_slice(terms);
    x.lincomb_assign(a, &all, par)
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
    if !found.has_shape(expected) {
        return Err(Error::ShapeMismatch {
            what,
            expected: expected.to_vec(),
            found: found.shape(),
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
