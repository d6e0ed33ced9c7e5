//! [`SamplerTensor`] for `ndarray::Array<f32 | f64, D>` (host CPU).
//!
//! Arithmetic is done in `f64` per element and rounded once to the element type, so f32
//! tensors lose no accuracy to the coefficient algebra.

use ndarray::{Array, Dimension, IxDyn};
use num_traits::{Float, FromPrimitive, ToPrimitive};

use super::{SamplerTensor, check_same_shape};
use crate::error::{Error, Result};

/// Element types of the ndarray backend (`f32`, `f64`).
pub trait NdElement:
    Float + FromPrimitive + ToPrimitive + Send + Sync + std::fmt::Debug + 'static
{
    /// Rounds an `f64` to this type.
    fn from_f64_lossy(v: f64) -> Self;
    /// Widens to `f64`.
    fn widen(self) -> f64;
}

impl NdElement for f32 {
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn widen(self) -> f64 {
        self as f64
    }
}

impl NdElement for f64 {
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v
    }
    #[inline]
    fn widen(self) -> f64 {
        self
    }
}

/// A contiguous row-major copy (or view) of the data.
fn standard<E: NdElement, D: Dimension>(a: &Array<E, D>) -> std::borrow::Cow<'_, [E]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

fn check_terms<E: NdElement, D: Dimension>(
    shape: &[usize],
    terms: &[(f64, &Array<E, D>)],
) -> Result<()> {
    for (_, t) in terms {
        check_same_shape("linear-combination operand", shape, *t)?;
    }
    Ok(())
}

impl<E: NdElement, D: Dimension> SamplerTensor for Array<E, D> {
    fn shape(&self) -> Vec<usize> {
        Array::shape(self).to_vec()
    }

