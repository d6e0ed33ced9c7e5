//! Multi-head self-attention of a few tokens straight from their packed projection
//! `qkv` `[B, N, 3·D]` (queries, keys, values side by side, heads `D / H` wide within each):
//! DA-CLIP's encoder, 50 tokens in 12 heads of 64. Through candle that is three strided copies
//! of the heads, a transposed copy of the keys, two batched products of 12 matrices of 50 × 64
//! (each call of the general product has a fixed cost far above these sizes' arithmetic), the
//! softmax, and a transposed copy back: 16 ms of the encoder's 120 on the development VM, for
//! 4 million multiply-adds. Here one task per sample and head computes its scores, softmax and
//! weighted values while they are in L1, and the heads are gathered into `[B, rows, D]` once.

use candle_core::{DType, Device, Tensor};
use pulp::Simd;
use rayon::prelude::*;

use crate::blocks;
use crate::error::Result;

/// The attention output of the first `rows` tokens (queries), against every token's keys and
/// values: `[B, rows, D]`, each head `softmax(scale · q kᵀ) v`. Other devices and dtypes
/// compose it from candle's operations.
pub(crate) fn packed_qkv_attention(
    qkv: &Tensor,
    heads: usize,
    rows: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, n, d3) = qkv.dims3()?;
    let d = d3 / 3;
    if heads == 0 || d3 == 0 || d3 % 3 != 0 || d % heads != 0 || rows > n {
        return Err(candle_core::Error::Msg(format!(
            "attention: {heads} heads and {rows} queries of a packed projection {:?}",
            qkv.dims()
        ))
        .into());
    }
    let hd = d / heads;
    if !(qkv.device().is_cpu() && qkv.dtype() == DType::F32) {
        return composed(qkv, heads, rows, scale);
    }
    let qkv = qkv.contiguous()?;
    let y = super::with_f32(&qkv, |data| {
        let mut per_head = super::zeroed(b * heads * rows * hd);
        per_head
            .par_chunks_mut((rows * hd).max(1))
            .enumerate()
            .for_each(|(task, out)| {
                let sample = &data[task / heads * n * d3..][..n * d3];
                pulp::Arch::new().dispatch(Head {
                    sample,
                    tokens: n,
                    width: d,
                    hd,
                    first: task % heads * hd,
                    scale: scale as f32,
                    out,
                })
            });
        let mut y = super::zeroed(b * rows * d);
        y.par_chunks_mut(d.max(1))
            .enumerate()
            .for_each(|(bt, row)| {
                let (sample, t) = (bt / rows, bt % rows);
                for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
                    dst.copy_from_slice(&per_head[((sample * heads + h) * rows + t) * hd..][..hd]);
                }
            });
        y
    })?;
    Ok(Tensor::from_vec(y, (b, rows, d), &Device::Cpu)?)
}

/// One head of one sample: `out` `[rows, hd]`, its output for the first `rows` tokens.
struct Head<'a> {
    /// `[N, 3·D]`.
    sample: &'a [f32],
    tokens: usize,
    /// `D`: the queries start at column 0 of a token's row, the keys at `D`, the values at
    /// `2·D`.
    width: usize,
    /// The head's width.
    hd: usize,
    /// The head's first column within each of the three.
    first: usize,
    scale: f32,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Head<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Head {
            sample,
            tokens: n,
            width: d,
            hd,
            first,
            scale,
            out,
        } = self;
        let token = |u: usize, part: usize| &sample[u * 3 * d + part * d + first..][..hd];
        // Sums run in groups of four vectors (four independent chains of multiply-adds, one
        // broadcast for four of them), over copies padded with zeros to whole groups.
        let group = 4 * S::F32_LANES;
        // The keys transposed, `[hd, np]`: a query's scores are whole vectors.
        let np = n.div_ceil(group) * group;
        let mut keys = vec![0f32; hd * np];
        for u in 0..n {
            for (j, &k) in token(u, 1).iter().enumerate() {
                keys[j * np + u] = k;
            }
        }
        // The values gathered, `[N, hp]`: in place, a head's rows lie `3·D` floats apart (9 KiB
        // in the encoder), which map to a quarter of the L1 cache's sets, too few for 50 rows.
        let hp = hd.div_ceil(group) * group;
        let mut values = vec![0f32; n * hp];
        for (u, row) in values.chunks_exact_mut(hp).enumerate() {
            row[..hd].copy_from_slice(token(u, 2));
        }
        let (keys, _) = S::as_simd_f32s(&keys);
        let (values, _) = S::as_simd_f32s(&values);
        let mut scores = vec![0f32; np];
        let mut row = vec![0f32; hp];
        for (t, out) in out.chunks_exact_mut(hd).enumerate() {
            let q = token(t, 0);
            let (chunks, _) = S::as_mut_simd_f32s(&mut scores);
            sum_rows(s, chunks, keys, q.iter().copied());
            super::softmax::softmax_row(&mut scores[..n], scale);
            let (chunks, _) = S::as_mut_simd_f32s(&mut row);
            sum_rows(s, chunks, values, scores[..n].iter().copied());
            out.copy_from_slice(&row[..hd]);
        }
    }
}

