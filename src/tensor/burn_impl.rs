//! [`SamplerTensor`] for `burn::tensor::Tensor<B, D>` over any burn [`Backend`] (feature
//! `burn`).
//!
//! Everything runs through burn's own tensor operations on the tensor's device (ndarray, wgpu,
//! cuda, …); the finiteness check brings one scalar to the host. Arithmetic is in the
//! backend's float element type.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor, TensorData};

use std::borrow::Cow;

use super::{Layout, NoiseSource, Parallelism, PhiloxNoise, SamplerTensor, quantile_positions};
use crate::error::{Error, Result};

fn check_shapes<B: Backend, const D: usize>(
    shape: &[usize],
    terms: &[(f64, &Tensor<B, D>)],
) -> Result<()> {
    for (_, t) in terms {
        let dims = t.dims();
        if dims.as_slice() != shape {
            return Err(Error::ShapeMismatch {
                what: "linear-combination operand",
                expected: shape.to_vec(),
                found: dims.to_vec(),
            });
        }
    }
    Ok(())
}

fn combine<B: Backend, const D: usize>(
    base: Option<(f64, &Tensor<B, D>)>,
    terms: &[(f64, &Tensor<B, D>)],
) -> Result<Tensor<B, D>> {
    let mut acc = base.map(|(a, b)| b.clone().mul_scalar(a));
    for (c, t) in terms {
        let term = (*t).clone().mul_scalar(*c);
        acc = Some(match acc {
            Some(a) => a.add(term),
            None => term,
        });
    }
    acc.ok_or(Error::StepOrder {
        what: "lincomb called with no terms",
    })
}

/// The name of a burn float dtype.
fn dtype_name(d: burn::tensor::DType) -> &'static str {
    use burn::tensor::DType;
    match d {
        DType::F64 => "f64",
        DType::F32 | DType::Flex32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

fn data_error(e: burn::tensor::DataError) -> Error {
    Error::Backend {
        source: format!("burn tensor data: {e:?}").into(),
    }
}

impl<B: Backend, const D: usize> SamplerTensor for Tensor<B, D> {
    fn layout(&self) -> Layout<'_> {
        Layout {
            shape: Cow::Owned(self.dims().to_vec()),
            dtype: dtype_name(self.dtype()),
        }
    }

    fn linear_combination(
        &mut self,
        keep: Option<f64>,
        terms: &[(f64, &Self)],
        _: Parallelism,
    ) -> Result<()> {
        check_shapes(&self.dims(), terms)?;
        *self = match (keep, terms.is_empty()) {
            (None, true) => self.zeros_like(),
            (keep, _) => combine(keep.map(|a| (a, &*self)), terms)?,
        };
        Ok(())
    }

    fn threshold_per_sample(
        &mut self,
        ratio: f64,
        floor: f64,
        max: f64,
        _: Parallelism,
    ) -> Result<()> {
        let dims = self.dims();
        let batch = dims.first().copied().unwrap_or(1);
        let n: usize = dims.iter().product::<usize>() / batch.max(1);
        if n == 0 {
            return Ok(());
        }
        let flat: Tensor<B, 2> = self.clone().reshape([batch, n]);
        let sorted = flat.clone().abs().sort(1);
        let (lo, hi, frac) = quantile_positions(n, ratio);
        let v_lo = sorted.clone().narrow(1, lo, 1);
        let v_hi = sorted.narrow(1, hi, 1);
        let s = v_lo
            .clone()
            .add(v_hi.sub(v_lo).mul_scalar(frac))
            .clamp(floor, max);
        let out = flat
            .max_pair(s.clone().neg().expand([batch, n]))
            .min_pair(s.clone().expand([batch, n]));
        *self = out.div(s.expand([batch, n])).reshape(dims);
        Ok(())
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        Ok(self.clone().clamp(lo, hi))
    }

    fn all_finite(&self, _: Parallelism) -> Result<bool> {
        // 0·x is 0 for finite values and NaN for NaN and ±∞; one sum reaches the host.
        let probe: f64 = self.clone().mul_scalar(0.0).sum().into_scalar().elem();
        Ok(probe.is_finite())
    }

    fn to_host_f64(&self) -> Result<Vec<f64>> {
        self.clone()
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .map_err(data_error)
    }

    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self> {
        if shape.len() != D {
            return Err(Error::ShapeMismatch {
                what: "burn tensor rank",
                expected: vec![D],
                found: vec![shape.len()],
            });
        }
        let td = TensorData::new(data.to_vec(), shape.to_vec());
        Ok(Tensor::from_data(
            td.convert::<B::FloatElem>(),
            &self.device(),
        ))
    }
}

/// Device-side Gaussian noise from the backend's own generator (`Tensor::random` with
/// `Distribution::Normal(0, 1)`), seeded with `B::seed`. Reproducible on one backend; use
/// [`PhiloxNoise`] for noise identical on every backend.
#[derive(Debug)]
pub struct BurnRandn {
    _seeded: (),
}

impl BurnRandn {
    /// Seeds backend `B`'s generator.
    pub fn new<B: Backend>(seed: u64) -> Self {
        B::seed(seed);
        Self { _seeded: () }
    }
}

impl<B: Backend, const D: usize> NoiseSource<Tensor<B, D>> for BurnRandn {
    fn fill_standard_normal(&mut self, out: &mut Tensor<B, D>, _: Parallelism) -> Result<()> {
        *out = Tensor::random(out.shape(), Distribution::Normal(0.0, 1.0), &out.device());
        Ok(())
    }
}

/// The Philox streams of [`PhiloxNoise`], generated on the host and uploaded.
impl<B: Backend, const D: usize> NoiseSource<Tensor<B, D>> for PhiloxNoise {
    fn fill_standard_normal(&mut self, out: &mut Tensor<B, D>, par: Parallelism) -> Result<()> {
        let dims = out.dims();
        let batch = dims.first().copied().unwrap_or(1);
        let mut host = vec![0f64; dims.iter().product()];
        self.fill_slice(&mut host, batch, par)?;
        *out = out.new_from_host(&dims, &host)?;
        Ok(())
    }
}
