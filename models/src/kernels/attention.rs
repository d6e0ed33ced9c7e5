//! Scaled dot-product attention `softmax(scale · q kᵀ) v` of many tokens, `[B, H, N, d]`
//! queries against `[B, H, M, d]` keys and values, without a score matrix in memory.
//!
//! Through candle the attention is two general products and a softmax over an `N × M` score
//! matrix per head: for DA-CLIP's spatial transformers at 512² (4 096 pixels as tokens, 16
//! heads of 32) that is 1 GiB of scores per block, written by the first product, read and
//! rewritten by the softmax and read by the second product, and products whose inner
//! dimension (32) is too short for the general kernel's packing to pay. Here each task takes
//! a few queries of one head; for four queries at a time it computes their scores (one row of
//! `M` each, in the core's own cache), their softmax, and their weighted sums of values, both
//! products vectorised along the keys from transposed copies of the keys and values:
//!
//! * scores: `s[r, j] = Σ_c q[r, c] · kᵀ[c, j]`, a tile of 4 queries by 4 vectors of keys in
//!   registers, 4 key vectors and 4 broadcast query values per 16 multiply-adds;
//! * outputs: `o[r, c] = Σ_j p[r, j] · vᵀ[c, j]`, a tile of 4 queries by 4 value channels,
//!   each a vector of partial sums along the keys added up once at the end.
//!
//! Each query row's softmax is the exact one (maximum, exponentials, sum), as in the composed
//! form, its division by the sum applied to the row's outputs; only the order of the sums
//! differs.

use candle_core::{DType, Device, Tensor};
use pulp::Simd;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Query rows per task (four groups of four).
const ROWS: usize = 16;

/// Keys and value channels are padded with zeros to multiples of these: 4 vectors of the
/// widest lanes (16 × f32), and the 4 channels of an output tile.
const KEY_PAD: usize = 64;
const CHANNEL_PAD: usize = 4;

/// Floats between the starts of two rows of transposed keys, values or scores: the padded
/// key count plus one vector of the widest lanes. At a multiple of 4 KiB (1 024 keys and
/// more) the rows a tile reads together would all fall into the same few sets of the L1
/// cache, more of them than it has ways.
fn row_stride(mp: usize) -> usize {
    mp + KEY_PAD / 4
}

