//! Dense 3 × 3 stride-1 convolutions by Winograd's minimal filtering F(2 × 2, 3 × 3), in NCHW.
//!
//! Each 2 × 2 block of output pixels (a *tile*) of an output channel is
//! `Aᵀ [Σ_cin (G g Gᵀ) ⊙ (Bᵀ d B)] A`, where `g` is the 3 × 3 kernel of one (output, input)
//! channel pair and `d` the 4 × 4 input patch under the tile. The element-wise product summed
//! over input channels is, for each of the 16 positions `ξ` of the 4 × 4 transformed tile, one
//! matrix product `U_ξ [Cout, Cin] · V_ξ [Cin, tiles]`: 16 multiplications per tile and channel
//! pair instead of the 36 of the direct form (2.25× fewer), and a transformed input 4× the
//! input's size instead of im2col's 9×. The transforms only add and halve, so the rounding stays
//! that of a 3 × 3 dot product of transformed values (measured against the column form in the
//! tests: relative error ≤ 1e-6).
//!
//! The input is processed in bands of tile rows so that the transformed band (16 planes of
//! `[Cin, tiles]`) stays about [`BAND_FLOATS`] floats: in the shared cache for the products,
//! whatever the image size. The 16 products per band are one batched candle matrix product (the
//! `gemm` crate's kernels), and the output transform adds the bias on its way out.
//!
//! The matrices (`Bᵀ`, `G`, `Aᵀ` of F(2, 3), interpolation points 0, 1, −1, ∞):
//!
//! ```text
//! Bᵀ = ⎡1  0 −1  0⎤   G = ⎡ 1    0    0 ⎤   Aᵀ = ⎡1 1  1  0⎤
//!      ⎢0  1  1  0⎥       ⎢1/2  1/2  1/2⎥        ⎣0 1 −1 −1⎦
//!      ⎢0 −1  1  0⎥       ⎢1/2 −1/2  1/2⎥
//!      ⎣0  1  0 −1⎦       ⎣ 0    0    1 ⎦
//! ```

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::with_f32;
use crate::error::{Error, Result};

/// Floats in one band's transformed input (8 MiB of f32). Measured on a 64-channel convolution
/// at 256² (`docs/benchmarks.md`): 13–14 ms, against 14–15 ms with 2²⁰ and 38–49 ms with 2²²
/// or 2²³.
const BAND_FLOATS: usize = 1 << 21;

/// Output pixels from which [`conv3x3`] beats the column form, its kernel transform included
/// (made at every call: kept, the transformed kernels would cost 16/9 of the weights' memory).
/// The transform costs the same per channel pair at every image size and the saving grows with
/// the pixels, so one size decides: measured 2 threads, 128 and 512 channels, the two are even
/// between 32² and 48² (`docs/benchmarks.md`; DA-CLIP's denoiser at 256² gained nothing from
/// 1 024 or 512).
const MIN_PIXELS: usize = 2048;