    fn lincomb(terms: &[(f64, &Self)]) -> Result<Self> {
        let (_, first) = terms.first().ok_or(Error::StepOrder {
            what: "lincomb called with no terms",
        })?;
        let shape = SamplerTensor::shape(*first);
        check_terms(&shape, terms)?;
        let slices: Vec<(f64, std::borrow::Cow<'_, [E]>)> =
            terms.iter().map(|(c, t)| (*c, standard(t))).collect();
        let n = first.len();
        let data: Vec<E> = (0..n)
            .map(|i| {
                let mut acc = 0.0;
                for (c, s) in &slices {
                    acc += c * s[i].widen();
                }
                E::from_f64_lossy(acc)
            })
            .collect();
        let dim = first.raw_dim();
        Array::from_shape_vec(dim, data).map_err(|e| Error::Backend {
            source: Box::new(e),
        })
    }

    fn lincomb_assign(&mut self, a: f64, terms: &[(f64, &Self)]) -> Result<()> {
        let shape = SamplerTensor::shape(self);
        check_terms(&shape, terms)?;
        let slices: Vec<(f64, std::borrow::Cow<'_, [E]>)> =
            terms.iter().map(|(c, t)| (*c, standard(t))).collect();
        if !self.is_standard_layout() {
            *self = self.as_standard_layout().into_owned();
        }
        let out = self.as_slice_mut().expect("standard layout");
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = a * o.widen();
            for (c, s) in &slices {
                acc += c * s[i].widen();
            }
            *o = E::from_f64_lossy(acc);
        }
        Ok(())
    }

    fn threshold_per_sample(&mut self, ratio: f64, floor: f64, max: f64) -> Result<()> {
        if !self.is_standard_layout() {
            *self = self.as_standard_layout().into_owned();
        }
        let batch = SamplerTensor::batch_size(self).max(1);
        let data = self.as_slice_mut().expect("standard layout");
        if data.is_empty() {
            return Ok(());
        }
        let per = data.len() / batch;
        let mut abs = Vec::with_capacity(per);
        for chunk in data.chunks_mut(per) {
            abs.clear();
            abs.extend(chunk.iter().map(|v| v.widen().abs()));
            let s = quantile_select(&mut abs, ratio).clamp(floor, max);
            for v in chunk.iter_mut() {
                *v = E::from_f64_lossy(v.widen().clamp(-s, s) / s);
            }
        }
        Ok(())
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        Ok(self.mapv(|v| E::from_f64_lossy(v.widen().clamp(lo, hi))))
    }

    fn all_finite(&self) -> Result<bool> {
        Ok(self.iter().all(|v| v.is_finite()))
    }

    fn to_host_f64(&self) -> Result<Vec<f64>> {
        Ok(self.iter().map(|v| v.widen()).collect())
    }

    fn new_from_host(&self, shape: &[usize], data: &[f64]) -> Result<Self> {
        let dyn_arr = Array::from_shape_vec(
            IxDyn(shape),
            data.iter().map(|&v| E::from_f64_lossy(v)).collect(),
        )
        .map_err(|e| Error::Backend {
            source: Box::new(e),
        })?;
        dyn_arr
            .into_dimensionality::<D>()
            .map_err(|e| Error::Backend {
                source: Box::new(e),
            })
    }
}

/// Linear-interpolation quantile by selection (O(n)); reorders `v`.
fn quantile_select(v: &mut [f64], ratio: f64) -> f64 {
    let n = v.len();
    if n == 1 {
        return v[0];
    }
    let p = ratio * (n - 1) as f64;
    let lo = (p.floor() as usize).min(n - 1);
    let (_, lo_val, upper) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_val = *lo_val;
    let frac = p - lo as f64;
    if frac == 0.0 || upper.is_empty() {
        return lo_val;
    }
    let hi_val = upper.iter().copied().fold(f64::INFINITY, f64::min);
    lo_val + frac * (hi_val - lo_val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::quantile_sorted;
    use ndarray::{ArrayD, array};
    use proptest::prelude::*;

    #[test]
    fn lincomb_matches_elementwise_formula() {
        let a = array![[1.0f64, 2.0], [3.0, 4.0]].into_dyn();
        let b = array![[0.5f64, -1.0], [2.0, 0.0]].into_dyn();
        let c = ArrayD::lincomb(&[(2.0, &a), (-3.0, &b)]).unwrap();
        assert_eq!(c, array![[0.5, 7.0], [0.0, 8.0]].into_dyn());
        let mut d = a.clone();
        d.lincomb_assign(0.5, &[(1.0, &b)]).unwrap();
        assert_eq!(d, array![[1.0, 0.0], [3.5, 2.0]].into_dyn());
    }

    #[test]
    fn lincomb_rejects_shape_mismatch() {
        let a = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let b = ArrayD::<f64>::zeros(IxDyn(&[3, 2]));
        assert!(matches!(
            ArrayD::lincomb(&[(1.0, &a), (1.0, &b)]),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn non_contiguous_views_are_handled() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]];
        let t = a.t().to_owned(); // standard layout copy
        let tv = a.clone().reversed_axes(); // Fortran layout, not standard
        let r1 = Array::lincomb(&[(1.0, &t), (1.0, &t)]).unwrap();
        let r2 = Array::lincomb(&[(1.0, &tv), (1.0, &tv)]).unwrap();
        assert_eq!(
            r1.iter().copied().collect::<Vec<_>>(),
            r2.iter().copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn threshold_golden() {
        // One sample, |x| sorted: 0.5 1 2 4; quantile 0.5 → p = 1.5 → 1.5; s = clamp(1.5, 1, 3).
        let mut x = array![[4.0f64, -2.0, 0.5, 1.0]].into_dyn();
        x.threshold_per_sample(0.5, 1.0, 3.0).unwrap();
        let want = [1.0, -1.0, 0.5 / 1.5, 1.0 / 1.5];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-15);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(7), failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn selection_quantile_equals_sorted_quantile(
            v in proptest::collection::vec(0.0f64..10.0, 1..50),
            ratio in 0.0f64..1.0,
        ) {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            let want = quantile_sorted(&s, ratio);
            let mut w = v.clone();
            let got = quantile_select(&mut w, ratio);
            prop_assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()));
        }

        #[test]
        fn lincomb_is_linear(
            a in proptest::collection::vec(-5.0f64..5.0, 6),
            b in proptest::collection::vec(-5.0f64..5.0, 6),
            c1 in -3.0f64..3.0, c2 in -3.0f64..3.0,
        ) {
            let ta = ArrayD::from_shape_vec(IxDyn(&[2, 3]), a.clone()).unwrap();
            let tb = ArrayD::from_shape_vec(IxDyn(&[2, 3]), b.clone()).unwrap();
            let r = ArrayD::lincomb(&[(c1, &ta), (c2, &tb)]).unwrap();
            for i in 0..6 {
                let w = c1 * a[i] + c2 * b[i];
                prop_assert!((r.as_slice().unwrap()[i] - w).abs() <= 1e-14 * (1.0 + w.abs()));
            }
        }
    }
}
