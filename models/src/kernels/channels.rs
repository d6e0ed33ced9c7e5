//! Normalisations across the channel axis of `[outer, C, inner]` data (NCHW feature maps,
//! `[B, heads, d, pixels]` attention heads): the channel LayerNorm and the softmax over
//! channels.
//!
//! candle reduces over a middle axis with strided loops and builds each normalisation from
//! separate tensor operations (about nine passes for the LayerNorm, five for the softmax).
//! On the CPU in f32 these kernels read the input a few times in pixel-contiguous runs: per
//! block of pixels the statistics over channels, then each channel row normalised, threads
//! splitting blocks and rows. Other devices and dtypes use candle's operations.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::activation::exp;
use super::per_image_channel;
use crate::error::Result;

/// Pixels per block of the statistics pass.
const BLOCK: usize = 2048;

/// What to do across channels.
enum Across {
    /// `(x − mean) / sqrt(var + eps)` (biased variance), then times `gain` plus `shift`, one
    /// value per (outer index, channel).
    LayerNorm {
        eps: f32,
        gain: Vec<f32>,
        shift: Vec<f32>,
    },
    /// `exp(x − max) / Σ exp(x − max)`.
    Softmax,
}

/// IR-SDE's channel LayerNorm of `x: [B, C, H, W]` times `gain` plus `shift`, or `None` where
/// the fused kernel does not apply (the caller then composes it). `gain` and `shift` hold one
/// value per channel (`[C]`, `[1, C, 1, 1]`) or per image and channel (`[B, C]`): a
/// modulation after the norm folds into them, so it costs no pass of its own.
pub(crate) fn channel_layer_norm(
    x: &Tensor,
    gain: &Tensor,
    shift: Option<&Tensor>,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4) {
        return Ok(None);
    }
    let (b, c, h, w) = x.dims4()?;
    let gain = per_image_channel(Some(gain), b, c, 1.0)?;
    let shift = per_image_channel(shift, b, c, 0.0)?;
    let y = x
        .contiguous()?
        .reshape((b, c, h * w))?
        .apply_op1_no_bwd(&Op {
            across: Across::LayerNorm {
                eps: eps as f32,
                gain,
                shift,
            },
        })?;
    Ok(Some(y.reshape((b, c, h, w))?))
}

/// Softmax over axis `axis` of `x`, or `None` where the fused kernel does not apply.
pub(crate) fn softmax_across(x: &Tensor, axis: usize) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && axis < x.rank()) {
        return Ok(None);
    }
    let dims = x.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let y = x
        .contiguous()?
        .reshape((outer, dims[axis], inner))?
        .apply_op1_no_bwd(&Op {
            across: Across::Softmax,
        })?;
    Ok(Some(y.reshape(dims)?))
}