/// Whether [`conv3x3`] applies and pays: a CPU f32 convolution with a 3 × 3 kernel, stride 1,
/// and at least [`MIN_PIXELS`] output pixels. Groups are the caller's to exclude.
pub(crate) fn applies(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> bool {
    let (Ok((_, _, h, w)), Ok((_, _, kh, kw))) = (x.dims4(), weight.dims4()) else {
        return false;
    };
    let (oh, ow) = (
        (h + 2 * padding).saturating_sub(2),
        (w + 2 * padding).saturating_sub(2),
    );
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && (kh, kw, stride) == (3, 3, 1)
        && oh * ow >= MIN_PIXELS
}

/// The transformed kernels `U_ξ = (G g Gᵀ)_ξ` of a `[Cout, Cin, 3, 3]` weight, as
/// `[16, Cout, Cin]`.
pub(crate) fn transform_weight(weight: &Tensor) -> Result<Tensor> {
    const PAIRS: usize = 2048; // (output, input) channel pairs per task
    let (cout, cin, _, _) = weight.dims4()?;
    let weight = weight.to_dtype(DType::F32)?.contiguous()?;
    let pairs = cout * cin;
    let mut u = super::zeroed(16 * pairs);
    // Task `i` writes pairs `i·PAIRS..` of each of the 16 planes.
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..pairs.div_ceil(PAIRS))
        .map(|_| Vec::with_capacity(16))
        .collect();
    for plane in u.chunks_mut(pairs) {
        for (task, part) in tasks.iter_mut().zip(plane.chunks_mut(PAIRS)) {
            task.push(part);
        }
    }
    with_f32(&weight, |g| {
        tasks
            .into_par_iter()
            .zip(g.par_chunks(9 * PAIRS))
            .for_each(|(mut planes, g)| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        for (p, k) in g.chunks_exact(9).enumerate() {
                            // G g (4 × 3), then (G g) Gᵀ (4 × 4).
                            let mut gg = [[0f32; 3]; 4];
                            for c in 0..3 {
                                let (k0, k1, k2) = (k[c], k[3 + c], k[6 + c]);
                                gg[0][c] = k0;
                                gg[1][c] = 0.5 * (k0 + k1 + k2);
                                gg[2][c] = 0.5 * (k0 - k1 + k2);
                                gg[3][c] = k2;
                            }
                            for (a, row) in gg.iter().enumerate() {
                                planes[4 * a][p] = row[0];
                                planes[4 * a + 1][p] = 0.5 * (row[0] + row[1] + row[2]);
                                planes[4 * a + 2][p] = 0.5 * (row[0] - row[1] + row[2]);
                                planes[4 * a + 3][p] = row[2];
                            }
                        }
                    },
                )
            });
    })?;
    Ok(Tensor::from_vec(u, (16, cout, cin), weight.device())?)
}

/// `x: [B, Cin, H, W]` convolved with the 3 × 3 kernels whose transform is `u: [16, Cout, Cin]`
/// ([`transform_weight`]), stride 1, zero padding `padding`, plus `bias: [Cout]` if given.
/// Callers check [`applies`] first.
pub(crate) fn conv3x3(
    x: &Tensor,
    u: &Tensor,
    padding: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (_, cout, ucin) = u.dims3()?;
    if ucin != cin {
        return Err(Error::Input {
            reason: format!("3 × 3 convolution: input has {cin} channels, the kernels take {ucin}"),
        });
    }
    let (oh, ow) = (h + 2 * padding - 2, w + 2 * padding - 2);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let bias = match bias {
        Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        None => vec![0.0; cout],
    };
    let band = (BAND_FLOATS / (16 * cin * tw).max(1)).clamp(1, th);
    let x = x.contiguous()?;
    let mut y = super::zeroed(b * cout * oh * ow);
    with_f32(&x, |x| -> Result<()> {
        for (xb, yb) in x
            .chunks_exact(cin * h * w)
            .zip(y.chunks_exact_mut(cout * oh * ow))
        {
            for ty0 in (0..th).step_by(band) {
                let ty1 = (ty0 + band).min(th);
                let tiles = (ty1 - ty0) * tw;
                let v = transform_input(xb, (cin, h, w), padding, ty0..ty1, tw);
                // [Cin, 16, tiles] viewed as [16, Cin, tiles].
                let v = Tensor::from_vec(v, (cin, 16, tiles), u.device())?.transpose(0, 1)?;
                let m = u.matmul(&v)?; // [16, Cout, tiles]
                with_f32(&m, |m| {
                    transform_output(m, yb, (cout, oh, ow), ty0..ty1, tw, &bias);
                })?;
            }
        }
        Ok(())
    })??;
    Ok(Tensor::from_vec(y, (b, cout, oh, ow), u.device())?)
}

