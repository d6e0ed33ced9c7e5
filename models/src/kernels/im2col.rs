//! Dense 2-D convolution as im2col + matrix product, in NCHW, chunked over output rows.
//!
//! For one image and a chunk of output rows, the column matrix has one row per
//! `(input channel, kernel row, kernel column)` and one column per output pixel of the chunk;
//! each of its rows is a shifted copy of an input row (contiguous for stride 1), filled in
//! parallel. The product `weight [Cout, Cin·k²] · columns` is the output chunk, already in
//! NCHW order. Chunks bound the column matrix to about 4 MiB whatever the image size.
//! candle's CPU convolution instead converts the input to NHWC with a scalar loop and
//! multiplies 512-pixel tiles with scattered reads and writes.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Floats in one column-matrix chunk (16 MiB of f32). Measured on the IR-SDE U-Net, 2 threads:
/// with the `gemm` crate's AVX-512 products 4.90–4.95 s at 256² and 19.6 s at 512², against
/// 5.50–5.56 and 24.1 s with 4 MiB chunks (best with its AVX2 products) and 4.91 / 20.3 s with
/// 32 MiB; with OpenBLAS 5.3–5.4 s at 256² against 5.6–5.9 s with 4 MiB and 6.5–6.7 s with 1 or
/// 64 MiB.
const CHUNK_FLOATS: usize = 1 << 22;

/// `x: [B, Cin, H, W]` convolved with `weight: [Cout, Cin, k, k]` (zero padding, no groups,
/// dilation 1), without bias.
pub(crate) fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (cout, _, k, _) = weight.dims4()?;
    let fits = h + 2 * padding >= k && w + 2 * padding >= k && stride > 0;
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && fits) {
        return Ok(x.conv2d(weight, padding, stride, 1, 1)?);
    }
    let (oh, ow) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let kk = cin * k * k;
    let w2 = weight.contiguous()?.reshape((cout, kk))?;
    let rows = (CHUNK_FLOATS / (kk * ow).max(1)).clamp(1, oh);
    let x = x.contiguous()?;
    let mut images = Vec::with_capacity(b);
    for bi in 0..b {
        let xb = x.get(bi)?;
        let mut chunks = Vec::with_capacity(oh.div_ceil(rows));
        for y0 in (0..oh).step_by(rows) {
            let y1 = (y0 + rows).min(oh);
            let op = Im2Col {
                k,
                stride,
                padding,
                y0,
                y1,
                ow,
            };
            let cols = xb.apply_op1_no_bwd(&op)?;
            chunks.push(super::matmul(&w2, &cols)?.reshape((cout, y1 - y0, ow))?);
        }
        images.push(if chunks.len() == 1 {
            chunks.pop().expect("one chunk")
        } else {
            Tensor::cat(&chunks, 1)?
        });
    }
    Ok(Tensor::stack(&images, 0)?)
}

/// The column matrix of output rows `y0..y1` of one `[Cin, H, W]` image.
struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
    y0: usize,
    y1: usize,
    ow: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("im2col-rows", s, l)?;
        let (cin, h, w) = l.shape().dims3()?;
        let Self {
            k,
            stride,
            padding,
            y0,
            y1,
            ow,
        } = *self;
        let n = (y1 - y0) * ow;
        let mut cols = super::zeroed(cin * k * k * n);
        cols.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
            super::vectorized(
                #[inline(always)]
                || {
                    let (c, kh, kw) = (r / (k * k), (r / k) % k, r % k);
                    let plane = &x[c * h * w..(c + 1) * h * w];
                    for (oy, out) in (y0..y1).zip(dst.chunks_mut(ow)) {
                        let Some(iy) = (oy * stride + kh).checked_sub(padding).filter(|&iy| iy < h)
                        else {
                            continue; // a padding row: stays zero
                        };
                        let row = &plane[iy * w..(iy + 1) * w];
                        // Output columns whose input column ox·stride + kw − padding is inside.
                        let hi = w + padding; // inside ⇔ ox·stride + kw < hi
                        if kw >= hi {
                            continue;
                        }
                        let first = padding.saturating_sub(kw).div_ceil(stride);
                        let last = ((hi - kw - 1) / stride + 1).min(ow);
                        if first >= last {
                            continue;
                        }
                        let ix0 = first * stride + kw - padding;
                        if stride == 1 {
                            out[first..last].copy_from_slice(&row[ix0..ix0 + (last - first)]);
                        } else {
                            for (o, ix) in out[first..last].iter_mut().zip((ix0..).step_by(stride))
                            {
                                *o = row[ix];
                            }
                        }
                    }
                },
            )
        });
        Ok((CpuStorage::F32(cols), Shape::from((cin * k * k, n))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// The kernel against candle's convolution (a different algorithm) on odd shapes, every
    /// kernel size, stride and padding the networks use, and chunked row ranges.
    #[test]
    fn matches_candles_convolution() {
        let dev = Device::Cpu;
        for (b, cin, cout, h, w, k, stride, pad) in [
            (2, 3, 5, 7, 9, 3, 1, 1),
            (1, 6, 4, 13, 10, 7, 1, 3),
            (2, 4, 8, 8, 12, 4, 2, 1),
            (1, 3, 2, 5, 5, 1, 1, 0),
            (1, 2, 3, 3, 4, 3, 1, 0),
            (1, 5, 3, 9, 7, 4, 2, 1),
            (1, 2, 2, 1, 1, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1f32, (b, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1f32, (cout, cin, k, k), &dev).unwrap();
            let want = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            let got = super::conv2d(&x, &wt, stride, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            // Relative to the sums' magnitudes (|x| convolved with |w|), the scale of their
            // rounding error; relative to the output's largest value, cancelling sums of up
            // to 294 terms failed by chance.
            let scale = x
                .abs()
                .unwrap()
                .conv2d(&wt.abs().unwrap(), pad, stride, 1, 1)
                .unwrap();
            let err = super::super::max_abs_diff(&got, &want) / super::super::max_abs(&scale);
            assert!(err < 1e-6, "{:?} k{k} s{stride} p{pad}: {err}", x.dims());
        }
    }

    #[test]
    fn chunked_rows_match_one_chunk() {
        // 3 · 9 · 2048 floats per row of output: several rows per chunk, several chunks.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (1, 3, 700, 2048), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1f32, (2, 3, 3, 3), &dev).unwrap();
        let want = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
        let got = super::conv2d(&x, &wt, 1, 1).unwrap();
        assert!(super::super::max_abs_diff(&got, &want) < 1e-5);
    }
}
