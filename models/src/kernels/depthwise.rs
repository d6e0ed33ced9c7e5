//! Depthwise 3 × 3 convolution (stride 1, padding 1, one filter per channel).
//!
//! candle runs a grouped convolution as one full convolution per group; for the depthwise
//! layers of NAFNet (`groups = channels`) that is one small im2col and matrix product per
//! channel. On the CPU in f32 this module computes the same sum directly: for every output
//! row, nine shifted multiply-adds over contiguous rows, which the compiler vectorises, with
//! the channel planes split across threads. Other devices and dtypes use candle's grouped
//! convolution. `docs/benchmarks.md` has the measured difference.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Depthwise 3 × 3 convolution (stride 1, zero padding 1) of `x: [B, C, H, W]` with
/// `weight: [C, 1, 3, 3]` and an optional `bias: [C]`; PyTorch's
/// `Conv2d(C, C, 3, padding=1, groups=C)`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = mrsampler_models::depthwise_conv3x3(&x, &w, None)?;
/// // A corner sees 4 of the 9 taps, an interior pixel all 9.
/// assert_eq!(y.get(0)?.get(0)?.to_vec2::<f32>()?[0], [4.0, 6.0, 6.0, 4.0]);
/// # Ok::<(), mrsampler_models::Error>(())
/// ```
///
/// # Errors
/// [`Error::Input`](crate::Error::Input) if the shapes do not fit; [`Error::Candle`](crate::Error::Candle).
pub fn conv3x3(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let c = weight.dim(0)?;
    if weight.dims() != [c, 1, 3, 3] || x.rank() != 4 || x.dim(1)? != c {
        return Err(crate::Error::input(format!(
            "depthwise 3 × 3 convolution of {:?} with weights {:?}: expected [B, C, H, W] and \
             [C, 1, 3, 3]",
            x.dims(),
            weight.dims()
        )));
    }
    let y = if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?
            .apply_op2_no_bwd(&weight.contiguous()?, &Depthwise3x3)?
    } else {
        x.conv2d(weight, 1, 1, 1, c)?
    };
    match bias {
        Some(b) => Ok(y.broadcast_add(&b.reshape((1, c, 1, 1))?)?),
        None => Ok(y),
    }
}

struct Depthwise3x3;

impl CustomOp2 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "depthwise-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else {
            candle_core::bail!("depthwise-conv3x3: f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("depthwise-conv3x3: contiguous inputs only");
        };
        let (b, c, h, wd) = l1.shape().dims4()?;
        if l2.shape().dims() != [c, 1, 3, 3] {
            candle_core::bail!("depthwise-conv3x3: weight shape {:?}", l2.shape());
        }
        let (x, w) = (&x[x0..x1], &w[w0..w1]);
        let plane = h * wd;
        let mut out = super::zeroed(b * c * plane);
        if plane > 0 {
            out.par_chunks_mut(plane).enumerate().for_each(|(bc, dst)| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        let ch = bc % c;
                        plane3x3(
                            &x[bc * plane..(bc + 1) * plane],
                            &w[ch * 9..ch * 9 + 9],
                            dst,
                            h,
                            wd,
                        );
                    },
                )
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// One channel plane: `dst[y][x] = Σ w[dy][dx] · src[y+dy−1][x+dx−1]`, zero outside.
fn plane3x3(src: &[f32], w: &[f32], dst: &mut [f32], h: usize, wd: usize) {
    for y in 0..h {
        let out = &mut dst[y * wd..(y + 1) * wd];
        for dy in 0..3 {
            let sy = y + dy;
            if sy == 0 || sy > h {
                continue;
            }
            let row = &src[(sy - 1) * wd..sy * wd];
            let (wl, wc, wr) = (w[dy * 3], w[dy * 3 + 1], w[dy * 3 + 2]);
            // Centre tap over the whole row.
            for (o, s) in out.iter_mut().zip(row) {
                *o += wc * s;
            }
            if wd > 1 {
                // Left tap: out[x] += wl · row[x − 1] for x ≥ 1.
                for (o, s) in out[1..].iter_mut().zip(&row[..wd - 1]) {
                    *o += wl * s;
                }
                // Right tap: out[x] += wr · row[x + 1] for x < wd − 1.
                for (o, s) in out[..wd - 1].iter_mut().zip(&row[1..]) {
                    *o += wr * s;
                }
            }
        }
    }
}
