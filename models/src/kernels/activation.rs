//! SiLU, `x·σ(x) = x / (1 + e^(−x))`, on the CPU in f32 with an exponential that vectorises:
//! `e^y = 2^n · p(r)` with `n = round(y / ln 2)` (by the float-magic rounding, which needs no
//! rounding instruction), `r = y − n·ln 2` in two parts, `p` the degree-6 Taylor polynomial
//! (relative error below 2e-7 on `|r| ≤ ln 2 / 2`), and `2^n` written into the exponent bits.
//! candle computes each element with the C library's `expf`, one at a time. The exact GELU on
//! the same exponential ([`gelu`]), where candle calls the C library's `erf` on one thread.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// `x·σ(x)` of `x`, or `None` where the kernel does not apply (not CPU f32).
pub(crate) fn silu(x: &Tensor) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&Silu)?))
}

/// `e^y` for `y ≤ 88` (larger `y` is clamped; below −87 the result is `e^−87`, 1.6e-38): the
/// exponential of the SiLU and the softmax kernels, which vectorises where the C library's
/// `expf` runs one element at a time.
#[inline(always)]
pub(crate) fn exp(y: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let y = y.clamp(-87.0, 88.0);
    let t = y * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n is the integer in t's low mantissa bits (two's complement within 2²²).
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((k + 127) << 23) as u32)
}

/// `gelu(x) = x·Φ(x) = ½·x·erfc(−x/√2)`, PyTorch's exact (`erf`) GELU, vectorising:
/// `erfc(z) = t·P(t)·e^(−z²)` for `z ≥ 0`, `t = 1 / (1 + p·z)`, with Abramowitz and Stegun's
/// five-term fit (their 7.1.26; absolute error of `erf` at most 1.5e-7), and
/// `erfc(−z) = 2 − erfc(z)`. So `|gelu − exact| ≤ 1.5e-7·|x| / 2` plus rounding, and the
/// negative tail decays to 0 without the cancellation of `1 + erf(x/√2)`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    // erfc(|x|/√2): the upper tail's probability, doubled.
    let tail = poly * exp(-z * z);
    let cdf = if x >= 0.0 {
        1.0 - 0.5 * tail
    } else {
        0.5 * tail
    };
    x * cdf
}

struct Silu;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "silu-f32"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("silu", s, l)?;
        let mut out = super::zeroed(x.len());
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                super::vectorized(
                    #[inline(always)]
                    || {
                        y.iter_mut()
                            .zip(x)
                            .for_each(|(y, &v)| *y = v / (1.0 + exp(-v)))
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
    fn exp_is_within_two_ulp_over_the_range() {
        let mut worst = 0f64;
        let mut y = -87.0f32;
        while y < 88.0 {
            let exact = f64::from(y).exp();
            let rel = ((f64::from(exp(y)) - exact) / exact).abs();
            worst = worst.max(rel);
            y += 0.001_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_matches_the_definition() {
        let mut worst = 0f64;
        for i in -12_000..12_000 {
            let x = i as f32 * 0.001;
            let xd = f64::from(x);
            let exact = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
            let err = (f64::from(gelu(x)) - exact).abs();
            // The fit's 1.5e-7 on Φ, times |x|, plus f32 rounding of the result.
            let bound = 1.5e-7 * xd.abs() + 2e-7 * exact.abs() + 1e-12;
            worst = worst.max(err / bound);
            assert!(err <= bound, "gelu({x}) = {}, exact {exact}", gelu(x));
        }
        assert!(worst > 0.05, "the bound is not loose by orders: {worst}");
        // Tails: x for large x, 0 (not NaN) for very negative x; an exact zero at 0.
        assert_eq!(gelu(50.0), 50.0);
        assert!(gelu(-50.0).abs() < 1e-30);
        assert_eq!(gelu(0.0), 0.0);
        assert!(!gelu(-1e30).is_nan() && !gelu(1e30).is_nan());
    }

    #[test]
    fn silu_matches_the_definition() {
        let v: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.025).collect();
        let x = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
        let y: Vec<f32> = silu(&x).unwrap().unwrap().to_vec1().unwrap();
        for (&a, &b) in v.iter().zip(&y) {
            let exact = f64::from(a) / (1.0 + (-f64::from(a)).exp());
            assert!(
                (f64::from(b) - exact).abs() <= 4e-7 * exact.abs().max(1e-3),
                "silu({a}) = {b}, exact {exact}"
            );
        }
        // Far tails: x for large x, 0 (not NaN) for very negative x.
        let tails = Tensor::new(&[100f32, -100.0, 0.0], &Device::Cpu).unwrap();
        let t: Vec<f32> = silu(&tails).unwrap().unwrap().to_vec1().unwrap();
        assert_eq!(t[0], 100.0);
        assert!(t[1].abs() < 1e-30 && !t[1].is_nan());
        assert_eq!(t[2], 0.0);
    }
}
