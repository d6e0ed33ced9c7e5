//! CPU kernels where candle's own CPU path is slow (measured in `docs/benchmarks.md`): dense
//! 3 × 3 stride-1 convolutions by Winograd's F(2 × 2, 3 × 3) on images of at least 2 048
//! output pixels, other dense convolutions as one row-chunked im2col and matrix product in
//! NCHW, depthwise 3 × 3 convolutions computed directly, convolution epilogues fused into one
//! pass, the attention's softmax in one pass per row, the attention over pixels four queries at a
//! time without a score matrix, the attention of a few tokens from their packed projections in
//! one pass per head, GroupNorm in two passes per group, the
//! tokens' LayerNorm row by row, and the normalisations across channels in pixel-contiguous
//! runs, each compiled for the CPU's widest SIMD level ([`vectorized`]). Other devices and
//! dtypes use candle's operations.

use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

mod activation;
mod attention;
mod channels;
mod depthwise;
mod fused;
mod group_norm;
mod im2col;
mod layer_norm;
mod matmul;
mod packed;
mod softmax;
mod token_attention;
mod winograd;

pub(crate) use activation::silu;
pub(crate) use attention::{applies as attention_applies, attention};
pub(crate) use channels::{channel_layer_norm, softmax_across};
pub use depthwise::conv3x3 as depthwise_conv3x3;
pub(crate) use fused::{
    RowEpilogue, affine_silu as fused_affine_silu, applies as fused_applies,
    bias_gate as fused_bias_gate, bias_scale_residual as fused_bias_scale_residual,
    rows as fused_rows,
};
pub(crate) use group_norm::group_norm;
pub(crate) use im2col::conv2d;
pub(crate) use layer_norm::layer_norm_last;
pub(crate) use matmul::matmul;
pub(crate) use packed::PackedWeight;
pub(crate) use softmax::scaled_softmax_last;
pub(crate) use token_attention::packed_qkv_attention;
pub(crate) use winograd::{
    applies as winograd_applies, conv3x3 as winograd_conv3x3, transform_weight as winograd_weight,
};

/// Runs `f` compiled for the CPU's widest SIMD level (AVX-512, or AVX2 with FMA, chosen at
/// run time through `pulp`; baseline code elsewhere), so that the loops in it vectorise at
/// that width instead of the 128 bits every x86-64 has. Give `f` `#[inline(always)]`: the
/// wider instructions reach only code inlined into the dispatched function. The results are
/// those of the baseline build (no floating-point contraction, the same operation order).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnOnce() -> R> pulp::WithSimd for Op<F> {
        type Output = R;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    pulp::Arch::new().dispatch(Op(f))
}

/// The input of the custom operation `op` as a contiguous `f32` slice, or an error naming the
/// operation (its callers check the dtype and make the input contiguous first).
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((o0, o1)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous input only");
    };
    Ok(&data[o0..o1])
}

/// Outputs below this many floats are zeroed by the calling thread.
const PARALLEL_ZEROS: usize = 1 << 16;

/// `n` zeros for a kernel's output, written by the thread pool when `n` is large: zeroing a
/// reused buffer is otherwise one thread's `memset` while the other cores wait.
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    if n < PARALLEL_ZEROS {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// `f` of the elements of a contiguous CPU f32 tensor, borrowed.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((o0, o1))) => Ok(f(&data[o0..o1])),
        _ => Err(candle_core::Error::Msg(
            "CPU kernel: expected a contiguous CPU f32 tensor".into(),
        )
        .into()),
    }
}

/// `t` as one value per (image, channel) of a batch of `b` images with `c` channels: `t` holds
/// `c` values (`[C]`, `[1, C]`, `[1, C, 1, 1]`: the same for every image) or `b·c` (`[B, C]`);
/// absent, `default` everywhere.
pub(crate) fn per_image_channel(
    t: Option<&Tensor>,
    b: usize,
    c: usize,
    default: f32,
) -> Result<Vec<f32>> {
    let Some(t) = t else {
        return Ok(vec![default; b * c]);
    };
    let rows = t.elem_count() / c.max(1);
    Ok(t.to_dtype(candle_core::DType::F32)?
        .reshape((rows, c))?
        .broadcast_as((b, c))?
        .contiguous()?
        .flatten_all()?
        .to_vec1()?)
}

/// `max |t|` over all elements of an `f32` tensor (the kernels' tests).
#[cfg(test)]
pub(crate) fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// `max |a − b|` over all elements of two `f32` tensors (the kernels' tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_is_n_zeros_on_both_sides_of_the_threshold() {
        let t = super::PARALLEL_ZEROS;
        for n in [0, 1, t - 1, t, t + 1, 3 * t + 7] {
            let v = super::zeroed(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0), "n = {n}");
        }
    }
}
