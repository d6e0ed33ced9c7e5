//! Softmax over the last dimension, `softmax(scale · x)`, in one pass per row.
//!
//! candle composes a softmax from five tensor operations (maximum, subtraction, exponential,
//! sum, division), each a pass over the whole tensor with its own allocation. On the CPU in
//! f32 this module does each row's passes while the row is in cache, rows split across
//! threads (the linear attention's softmax over pixels; [`softmax_row`] also serves the
//! encoder's token attention). Other devices and dtypes use candle's operations.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::activation::exp;
use crate::blocks;
use crate::error::Result;

/// `softmax(scale · x)` along the last dimension.
pub(crate) fn scaled_softmax_last(x: &Tensor, scale: f64) -> Result<Tensor> {
    if fused(x) {
        Ok(x.contiguous()?.apply_op1_no_bwd(&ScaledSoftmax {
            scale: scale as f32,
        })?)
    } else {
        blocks::composed_softmax(&(x * scale)?, x.rank() - 1)
    }
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.rank() >= 1
}

struct ScaledSoftmax {
    scale: f32,
}

impl ScaledSoftmax {
    /// Every row of `rows` (rows of `n`), in place, rows split across threads.
    fn rows(&self, rows: &mut [f32], n: usize) {
        let scale = self.scale;
        rows.par_chunks_mut(n).for_each(|row| {
            super::vectorized(
                #[inline(always)]
                || softmax_row(row, scale),
            )
        });
    }
}

/// `softmax(scale · row)` in place. Inline it into a [`vectorized`](super::vectorized) body.
#[inline(always)]
pub(super) fn softmax_row(row: &mut [f32], scale: f32) {
    let inv = 1.0 / exponentials(row, scale);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `row ← exp(scale · row − max(scale · row))` in place, returning their sum: a softmax
/// without its division (the pixel attention divides its outputs instead). Inline it into a
/// [`vectorized`](super::vectorized) body; the loops vectorise, the sum in [`LANES`]
/// independent lanes.
#[inline(always)]
pub(super) fn exponentials(row: &mut [f32], scale: f32) -> f32 {
    let (lo, hi) = min_max(row);
    let max = (lo * scale).max(hi * scale); // either sign of scale
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *v = exp(*v * scale - max);
            *a += *v;
        }
    }
    let rest = chunks.into_remainder();
    rest.iter_mut().for_each(|v| *v = exp(*v * scale - max));
    acc.iter().chain(rest.iter()).sum()
}

/// The contiguous part of `layout` and its last dimension.
fn span(layout: &Layout) -> candle_core::Result<(std::ops::Range<usize>, usize)> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("scaled softmax: not contiguous".into()))?;
    Ok((
        start..end,
        layout.dims().last().copied().unwrap_or(1).max(1),
    ))
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "scaled-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("scaled softmax: f32 only");
        };
        let (range, n) = span(layout)?;
        // A parallel copy, then the rows in place (no zero-filled buffer written first).
        let mut out = Vec::with_capacity(range.len());
        out.par_extend(data[range].par_iter().copied());
        self.rows(&mut out, n);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Lanes of the running minimum, maximum and sum of a row: 16 interleaved running values
/// vectorise, where one is a single dependency chain.
const LANES: usize = 16;

/// `(min, max)` of `row`.
#[inline(always)]
fn min_max(row: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(c) {
            *l = l.min(v);
            *h = h.max(v);
        }
    }
    let rest = chunks.remainder().iter();
    let lo = lo
        .iter()
        .chain(rest.clone())
        .fold(f32::INFINITY, |a, &v| a.min(v));
    let hi = hi
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_the_composed_softmax() {
        let x = Tensor::randn(0f32, 3f32, (2, 3, 5, 77), &Device::Cpu).unwrap();
        let fused = scaled_softmax_last(&x, 0.7).unwrap();
        let composed = blocks::composed_softmax(&(&x * 0.7).unwrap(), 3).unwrap();
        let d = super::super::max_abs_diff(&fused, &composed);
        // Sums of 77 f32 terms in different orders: within 77·ε of the largest output.
        let top: f32 = composed.max_all().unwrap().to_scalar().unwrap();
        assert!(d <= 77.0 * f32::EPSILON * top, "{d}");
    }

    #[test]
    fn a_negative_scale_equals_the_composed_softmax() {
        let x = Tensor::randn(0f32, 3f32, (2, 3, 5, 77), &Device::Cpu).unwrap();
        let composed = blocks::composed_softmax(&(&x * -0.7).unwrap(), 3).unwrap();
        let fused = scaled_softmax_last(&x, -0.7).unwrap();
        let d = super::super::max_abs_diff(&fused, &composed);
        let top: f32 = composed.max_all().unwrap().to_scalar().unwrap();
        assert!(d <= 77.0 * f32::EPSILON * top, "{d}");
    }
}
