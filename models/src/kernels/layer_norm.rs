//! LayerNorm over the last dimension (`torch.nn.LayerNorm(n)` on `[.., n]` tokens) in one task
//! per block of rows: each row's mean and biased variance, then `(x − mean)·a + b` with
//! `a = weight / sqrt(var + eps)`, while the row is in cache. candle composes it from about ten
//! tensor operations, each a pass over the tokens with its own allocation, which dominates at
//! the encoder's 50 tokens and costs a pass apiece at the denoiser's 4 096.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Rows of one task (the encoder's 50 tokens are one task; large inputs split).
const ROWS_PER_TASK: usize = 32;

/// Interleaved partial sums: 16 independent chains vectorise, where one is a dependency
/// chain through every element.
const LANES: usize = 16;

/// LayerNorm of `x` (`[.., n]`) with `weight` and `bias` `[n]`, or `None` where the kernel
/// does not apply (not CPU f32; the caller then composes it).
pub(crate) fn layer_norm_last(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 1)
        || weight.dtype() != DType::F32
        || bias.dtype() != DType::F32
    {
        return Ok(None);
    }
    let op = Op {
        weight: weight.flatten_all()?.to_vec1()?,
        bias: bias.flatten_all()?.to_vec1()?,
        eps,
    };
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&op)?))
}

struct Op {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f64,
}

/// `Σ f(v)` over `row` in f64, from `LANES` interleaved f32 partial sums.
#[inline(always)]
fn sum(row: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let rest: f64 = chunks.remainder().iter().map(|&v| f64::from(f(v))).sum();
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + rest
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        "layer-norm-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("layer-norm", s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        if self.weight.len() != n || self.bias.len() != n {
            candle_core::bail!(
                "layer-norm: rows of {n}, weight of {}, bias of {}",
                self.weight.len(),
                self.bias.len()
            );
        }
        let mut out = super::zeroed(x.len());
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(yo, xo)| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        for (y, row) in yo.chunks_exact_mut(n).zip(xo.chunks_exact(n)) {
                            let mean = sum(row, |v| v) / n as f64;
                            let m = mean as f32;
                            let var = sum(row, |v| (v - m) * (v - m)) / n as f64;
                            let inv = (1.0 / (var + self.eps).sqrt()) as f32;
                            for (((y, &v), &w), &b) in
                                y.iter_mut().zip(row).zip(&self.weight).zip(&self.bias)
                            {
                                *y = (v - m) * inv * w + b;
                            }
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against the definition in f64 (two-pass mean and biased variance), on rows longer and
    /// shorter than the lanes and blocks of rows that do not divide evenly, with a large
    /// common offset (where a one-pass variance would cancel).
    #[test]
    fn equals_the_definition() {
        let dev = Device::Cpu;
        for (rows, n) in [(50, 768), (70, 13), (3, 1)] {
            let x = (Tensor::randn(0f32, 2f32, (rows, n), &dev).unwrap() + 100.0).unwrap();
            let w = Tensor::randn(0f32, 1f32, n, &dev).unwrap();
            let b = Tensor::randn(0f32, 1f32, n, &dev).unwrap();
            let got = layer_norm_last(&x, &w, &b, 1e-5).unwrap().unwrap();
            let (xv, wv, bv) = (
                x.to_vec2::<f32>().unwrap(),
                w.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
            );
            let got = got.to_vec2::<f32>().unwrap();
            for (row, out) in xv.iter().zip(&got) {
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let var = row
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n as f64;
                for (k, (&v, &o)) in row.iter().zip(out).enumerate() {
                    let want = (f64::from(v) - mean) / (var + 1e-5).sqrt() * f64::from(wv[k])
                        + f64::from(bv[k]);
                    // f32 rounding of x − mean (x ≈ 100, |x − mean| ≈ 2: 1e-5 relative to
                    // the deviation) and of the products.
                    assert!(
                        (f64::from(o) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "rows {rows} n {n} k {k}: {o} vs {want}"
                    );
                }
            }
        }
    }
}