/// Whether [`attention`] computes these inputs: CPU f32 tensors.
pub(crate) fn applies(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `softmax(scale · q kᵀ) v` per sample and head: `q` `[B, H, N, d]`, `k` and `v`
/// `[B, H, M, d]`, the result `[B, H, N, d]`. Callers check [`applies`] first.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, n, d) = q.dims4()?;
    let (kb, kh, m, kd) = k.dims4()?;
    if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() || m == 0 || d == 0 {
        return Err(Error::input(format!(
            "attention: queries {:?}, keys {:?} and values {:?} do not match (the same batch, \
             heads and width, at least one key and one channel)",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let heads = b * h;
    let mp = m.div_ceil(KEY_PAD) * KEY_PAD;
    let stride = row_stride(mp);
    let dp = d.div_ceil(CHANNEL_PAD) * CHANNEL_PAD;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let kt = super::with_f32(&k, |k| transposed(k, heads, m, d, d, stride))?;
    let vt = super::with_f32(&v, |v| transposed(v, heads, m, d, dp, stride))?;
    let mut out = super::zeroed(heads * n * d);
    super::with_f32(&q, |q| {
        out.par_chunks_mut((n * d).max(1))
            .zip(q.par_chunks((n * d).max(1)))
            .zip(kt.par_chunks(d * stride).zip(vt.par_chunks(dp * stride)))
            .for_each(|((out, q), (kt, vt))| {
                out.par_chunks_mut(ROWS * d)
                    .zip(q.par_chunks(ROWS * d))
                    .for_each_init(
                        || (vec![0f32; 4 * stride], vec![0f32; 4 * d]),
                        |(scores, rows), (out, q)| {
                            pulp::Arch::new().dispatch(Block {
                                q,
                                kt,
                                vt,
                                keys: m,
                                width: d,
                                scale: scale as f32,
                                scores,
                                rows,
                                out,
                            })
                        },
                    )
            });
    })?;
    Ok(Tensor::from_vec(out, (b, h, n, d), &Device::Cpu)?)
}

/// Each head's `[M, d]` rows of `x` (`heads` of them) as `rows_out` rows of `stride`
/// floats, zero beyond `M` keys and `d` rows.
fn transposed(
    x: &[f32],
    heads: usize,
    m: usize,
    d: usize,
    rows_out: usize,
    stride: usize,
) -> Vec<f32> {
    let mut t = super::zeroed(heads * rows_out * stride);
    t.par_chunks_mut(rows_out * stride)
        .zip(x.par_chunks(m * d))
        .for_each(|(t, x)| {
            for (j, row) in x.chunks_exact(d).enumerate() {
                for (c, &value) in row.iter().enumerate() {
                    t[c * stride + j] = value;
                }
            }
        });
    t
}

/// Up to [`ROWS`] queries of one head.
struct Block<'a> {
    /// `[rows, d]`.
    q: &'a [f32],
    /// `d` rows of [`row_stride`] floats, zero beyond `keys`.
    kt: &'a [f32],
    /// `dp` rows (`d` rounded up to [`CHANNEL_PAD`]) likewise, zero beyond `keys` and `d`.
    vt: &'a [f32],
    keys: usize,
    width: usize,
    scale: f32,
    /// 4 rows likewise: four queries' scores, then their unnormalised weights.
    scores: &'a mut [f32],
    /// `[4, d]`: four queries, zero for rows past the block's end.
    rows: &'a mut [f32],
    /// `[rows, d]`.
    out: &'a mut [f32],
}

impl pulp::WithSimd for Block<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Block {
            q,
            kt,
            vt,
            keys: m,
            width: d,
            scale,
            scores,
            rows,
            out,
        } = self;
        let lanes = S::F32_LANES;
        let stride = scores.len() / 4 / lanes; // vectors from one row to the next
        let vectors = m.div_ceil(KEY_PAD) * KEY_PAD / lanes; // those holding keys, 4k of them
        let (kt, _) = S::as_simd_f32s(kt);
        let (vt, _) = S::as_simd_f32s(vt);
        for (q, out) in q.chunks(4 * d).zip(out.chunks_mut(4 * d)) {
            let live = q.len() / d;
            rows[..q.len()].copy_from_slice(q);
            rows[q.len()..].fill(0.0);
            // Scores, 4 queries by 4 vectors of keys per tile.
            {
                let (sv, _) = S::as_mut_simd_f32s(scores);
                for g in (0..vectors).step_by(4) {
                    let mut acc = [[s.splat_f32s(0.0); 4]; 4];
                    for c in 0..d {
                        let k = &kt[c * stride + g..][..4];
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let a = s.splat_f32s(rows[r * d + c]);
                            for (acc, &k) in acc.iter_mut().zip(k) {
                                *acc = s.mul_add_f32s(a, k, *acc);
                            }
                        }
                    }
                    for (r, acc) in acc.iter().enumerate() {
                        sv[r * stride + g..][..4].copy_from_slice(acc);
                    }
                }
            }
            // Each live query's weights `exp(scale · (s − max))`, zero past the keys (whose
            // padded scores are 0), and their sum, by which the outputs are divided.
            let mut inv = [0f32; 4];
            for (row, inv) in scores
                .chunks_exact_mut(stride * lanes)
                .zip(&mut inv)
                .take(live)
            {
                *inv = 1.0 / super::softmax::exponentials(&mut row[..m], scale);
                row[m..].fill(0.0);
            }
            // Outputs, 4 queries by 4 channels per tile.
            let (sv, _) = S::as_simd_f32s(scores);
            for c0 in (0..d).step_by(CHANNEL_PAD) {
                let mut acc = [[s.splat_f32s(0.0); 4]; 4];
                for j in 0..vectors {
                    let p = [
                        sv[j],
                        sv[stride + j],
                        sv[2 * stride + j],
                        sv[3 * stride + j],
                    ];
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let v = vt[(c0 + c) * stride + j];
                        for (acc, &p) in acc.iter_mut().zip(&p) {
                            *acc = s.mul_add_f32s(p, v, *acc);
                        }
                    }
                }
                for (c, acc) in acc.iter().enumerate().take(d - c0) {
                    for (r, &acc) in acc.iter().enumerate().take(live) {
                        out[r * d + c0 + c] = s.reduce_sum_f32s(acc) * inv[r];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition in f64 on every query of every head, for shapes across the
    /// paddings: head widths below, at and off multiples of 4, query counts across the
    /// 16-row tasks and 4-row groups, key counts across the 64-key padding and unlike the
    /// query count. The bound is the rounding of f32 sums of that length: each output is a
    /// convex combination of values, its error at most a few units of f32 rounding times the
    /// terms' magnitudes (scores up to `|q|·|k|·d·scale`, exponentials, `M` weights).
    #[test]
    fn equals_the_definition() {
        for (b, h, n, m, d) in [
            (1, 1, 1, 1, 1),
            (2, 3, 17, 70, 8),
            (1, 2, 33, 64, 32),
            (1, 1, 5, 129, 6),
            (1, 2, 64, 200, 32),
            (2, 1, 40, 7, 64),
        ] {
            check(b, h, n, m, d, (d as f64).powf(-0.5));
        }
        // A negative scale (the public `layers::attention` takes any), scaled scores spread
        // over more than `exp`'s range: the shift must be the largest scaled score, not the
        // scaled largest score.
        check(1, 2, 9, 90, 16, -8.0);
    }

    fn check(b: usize, h: usize, n: usize, m: usize, d: usize, scale: f64) {
        let dev = Device::Cpu;
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((((i + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5) * 4.0)
                .collect()
        };
        let (qd, kd, vd) = (
            fill(b * h * n * d, 1),
            fill(b * h * m * d, 2),
            fill(b * h * m * d, 3),
        );
        let q = Tensor::from_vec(qd.clone(), (b, h, n, d), &dev).unwrap();
        let k = Tensor::from_vec(kd.clone(), (b, h, m, d), &dev).unwrap();
        let v = Tensor::from_vec(vd.clone(), (b, h, m, d), &dev).unwrap();
        let got: Vec<f32> = attention(&q, &k, &v, scale)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut worst = 0f64;
        for head in 0..b * h {
            for i in 0..n {
                let qi = &qd[(head * n + i) * d..][..d];
                let s: Vec<f64> = (0..m)
                    .map(|j| {
                        let kj = &kd[(head * m + j) * d..][..d];
                        qi.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..m)
                        .map(|j| e[j] / total * vd[(head * m + j) * d + c] as f64)
                        .sum();
                    let err = (got[(head * n + i) * d + c] as f64 - want).abs();
                    if err.is_nan() || err > worst {
                        worst = err; // a NaN then fails the bound
                    }
                }
            }
        }
        // |v| ≤ 2; the scores' rounding (d terms of magnitude ≤ 4·scale) moves each weight by
        // a relative ≈ d·ε·4·d·scale, the sums over M keys add ≈ M·ε relative.
        let eps = f32::EPSILON as f64;
        let bound =
            2.0 * eps * (8.0 * (d as f64) * (d as f64) * scale.abs() + 4.0 * m as f64 + 16.0);
        assert!(
            worst <= bound,
            "b{b} h{h} n{n} m{m} d{d}: error {worst:e} above {bound:e}"
        );
    }

    #[test]
    fn refuses_mismatched_shapes() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 5, 8), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 6, 8), DType::F32, &dev).unwrap();
        let narrow = Tensor::zeros((1, 2, 6, 4), DType::F32, &dev).unwrap();
        let none = Tensor::zeros((1, 2, 0, 8), DType::F32, &dev).unwrap();
        assert!(attention(&q, &k, &k, 1.0).is_ok());
        assert!(attention(&q, &narrow, &narrow, 1.0).is_err());
        assert!(attention(&q, &k, &narrow, 1.0).is_err());
        assert!(attention(&q, &none, &none, 1.0).is_err());
    }
}
