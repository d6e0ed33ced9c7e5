//! Element-wise epilogues of convolutions, fused into one pass over the output: the bias, then
//! a per-channel scale and a residual (`r + s_c·(m + b_c)`, NAFNet's `inp + β·conv(x)`); the
//! bias, then the SimpleGate (`(m₁ + b₁)·(m₂ + b₂)` over the two channel halves); a per-image,
//! per-channel affine map, then SiLU, then a residual (`silu(g·x + a) + r`, the U-Net's
//! ResBlocks). candle takes two to four passes, each with a fresh output, for any of them.
//! For fully connected layers, the bias alone, or with the exact GELU or GEGLU
//! ([`RowEpilogue`]).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::activation::{exp, gelu};
use super::{per_image_channel, with_f32};
use crate::error::Result;

/// Whether the fused epilogues apply to a product `m: [B, C, H, W]`: CPU f32.
pub(crate) fn applies(m: &Tensor) -> bool {
    m.device().is_cpu() && m.dtype() == DType::F32 && m.rank() == 4
}

/// `residual + scale_c · (m + bias_c)` for `m, residual: [B, C, H, W]`, `bias, scale` one value
/// per channel. Callers check [`applies`].
pub(crate) fn bias_scale_residual(
    m: &Tensor,
    bias: &Tensor,
    scale: &Tensor,
    residual: &Tensor,
) -> Result<Tensor> {
    let (b, c, h, w) = m.dims4()?;
    let bias = per_image_channel(Some(bias), 1, c, 0.0)?;
    let scale = per_image_channel(Some(scale), 1, c, 1.0)?;
    let plane = h * w;
    let (m, r) = (
        m.contiguous()?,
        residual.contiguous()?.to_dtype(DType::F32)?,
    );
    let mut out = super::zeroed(b * c * plane);
    with_f32(&m, |m| {
        with_f32(&r, |r| {
            out.par_chunks_mut(plane)
                .zip(m.par_chunks(plane).zip(r.par_chunks(plane)))
                .enumerate()
                .for_each(|(i, (o, (m, r)))| {
                    super::vectorized(
                        #[inline(always)]
                        || {
                            let (bc, sc) = (bias[i % c], scale[i % c]);
                            for ((o, &m), &r) in o.iter_mut().zip(m).zip(r) {
                                *o = r + sc * (m + bc);
                            }
                        },
                    )
                });
        })
    })??;
    Ok(Tensor::from_vec(out, (b, c, h, w), residual.device())?)
}

/// `(m[:, :C/2] + bias[:C/2]) · (m[:, C/2:] + bias[C/2:])` for `m: [B, C, H, W]` with `C` even.
/// Callers check [`applies`].
pub(crate) fn bias_gate(m: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = m.dims4()?;
    let half = c / 2;
    let bias = per_image_channel(Some(bias), 1, c, 0.0)?;
    let plane = h * w;
    let m = m.contiguous()?;
    let mut out = super::zeroed(b * half * plane);
    with_f32(&m, |m| {
        out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
            super::vectorized(
                #[inline(always)]
                || {
                    let (img, ch) = (i / half, i % half);
                    let first = &m[(img * c + ch) * plane..][..plane];
                    let second = &m[(img * c + half + ch) * plane..][..plane];
                    let (b1, b2) = (bias[ch], bias[half + ch]);
                    for ((o, &x), &y) in o.iter_mut().zip(first).zip(second) {
                        *o = (x + b1) * (y + b2);
                    }
                },
            )
        });
    })?;
    Ok(Tensor::from_vec(out, (b, half, h, w), m.device())?)
}

/// `silu(gain · x + shift) + residual` for `x: [B, C, H, W]`; `gain` and `shift` one value
/// per image and channel (`[B, C]`, or absent: 1 and 0), `residual` absent or `x`'s shape.
/// Callers check [`applies`].
pub(crate) fn affine_silu(
    x: &Tensor,
    gain: Option<&Tensor>,
    shift: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let gain = per_image_channel(gain, b, c, 1.0)?;
    let shift = per_image_channel(shift, b, c, 0.0)?;
    let plane = h * w;
    let x = x.contiguous()?;
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let mut out = super::zeroed(b * c * plane);
    // One (image, channel) plane per task: `out = silu(g·x + a)`, then `+= r`.
    let fill = |out: &mut [f32], x: &[f32], r: Option<&[f32]>| {
        out.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (o, x))| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        let (g, a) = (gain[i], shift[i]);
                        o.iter_mut().zip(x).for_each(|(o, &v)| {
                            let v = g * v + a;
                            *o = v / (1.0 + exp(-v));
                        });
                        if let Some(r) = r {
                            o.iter_mut()
                                .zip(&r[i * plane..(i + 1) * plane])
                                .for_each(|(o, &r)| *o += r);
                        }
                    },
                )
            });
    };
    with_f32(&x, |x| match &residual {
        Some(r) => with_f32(r, |r| fill(&mut out, x, Some(r))),
        None => {
            fill(&mut out, x, None);
            Ok(())
        }
    })??;
    Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?)
}

/// What a fully connected layer's output pass applies after its product `y: [rows, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowEpilogue {
    /// `y + b`.
    Bias,
    /// `gelu(y + b)` (the exact, `erf`, GELU).
    BiasGelu,
    /// `(y + b)[.., :n/2] · gelu((y + b)[.., n/2:])`: GEGLU, `[rows, n/2]` out.
    BiasGeglu,
}