/// `Bᵀ d B` of every tile in tile rows `rows` of one image `[Cin, H, W]`, as `[Cin, 16, tiles]`.
fn transform_input(
    x: &[f32],
    (cin, h, w): (usize, usize, usize),
    padding: usize,
    rows: std::ops::Range<usize>,
    tw: usize,
) -> Vec<f32> {
    let tiles = rows.len() * tw;
    let width = 2 * tw + 2; // the padded input columns the tiles of a row read
    let inside = w.min(width.saturating_sub(padding)); // input columns inside those
    let mut v = super::zeroed(cin * 16 * tiles);
    v.par_chunks_mut(16 * tiles)
        .enumerate()
        .for_each(|(c, vc)| {
            super::vectorized(
                #[inline(always)]
                || {
                    let plane = &x[c * h * w..(c + 1) * h * w];
                    // Four zero-padded input rows `d`, then their column transform `t = Bᵀ d`.
                    let mut d = [
                        vec![0f32; width],
                        vec![0f32; width],
                        vec![0f32; width],
                        vec![0f32; width],
                    ];
                    let mut t = [
                        vec![0f32; width],
                        vec![0f32; width],
                        vec![0f32; width],
                        vec![0f32; width],
                    ];
                    for (i, ty) in rows.clone().enumerate() {
                        for (r, dr) in d.iter_mut().enumerate() {
                            match (2 * ty + r).checked_sub(padding).filter(|&iy| iy < h) {
                                Some(iy) => dr[padding..padding + inside]
                                    .copy_from_slice(&plane[iy * w..iy * w + inside]),
                                None => dr[padding..padding + inside].fill(0.0),
                            }
                        }
                        let [d0, d1, d2, d3] = &d;
                        let [t0, t1, t2, t3] = &mut t;
                        for x in 0..width {
                            t0[x] = d0[x] - d2[x];
                            t1[x] = d1[x] + d2[x];
                            t2[x] = d2[x] - d1[x];
                            t3[x] = d1[x] - d3[x];
                        }
                        // The row transform `t B` across the four columns of each tile: plane `4a + b`
                        // of this tile row, one contiguous run per plane.
                        for (a, ta) in t.iter().enumerate() {
                            let run = |b: usize| {
                                let start = (4 * a + b) * tiles + i * tw;
                                start..start + tw
                            };
                            let (v0, rest) = vc.split_at_mut(run(1).start);
                            let v0 = &mut v0[run(0)];
                            let (v1, rest) = rest.split_at_mut(tiles);
                            let (v2, v3) = rest.split_at_mut(tiles);
                            let (v1, v2, v3) = (&mut v1[..tw], &mut v2[..tw], &mut v3[..tw]);
                            for j in 0..tw {
                                let (c0, c1, c2, c3) =
                                    (ta[2 * j], ta[2 * j + 1], ta[2 * j + 2], ta[2 * j + 3]);
                                v0[j] = c0 - c2;
                                v1[j] = c1 + c2;
                                v2[j] = c2 - c1;
                                v3[j] = c1 - c3;
                            }
                        }
                    }
                },
            )
        });
    v
}