struct Op {
    across: Across,
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        "across-channels"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("across-channels", s, l)?;
        let (outer, c, inner) = l.shape().dims3()?;
        let mut out = super::zeroed(x.len());
        let plane = c * inner;
        for (i, (xo, oo)) in x
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .take(outer)
            .enumerate()
        {
            // Per pixel: (shift, scale) with y = (x − shift) · scale, or (max, 1 / Σ exp).
            let mut shift = vec![0f32; inner];
            let mut scale = vec![0f32; inner];
            shift
                .par_chunks_mut(BLOCK)
                .zip(scale.par_chunks_mut(BLOCK))
                .enumerate()
                .for_each(|(blk, (sh, sc))| {
                    super::vectorized(
                        #[inline(always)]
                        || {
                            let (p0, len) = (blk * BLOCK, sh.len());
                            let row = |ch: usize| &xo[ch * inner + p0..ch * inner + p0 + len];
                            match self.across {
                                Across::LayerNorm { eps, .. } => {
                                    sh.fill(0.0);
                                    for ch in 0..c {
                                        sh.iter_mut().zip(row(ch)).for_each(|(m, &v)| *m += v);
                                    }
                                    sh.iter_mut().for_each(|m| *m /= c as f32);
                                    sc.fill(0.0);
                                    for ch in 0..c {
                                        sc.iter_mut()
                                            .zip(row(ch))
                                            .zip(sh.iter())
                                            .for_each(|((s, &v), &m)| *s += (v - m) * (v - m));
                                    }
                                    sc.iter_mut()
                                        .for_each(|s| *s = (*s / c as f32 + eps).sqrt().recip());
                                }
                                Across::Softmax => {
                                    sh.fill(f32::NEG_INFINITY);
                                    for ch in 0..c {
                                        sh.iter_mut()
                                            .zip(row(ch))
                                            .for_each(|(m, &v)| *m = m.max(v));
                                    }
                                    sc.fill(0.0);
                                    for ch in 0..c {
                                        sc.iter_mut()
                                            .zip(row(ch))
                                            .zip(sh.iter())
                                            .for_each(|((s, &v), &m)| *s += exp(v - m));
                                    }
                                    sc.iter_mut().for_each(|s| *s = s.recip());
                                }
                            }
                        },
                    )
                });
            match &self.across {
                Across::Softmax => {
                    oo.par_chunks_mut(inner)
                        .zip(xo.par_chunks(inner))
                        .for_each(|(o, xr)| {
                            super::vectorized(
                                #[inline(always)]
                                || {
                                    for (((o, &v), &m), &s) in
                                        o.iter_mut().zip(xr).zip(&shift).zip(&scale)
                                    {
                                        *o = exp(v - m) * s;
                                    }
                                },
                            )
                        })
                }
                Across::LayerNorm {
                    gain, shift: add, ..
                } => {
                    let (gain, add) = (&gain[i * c..(i + 1) * c], &add[i * c..(i + 1) * c]);
                    oo.par_chunks_mut(inner)
                        .zip(xo.par_chunks(inner))
                        .enumerate()
                        .for_each(|(ch, (o, xr))| {
                            super::vectorized(
                                #[inline(always)]
                                || {
                                    let (g, a) = (gain[ch], add[ch]);
                                    for (((o, &v), &m), &s) in
                                        o.iter_mut().zip(xr).zip(&shift).zip(&scale)
                                    {
                                        *o = (v - m) * s * g + a;
                                    }
                                },
                            )
                        });
                }
            }
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_equals_the_composed_form() {
        // More pixels than one block, and a short last block.
        let x = Tensor::randn(1f32, 2f32, (2, 5, 47, 61), &Device::Cpu).unwrap();
        let g = Tensor::randn(0f32, 1f32, (1, 5, 1, 1), &Device::Cpu).unwrap();
        let mean = x.mean_keepdim(1).unwrap();
        let centred = x.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(1).unwrap();
        let inv = (var + 1e-5).unwrap().sqrt().unwrap().recip().unwrap();
        let want = centred
            .broadcast_mul(&inv)
            .unwrap()
            .broadcast_mul(&g)
            .unwrap();
        let got = channel_layer_norm(&x, &g, None, 1e-5).unwrap().unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        // A per-image modulation folded into the gain and shift.
        let scale = Tensor::randn(0f32, 1f32, (2, 5), &Device::Cpu).unwrap();
        let shift = Tensor::randn(0f32, 1f32, (2, 5), &Device::Cpu).unwrap();
        let gain = g
            .reshape((1, 5))
            .unwrap()
            .broadcast_mul(&(&scale + 1.0).unwrap())
            .unwrap();
        let got = channel_layer_norm(&x, &gain, Some(&shift), 1e-5)
            .unwrap()
            .unwrap();
        let want = crate::blocks::modulate(&want, &scale, &shift).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn softmax_equals_the_composed_form_on_any_axis() {
        let x = Tensor::randn(0f32, 3f32, (2, 3, 7, 2100), &Device::Cpu).unwrap();
        for axis in 0..4 {
            let m = x.max_keepdim(axis).unwrap();
            let e = x.broadcast_sub(&m).unwrap().exp().unwrap();
            let want = e.broadcast_div(&e.sum_keepdim(axis).unwrap()).unwrap();
            let got = softmax_across(&x, axis).unwrap().unwrap();
            // The sums of n f32 terms are accumulated in different orders: their rounding
            // errors are bounded by n·ε relative to the largest output.
            let n = x.dim(axis).unwrap() as f32;
            let top: f32 = want.max_all().unwrap().to_scalar().unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d <= n * f32::EPSILON * top, "axis {axis}: {d}");
        }
    }
}
