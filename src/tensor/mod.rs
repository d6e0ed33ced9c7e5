//! The tensor interface the solvers need, its ndarray implementation, and noise sources.
//!
//! Every solver step is "a handful of `f64` coefficients, then one fused linear combination
//! of a few tensors". A backend therefore implements only [`SamplerTensor`]: the fused
//! combination (allocating and in place), per-sample dynamic thresholding, clamping, a
//! finiteness check, shape queries and a host round-trip.

mod ndarray_impl;
mod noise;

pub use noise::{NoiseSource, ReplayNoise, SeededNoise};

use crate::error::{Error, Result};

/// A tensor type the samplers can step. The first axis is the batch axis.
///
/// Coefficients are `f64`; implementations cast them to the element type inside the kernel.
pub trait SamplerTensor: Clone + Send + Sync + std::fmt::Debug + Sized {
    /// Full shape, batch first.
    fn shape(&self) -> Vec<usize>;

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
    fn lincomb(terms: &[(f64, &Self)]) -> Result<Self>;

    /// `self ← a·self + Σ cᵢ·tᵢ`, in place.
    fn lincomb_assign(&mut self, a: f64, terms: &[(f64, &Self)]) -> Result<()>;

    /// Dynamic thresholding per batch element (spec §3.5): `s = quantile(|x|, ratio)` with
    /// linear interpolation, clamped to `[floor, max]`, then `x ← clamp(x, −s, s)/s`.
    fn threshold_per_sample(&mut self, ratio: f64, floor: f64, max: f64) -> Result<()>;

    /// Elementwise clamp into `[lo, hi]`, as a new tensor.
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self>;

    /// True when no element is NaN or ±∞.
    fn all_finite(&self) -> Result<bool>;

    /// All elements in row-major order, as `f64`.
    fn to_host_f64(&self) -> Result<Vec<f64>>;

    /// A tensor with `self`'s element type and device holding `data` (row-major) in `shape`.
    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self>;
}

/// Checks that every tensor in `terms` has `shape`.
pub(crate) fn check_same_shape<T: SamplerTensor>(
    what: &'static str,
    expected: &[usize],
    found: &T,
) -> Result<()> {
    let s = found.shape();
    if s != expected {
        return Err(Error::ShapeMismatch {
            what,
            expected: expected.to_vec(),
            found: s,
        });
    }
    Ok(())
}

/// Linear-interpolation quantile of sorted `v`, as `torch.quantile` (test reference).
#[cfg(test)]
pub(crate) fn quantile_sorted(v: &[f64], ratio: f64) -> f64 {
    let n = v.len();
    if n == 1 {
        return v[0];
    }
    let p = ratio * (n - 1) as f64;
    let lo = p.floor() as usize;
    let hi = p.ceil() as usize;
    let lo = lo.min(n - 1);
    let hi = hi.min(n - 1);
    v[lo] + (p - lo as f64) * (v[hi] - v[lo])
}