/// `epilogue` of `y: [rows, n]` (contiguous) with `bias: [n]` (absent: 0), in one pass per
/// row. Callers check that `y` is CPU f32.
pub(crate) fn rows(y: &Tensor, bias: Option<&Tensor>, epilogue: RowEpilogue) -> Result<Tensor> {
    let (rows, n) = y.dims2()?;
    let bias = per_image_channel(bias, 1, n, 0.0)?;
    let y = y.contiguous()?;
    let width = match epilogue {
        RowEpilogue::BiasGeglu => n / 2,
        _ => n,
    };
    let mut out = super::zeroed(rows * width);
    with_f32(&y, |y| {
        out.par_chunks_mut(width.max(1))
            .zip(y.par_chunks(n.max(1)))
            .for_each(|(o, y)| {
                super::vectorized(
                    #[inline(always)]
                    || match epilogue {
                        RowEpilogue::Bias => {
                            for ((o, &v), &b) in o.iter_mut().zip(y).zip(&bias) {
                                *o = v + b;
                            }
                        }
                        RowEpilogue::BiasGelu => {
                            for ((o, &v), &b) in o.iter_mut().zip(y).zip(&bias) {
                                *o = gelu(v + b);
                            }
                        }
                        RowEpilogue::BiasGeglu => {
                            let (value, gate) = y.split_at(width);
                            let (bv, bg) = bias.split_at(width);
                            for (((o, &v), &g), (&bv, &bg)) in
                                o.iter_mut().zip(value).zip(gate).zip(bv.iter().zip(bg))
                            {
                                *o = (v + bv) * gelu(g + bg);
                            }
                        }
                    },
                )
            });
    })?;
    Ok(Tensor::from_vec(out, (rows, width), y.device())?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::super::max_abs_diff;

    #[test]
    fn epilogues_equal_their_composed_forms() {
        let dev = Device::Cpu;
        let m = Tensor::randn(0f32, 1f32, (2, 6, 5, 7), &dev).unwrap();
        let r = Tensor::randn(0f32, 1f32, (2, 6, 5, 7), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1f32, 6, &dev).unwrap();
        let scale = Tensor::randn(0f32, 1f32, (1, 6, 1, 1), &dev).unwrap();
        let biased = m
            .broadcast_add(&bias.reshape((1, 6, 1, 1)).unwrap())
            .unwrap();

        let want = (&r + biased.broadcast_mul(&scale).unwrap()).unwrap();
        let got = super::bias_scale_residual(&m, &bias, &scale, &r).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);

        let want = crate::blocks::simple_gate(&biased).unwrap();
        let got = super::bias_gate(&m, &bias).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5, 7]);
        assert!(max_abs_diff(&got, &want) < 1e-6);

        let (g, a) = (
            Tensor::randn(1f32, 0.3f32, (2, 6), &dev).unwrap(),
            Tensor::randn(0f32, 1f32, (2, 6), &dev).unwrap(),
        );
        let modulated = crate::blocks::modulate(&m, &(&g - 1.0).unwrap(), &a).unwrap();
        let want = (modulated.silu().unwrap() + &r).unwrap();
        let got = super::affine_silu(&m, Some(&g), Some(&a), Some(&r)).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        let want = m.silu().unwrap();
        let got = super::affine_silu(&m, None, None, None).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn row_epilogues_equal_their_composed_forms() {
        use super::RowEpilogue::*;
        let dev = Device::Cpu;
        let y = Tensor::randn(0f32, 2f32, (37, 10), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1f32, 10, &dev).unwrap();
        let biased = y.broadcast_add(&bias).unwrap();
        let got = super::rows(&y, Some(&bias), Bias).unwrap();
        assert!(max_abs_diff(&got, &biased) == 0.0);
        // candle's GELU calls the C library's erf: the reference.
        let got = super::rows(&y, Some(&bias), BiasGelu).unwrap();
        assert!(max_abs_diff(&got, &biased.gelu_erf().unwrap()) < 2e-6);
        let want = (biased.narrow(1, 0, 5).unwrap()
            * biased.narrow(1, 5, 5).unwrap().gelu_erf().unwrap())
        .unwrap();
        let got = super::rows(&y, Some(&bias), BiasGeglu).unwrap();
        assert_eq!(got.dims(), &[37, 5]);
        // Per element: the value a times GELU's error at the gate g (1.5e-7·|g|/2 from the
        // erf fit, plus a few ulps of rounding: 3e-7·|g| in all), plus the product's rounding.
        let (a, g) = (
            biased.narrow(1, 0, 5).unwrap().flatten_all().unwrap(),
            biased.narrow(1, 5, 5).unwrap().flatten_all().unwrap(),
        );
        let [a, g, got, want] = [
            &a,
            &g,
            &got.flatten_all().unwrap(),
            &want.flatten_all().unwrap(),
        ]
        .map(|t| t.to_vec1::<f32>().unwrap());
        for i in 0..want.len() {
            let bound = 3e-7 * (a[i] * g[i]).abs() + 2.0 * f32::EPSILON * want[i].abs() + 1e-7;
            assert!(
                (got[i] - want[i]).abs() <= bound,
                "{i}: {} vs {}",
                got[i],
                want[i]
            );
        }
        // Without a bias: the product alone.
        let got = super::rows(&y, None, BiasGelu).unwrap();
        assert!(max_abs_diff(&got, &y.gelu_erf().unwrap()) < 2e-6);
    }
}
