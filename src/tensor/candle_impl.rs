//! [`SamplerTensor`] for `candle_core::Tensor` (feature `candle`; `cuda` / `metal` for GPUs).
//!
//! Every operation runs on the tensor's own device: linear combinations are `affine` + `add`
//! kernels, thresholding sorts on the device, and the finiteness check reduces to one scalar.
//! Only that scalar, and the data the caller asks for with `to_host_f64`, cross to the host.
//! `f32` and `f64` tensors are stepped in their own precision; `f16` / `bf16` tensors are
//! stepped in `f32` and rounded back once per operation.

use candle_core::{DType, Device, Tensor};

use std::borrow::Cow;

use super::{Layout, NoiseSource, Parallelism, PhiloxNoise, SamplerTensor, quantile_positions};
use crate::error::{Error, Result};

fn backend(e: candle_core::Error) -> Error {
    Error::Backend {
        source: Box::new(e),
    }
}

/// The dtype arithmetic runs in.
fn work_dtype(t: &Tensor) -> DType {
    match t.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

fn to_work(t: &Tensor) -> Result<Tensor> {
    let w = work_dtype(t);
    if t.dtype() == w {
        Ok(t.clone())
    } else {
        t.to_dtype(w).map_err(backend)
    }
}

fn check_shapes(shape: &[usize], terms: &[(f64, &Tensor)]) -> Result<()> {
    for (_, t) in terms {
        if t.dims() != shape {
            return Err(Error::ShapeMismatch {
                what: "linear-combination operand",
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
    }
    Ok(())
}

/// `[a·base] + Σ cᵢ·tᵢ` in the working dtype, returned in `dtype`.
fn combine(base: Option<(f64, &Tensor)>, terms: &[(f64, &Tensor)], dtype: DType) -> Result<Tensor> {
    let mut acc: Option<Tensor> = match base {
        Some((a, b)) => Some(to_work(b)?.affine(a, 0.0).map_err(backend)?),
        None => None,
    };
    for (c, t) in terms {
        let term = to_work(t)?.affine(*c, 0.0).map_err(backend)?;
        acc = Some(match acc {
            Some(a) => (a + term).map_err(backend)?,
            None => term,
        });
    }
    let out = acc.ok_or(Error::StepOrder {
        what: "lincomb called with no terms",
    })?;
    if out.dtype() == dtype {
        Ok(out)
    } else {
        out.to_dtype(dtype).map_err(backend)
    }
}

impl SamplerTensor for Tensor {
    fn layout(&self) -> Layout<'_> {
        Layout {
            shape: Cow::Borrowed(self.dims()),
            dtype: self.dtype().as_str(),
        }
    }

    fn linear_combination(
        &mut self,
        keep: Option<f64>,
        terms: &[(f64, &Self)],
        _: Parallelism,
    ) -> Result<()> {
        check_shapes(self.dims(), terms)?;
        *self = match (keep, terms.is_empty()) {
            (None, true) => self.zeros_like().map_err(backend)?,
            (keep, _) => combine(keep.map(|a| (a, &*self)), terms, self.dtype())?,
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
        let dims = self.dims().to_vec();
        let batch = dims.first().copied().unwrap_or(1);
        let x = to_work(self)?;
        let flat = x.reshape((batch, ())).map_err(backend)?;
        let n = flat.dims()[1];
        if n == 0 {
            return Ok(());
        }
        let (sorted, _) = flat
            .abs()
            .map_err(backend)?
            .sort_last_dim(true)
            .map_err(backend)?;
        let (lo, hi, frac) = quantile_positions(n, ratio);
        let v_lo = sorted.narrow(1, lo, 1).map_err(backend)?;
        let v_hi = sorted.narrow(1, hi, 1).map_err(backend)?;
        let s = (&v_lo + ((&v_hi - &v_lo).map_err(backend)?.affine(frac, 0.0)).map_err(backend)?)
            .map_err(backend)?
            .clamp(floor, max)
            .map_err(backend)?;
        let out = flat
            .broadcast_minimum(&s)
            .and_then(|t| t.broadcast_maximum(&s.neg()?))
            .and_then(|t| t.broadcast_div(&s))
            .and_then(|t| t.reshape(dims.as_slice()))
            .and_then(|t| t.to_dtype(self.dtype()))
            .map_err(backend)?;
        *self = out;
        Ok(())
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        to_work(self)?
            .clamp(lo, hi)
            .and_then(|t| t.to_dtype(self.dtype()))
            .map_err(backend)
    }

    fn all_finite(&self, _: Parallelism) -> Result<bool> {
        // 0·x is 0 for finite values and NaN for NaN and ±∞; one sum reaches the host.
        let x = to_work(self)?;
        let probe = x
            .affine(0.0, 0.0)
            .and_then(|d| d.sum_all())
            .and_then(|s| s.to_dtype(DType::F64))
            .and_then(|s| s.to_scalar::<f64>())
            .map_err(backend)?;
        Ok(probe.is_finite())
    }

    fn to_host_f64(&self) -> Result<Vec<f64>> {
        self.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(backend)
    }

    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self> {
        Tensor::from_vec(data.to_vec(), shape, self.device())
            .and_then(|t| t.to_dtype(self.dtype()))
            .map_err(backend)
    }
}

/// Device-side Gaussian noise: candle's own generator (`Tensor::randn`) on the tensor's device,
/// seeded through `Device::set_seed`. Reproducible on one device; streams differ between
/// devices and are not per-sample. Use [`PhiloxNoise`] for noise identical on every backend.
#[derive(Debug)]
pub struct CandleNoise {
    _seeded: (),
}

impl CandleNoise {
    /// Seeds `device`'s generator and returns a source that draws from it.
    pub fn new(device: &Device, seed: u64) -> Result<Self> {
        device.set_seed(seed).map_err(backend)?;
        Ok(Self { _seeded: () })
    }
}

impl NoiseSource<Tensor> for CandleNoise {
    fn fill_standard_normal(&mut self, out: &mut Tensor, _: Parallelism) -> Result<()> {
        let z = Tensor::randn(0f32, 1f32, out.dims(), out.device())
            .and_then(|z| z.to_dtype(out.dtype()))
            .map_err(backend)?;
        *out = z;
        Ok(())
    }
}

/// The Philox streams of [`PhiloxNoise`], generated on the host and uploaded: the same numbers
/// as on the ndarray backend, so runs agree across backends.
impl NoiseSource<Tensor> for PhiloxNoise {
    fn fill_standard_normal(&mut self, out: &mut Tensor, par: Parallelism) -> Result<()> {
        let dims = out.dims().to_vec();
        let batch = dims.first().copied().unwrap_or(1);
        let mut host = vec![0f64; out.elem_count()];
        self.fill_slice(&mut host, batch, par)?;
        *out = out.new_from_host(&dims, &host)?;
        Ok(())
    }
}