/// `Aᵀ M A` (+ bias) of every tile in tile rows `rows`, from `m: [16, Cout, tiles]` into the
/// image's output `y: [Cout, OH, OW]`.
fn transform_output(
    m: &[f32],
    y: &mut [f32],
    (cout, oh, ow): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    tw: usize,
    bias: &[f32],
) {
    let tiles = rows.len() * tw;
    let plane = cout * tiles;
    y.par_chunks_mut(oh * ow)
        .zip(bias.par_iter())
        .enumerate()
        .for_each(|(co, (yc, &bias))| {
            super::vectorized(
                #[inline(always)]
                || {
                    // `s = Aᵀ M`: two rows of four values per tile, one run of `tw` per value.
                    let mut s = [
                        [
                            vec![0f32; tw],
                            vec![0f32; tw],
                            vec![0f32; tw],
                            vec![0f32; tw],
                        ],
                        [
                            vec![0f32; tw],
                            vec![0f32; tw],
                            vec![0f32; tw],
                            vec![0f32; tw],
                        ],
                    ];
                    for (i, ty) in rows.clone().enumerate() {
                        let run = |xi: usize| {
                            let start = xi * plane + co * tiles + i * tw;
                            &m[start..start + tw]
                        };
                        let [s0, s1] = &mut s;
                        for b in 0..4 {
                            let (m0, m1, m2, m3) = (run(b), run(4 + b), run(8 + b), run(12 + b));
                            let (s0, s1) = (&mut s0[b], &mut s1[b]);
                            for j in 0..tw {
                                s0[j] = m0[j] + m1[j] + m2[j];
                                s1[j] = m1[j] - m2[j] - m3[j];
                            }
                        }
                        // `s A`, two output pixels per tile and row.
                        for (r, sr) in s.iter().enumerate() {
                            let oy = 2 * ty + r;
                            if oy >= oh {
                                break;
                            }
                            let out = &mut yc[oy * ow..(oy + 1) * ow];
                            let (a0, a1, a2, a3) = (&sr[0], &sr[1], &sr[2], &sr[3]);
                            let pairs = ow / 2;
                            for (j, o) in out.chunks_exact_mut(2).enumerate().take(pairs) {
                                o[0] = a0[j] + a1[j] + a2[j] + bias;
                                o[1] = a1[j] - a2[j] - a3[j] + bias;
                            }
                            if ow % 2 == 1 {
                                out[ow - 1] = a0[pairs] + a1[pairs] + a2[pairs] + bias;
                            }
                        }
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// Against candle's direct convolution (a different algorithm) on odd and even sizes,
    /// paddings 0–2, one-pixel outputs and several bands.
    #[test]
    fn matches_candles_convolution() {
        let dev = Device::Cpu;
        for (b, cin, cout, h, w, pad) in [
            (2, 3, 5, 7, 9, 1),
            (1, 6, 4, 8, 8, 1),
            (1, 4, 3, 5, 6, 0),
            (1, 2, 3, 3, 3, 0),
            (1, 5, 2, 6, 7, 2),
            (1, 2, 2, 1, 1, 1),
            (1, 17, 9, 2, 13, 1),
        ] {
            let x = Tensor::randn(0f32, 1f32, (b, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1f32, (cout, cin, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1f32, cout, &dev).unwrap();
            let want = x
                .conv2d(&wt, pad, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let u = super::transform_weight(&wt).unwrap();
            let got = super::conv3x3(&x, &u, pad, Some(&bias)).unwrap();
            assert_eq!(got.dims(), want.dims());
            // Relative to the sums' magnitudes (the convolution of |x| with |w|, plus |bias|),
            // the scale of floating-point summation error: relative to the output itself, a
            // small output of large cancelling terms (a one-pixel output, say) fails by chance.
            let scale = x
                .abs()
                .unwrap()
                .conv2d(&wt.abs().unwrap(), pad, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.abs().unwrap().reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let err = super::super::max_abs_diff(&got, &want) / super::super::max_abs(&scale);
            assert!(err < 1e-6, "{:?} p{pad}: {err}", x.dims());
        }
    }

    #[test]
    fn bands_match_one_band() {
        // 16 · 8 · 600 floats per tile row: about 27 tile rows a band, 20 bands.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (1, 8, 1100, 1199), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1f32, (3, 8, 3, 3), &dev).unwrap();
        let want = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
        let u = super::transform_weight(&wt).unwrap();
        let got = super::conv3x3(&x, &u, 1, None).unwrap();
        let err = super::super::max_abs_diff(&got, &want) / super::super::max_abs(&want);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn refuses_what_it_does_not_compute() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 8, 8), candle_core::DType::F32, &dev).unwrap();
        let w3 = Tensor::zeros((2, 2, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let w5 = Tensor::zeros((2, 2, 5, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(!super::applies(&x, &w3, 2, 1));
        assert!(!super::applies(&x, &w5, 1, 2));
        assert!(!super::applies(
            &x.to_dtype(candle_core::DType::F64).unwrap(),
            &w3,
            1,
            1
        ));
        let small = Tensor::zeros((1, 2, 40, 40), candle_core::DType::F32, &dev).unwrap();
        assert!(!super::applies(&small, &w3, 1, 1));
        let large = Tensor::zeros((1, 2, 64, 32), candle_core::DType::F32, &dev).unwrap();
        assert!(super::applies(&large, &w3, 1, 1));
    }
}
