//! GroupNorm of `[B, C, H, W]` in two passes over each group's contiguous block (statistics in
//! f64, then `y = x·a_c + b_c` per channel), groups split across threads. candle builds it from
//! about nine tensor operations, each a pass over the feature map and an allocation.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// `torch.nn.GroupNorm(groups, C, eps)` of `x` with `weight` and `bias` `[C]`, or `None`
/// where the kernel does not apply (not CPU f32; the caller then composes it).
pub(crate) fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4)
        || weight.dtype() != DType::F32
        || bias.dtype() != DType::F32
    {
        return Ok(None);
    }
    let (b, c, h, w) = x.dims4()?;
    let op = Op {
        weight: weight.flatten_all()?.to_vec1()?,
        bias: bias.flatten_all()?.to_vec1()?,
        groups,
        eps,
    };
    let y = x
        .contiguous()?
        .reshape((b, c, h * w))?
        .apply_op1_no_bwd(&op)?;
    Ok(Some(y.reshape((b, c, h, w))?))
}

struct Op {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("group-norm", s, l)?;
        let (_, c, inner) = l.shape().dims3()?;
        if self.groups == 0 || c % self.groups != 0 || self.weight.len() != c {
            candle_core::bail!("group-norm: {c} channels, {} groups", self.groups);
        }
        let per_group = c / self.groups;
        let block = per_group * inner;
        let mut out = super::zeroed(x.len());
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .enumerate()
            .for_each(|(k, (yo, xo))| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        let n = xo.len() as f64;
                        let mean = xo.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                        let var = xo
                            .iter()
                            .map(|&v| {
                                let d = f64::from(v) - mean;
                                d * d
                            })
                            .sum::<f64>()
                            / n;
                        let inv = 1.0 / (var + self.eps).sqrt();
                        let first = (k % self.groups) * per_group;
                        for (ch, (yc, xc)) in yo
                            .chunks_exact_mut(inner)
                            .zip(xo.chunks_exact(inner))
                            .enumerate()
                        {
                            let a = inv * f64::from(self.weight[first + ch]);
                            let b = f64::from(self.bias[first + ch]) - mean * a;
                            let (a, b) = (a as f32, b as f32);
                            yc.iter_mut().zip(xc).for_each(|(y, &v)| *y = v * a + b);
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

    #[test]
    fn matches_the_composed_group_norm() {
        let x = Tensor::randn(0f32, 1.0, (2, 12, 5, 7), &Device::Cpu)
            .unwrap()
            .affine(3.0, 1.5)
            .unwrap();
        let weight = Tensor::randn(0f32, 1.0, 12, &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 12, &Device::Cpu).unwrap();
        let fast = group_norm(&x, &weight, &bias, 4, 1e-5).unwrap().unwrap();
        let g = x.reshape((2, 4, 3 * 35)).unwrap();
        let mean = g.mean_keepdim(2).unwrap();
        let centred = g.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(2).unwrap();
        let normed = centred
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .reshape((2, 12, 5, 7))
            .unwrap();
        let composed = normed
            .broadcast_mul(&weight.reshape((1, 12, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&bias.reshape((1, 12, 1, 1)).unwrap())
            .unwrap();
        assert!(super::super::max_abs_diff(&fast, &composed) < 1e-5);
    }
}