/// `out = Σ_i a_i · rows_i`, where row `i` is `rows[i·w .. (i + 1)·w]` (`w = out.len()`, a
/// multiple of 4 vectors) and the weights `a_i` come from `weights`. Four vectors of `out` at
/// a time stay in registers across all the rows.
#[inline(always)]
fn sum_rows<S: Simd>(
    s: S,
    out: &mut [S::f32s],
    rows: &[S::f32s],
    weights: impl Iterator<Item = f32> + Clone,
) {
    let w = out.len();
    for (g, out) in out.chunks_exact_mut(4).enumerate() {
        let mut acc = [s.splat_f32s(0.0); 4];
        for (a, row) in weights.clone().zip(rows.chunks_exact(w)) {
            let (a, row) = (s.splat_f32s(a), &row[4 * g..][..4]);
            for r in 0..4 {
                acc[r] = s.mul_add_f32s(a, row[r], acc[r]);
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// The same from candle's operations: the heads as `[B, H, tokens, hd]` copies.
fn composed(qkv: &Tensor, heads: usize, rows: usize, scale: f64) -> Result<Tensor> {
    let (b, n, d3) = qkv.dims3()?;
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let head = |part: usize, tokens: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(1, 0, tokens)?
            .narrow(2, part * d, d)?
            .reshape((b, tokens, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    Ok(blocks::attention(
        &head(0, rows)?,
        &head(1, n)?,
        &head(2, n)?,
        scale,
        usize::MAX,
    )?
    .transpose(1, 2)?
    .contiguous()?
    .reshape((b, rows, d))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition in f64, for every query and for the first one alone, two samples
    /// of 3 heads; the candle composition on the same input within the same bound.
    #[test]
    fn equals_the_attention_of_each_head() {
        // Heads and token counts below, across and at whole groups of the padded sums.
        for (b, n, heads, hd) in [(2, 11, 3, 8), (1, 37, 2, 48), (1, 70, 2, 64)] {
            check(b, n, heads, hd);
        }
    }

    fn check(b: usize, n: usize, heads: usize, hd: usize) {
        let d = heads * hd;
        let scale = (hd as f64).powf(-0.5);
        let data: Vec<f32> = (0..b * n * 3 * d)
            .map(|i| (((i * 7919) % 1009) as f32 / 1009.0 - 0.5) * 6.0)
            .collect();
        let qkv = Tensor::from_vec(data.clone(), (b, n, 3 * d), &Device::Cpu).unwrap();
        let at = |s: usize, u: usize, part: usize, h: usize, j: usize| {
            f64::from(data[(s * n + u) * 3 * d + part * d + h * hd + j])
        };
        for rows in [n, 1, 5] {
            let got = packed_qkv_attention(&qkv, heads, rows, scale).unwrap();
            let candle = composed(&qkv, heads, rows, scale).unwrap();
            assert_eq!(got.dims(), &[b, rows, d]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let candle: Vec<f32> = candle.flatten_all().unwrap().to_vec1().unwrap();
            for s in 0..b {
                for h in 0..heads {
                    for t in 0..rows {
                        let dot =
                            |u: usize| (0..hd).map(move |j| at(s, t, 0, h, j) * at(s, u, 1, h, j));
                        let logits: Vec<f64> =
                            (0..n).map(|u| scale * dot(u).sum::<f64>()).collect();
                        let max = logits.iter().copied().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                        let total: f64 = e.iter().sum();
                        let p: Vec<f64> = e.iter().map(|e| e / total).collect();
                        // f32 scores err by up to hd·ε of their terms' magnitudes; a weight's
                        // relative error is within twice the largest such error in a logit
                        // plus the exponential's few ulps.
                        let logit_err = (0..n)
                            .map(|u| dot(u).map(f64::abs).sum::<f64>())
                            .fold(0.0, f64::max)
                            * scale
                            * hd as f64
                            * f64::from(f32::EPSILON);
                        for j in 0..hd {
                            let want: f64 = (0..n).map(|u| p[u] * at(s, u, 2, h, j)).sum();
                            let mag: f64 = (0..n).map(|u| p[u] * at(s, u, 2, h, j).abs()).sum();
                            let bound = mag * (2.0 * logit_err + 16.0 * f64::from(f32::EPSILON))
                                + n as f64 * f64::from(f32::EPSILON) * mag;
                            let i = (s * rows + t) * d + h * hd + j;
                            for (name, v) in [("kernel", got[i]), ("candle", candle[i])] {
                                let err = (f64::from(v) - want).abs();
                                assert!(
                                    err <= bound,
                                    "{name}, rows {rows}, sample {s} head {h} token {t} column \
                                     {j}: {v} vs {want} (error {err:.2e}, bound {bound:.2e})"
                                );
                            }
                        }
                    }
                }
            }
        }
        // Shapes the heads cannot split are refused.
        assert!(packed_qkv_attention(&qkv, 5, n, scale).is_err());
        assert!(packed_qkv_attention(&qkv, heads, n + 1, scale).is_err());
    }
}
