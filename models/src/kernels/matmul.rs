//! The matrix products of the convolutions, `a [M, K] · b [K, N]`.
//!
//! By default candle's (the `gemm` crate's kernels on the CPU: AVX-512 where the CPU has it,
//! through the `x86-v4` feature this crate turns on, else AVX2). With the `openblas`
//! feature, CPU f32 products go to the system OpenBLAS through ndarray's BLAS support: on the
//! dev machine its AVX-512 kernels run a convolution-shaped product at about the rate of
//! `gemm`'s AVX-512 ones (212–252 against 230–244 GFLOPS), which gains the U-Net and DA-CLIP
//! about 10 % and costs the NAFNet (`docs/benchmarks.md`). Other devices and dtypes always use
//! candle's.

use candle_core::Tensor;

use crate::error::Result;

/// `a [M, K] · b [K, N]`.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "openblas")]
    if a.device().is_cpu()
        && a.dtype() == candle_core::DType::F32
        && b.dtype() == candle_core::DType::F32
        && a.rank() == 2
        && b.rank() == 2
    {
        return Ok(a
            .contiguous()?
            .apply_op2_no_bwd(&b.contiguous()?, &blas::Product)?);
    }
    Ok(a.matmul(b)?)
}

#[cfg(feature = "openblas")]
mod blas {
    use blas_src as _;
    use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
    use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};

    pub(super) struct Product;

    impl CustomOp2 for Product {
        fn name(&self) -> &'static str {
            "openblas-sgemm"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
                candle_core::bail!("openblas product: f32 only");
            };
            let bounds = |l: &Layout| -> candle_core::Result<(usize, usize, usize, usize)> {
                let (o0, o1) = l.contiguous_offsets().ok_or_else(|| {
                    candle_core::Error::Msg("openblas product: contiguous only".into())
                })?;
                let (r, c) = l.shape().dims2()?;
                Ok((o0, o1, r, c))
            };
            let (a0, a1, m, k) = bounds(l1)?;
            let (b0, b1, k2, n) = bounds(l2)?;
            if k != k2 {
                candle_core::bail!("openblas product: [{m}, {k}] · [{k2}, {n}]");
            }
            let a = ArrayView2::from_shape((m, k), &a[a0..a1]).map_err(candle_core::Error::wrap)?;
            let b = ArrayView2::from_shape((k, n), &b[b0..b1]).map_err(candle_core::Error::wrap)?;
            let mut c = Array2::<f32>::zeros((m, n));
            general_mat_mul(1.0, &a, &b, 0.0, &mut c);
            let (data, _) = c.into_raw_vec_and_offset();
            Ok((CpuStorage::F32(data), Shape::from((m, n))))
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn equals_the_textbook_product() {
        let a = Tensor::randn(0f32, 1f32, (37, 129), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1f32, (129, 203), &Device::Cpu).unwrap();
        let got = super::matmul(&a, &b).unwrap().to_vec2::<f32>().unwrap();
        let (a, b) = (a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        for (i, row) in got.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let want: f64 = (0..129)
                    .map(|l| f64::from(a[i][l]) * f64::from(b[l][j]))
                    .sum();
                assert!(
                    (f64::from(v) - want).abs() < 1e-4,
                    "({i}, {j}): {v} vs {want}"
                );
            }
        }
    }
}
