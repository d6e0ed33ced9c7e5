//! [`SamplerTensor`] for `ndarray::Array<f32 | f64, D>` (host CPU).
//!
//! Contiguous (standard-layout) arrays go through the SIMD kernels of [`super::kernels`];
//! other layouts are first copied to standard layout (correct, slower).

use std::cell::RefCell;

use ndarray::{Array, Dimension, IxDyn};
use rayon::prelude::*;

use std::borrow::Cow;

use super::element::NdElement;
use super::{
    FusedStep, Layout, Parallelism, SamplerTensor, check_same_shape, convert_then_step, kernels,
    quantile_positions,
};
use crate::error::{Error, Result};

/// Makes `a` standard layout (a copy only when it is not already).
fn make_standard<E: NdElement, D: Dimension>(a: &mut Array<E, D>) {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
}

/// A contiguous row-major view, or a copy for other layouts.
fn slice_of<E: NdElement, D: Dimension>(a: &Array<E, D>) -> std::borrow::Cow<'_, [E]> {
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

/// Runs `f` with the terms as contiguous slices (no allocation when all are contiguous).
fn with_slices<E: NdElement, D: Dimension, R>(
    terms: &[(f64, &Array<E, D>)],
    f: impl FnOnce(&[(f64, &[E])]) -> R,
) -> R {
    if terms.len() <= kernels::MAX_TERMS && terms.iter().all(|(_, t)| t.as_slice().is_some()) {
        let mut buf: [(f64, &[E]); kernels::MAX_TERMS] = [(0.0, &[][..]); kernels::MAX_TERMS];
        for (k, (c, t)) in terms.iter().enumerate() {
            buf[k] = (*c, t.as_slice().expect("checked contiguous"));
        }
        f(&buf[..terms.len()])
    } else {
        let owned: Vec<(f64, std::borrow::Cow<'_, [E]>)> =
            terms.iter().map(|(c, t)| (*c, slice_of(t))).collect();
        let views: Vec<(f64, &[E])> = owned.iter().map(|(c, s)| (*c, &s[..])).collect();
        f(&views)
    }
}

thread_local! {
    /// Scratch for the per-sample quantile (reused: no allocation after the first call).
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// The ndarray backend for `f32` and `f64` elements (`NdElement` is sealed: it carries the
/// kernels' element-specific parts).
impl<E: NdElement, D: Dimension> SamplerTensor for Array<E, D> {
    fn layout(&self) -> Layout<'_> {
        Layout {
            shape: Cow::Borrowed(Array::shape(self)),
            dtype: E::NAME,
        }
    }

    fn linear_combination(
        &mut self,
        keep: Option<f64>,
        terms: &[(f64, &Self)],
        par: Parallelism,
    ) -> Result<()> {
        let shape = self.raw_dim();
        check_terms(shape.slice(), terms)?;
        make_standard(self);
        let out = self.as_slice_mut().expect("standard layout");
        with_slices(terms, |t| kernels::lincomb(out, keep, t, par));
        Ok(())
    }

    fn convert_and_step(
        &mut self,
        q: &mut Self,
        step: FusedStep<'_, Self>,
        par: Parallelism,
    ) -> Result<()> {
        let shape = self.raw_dim();
        check_terms(shape.slice(), step.terms)?;
        for t in [&*q, step.net, step.mu] {
            check_same_shape("linear-combination operand", shape.slice(), t)?;
        }
        make_standard(self);
        make_standard(q);
        let fused = match (step.net.as_slice(), step.mu.as_slice()) {
            (Some(net_s), Some(mu_s)) => with_slices(step.terms, |t| {
                kernels::convert_and_step(
                    self.as_slice_mut().expect("standard layout"),
                    q.as_slice_mut().expect("standard layout"),
                    net_s,
                    mu_s,
                    step.convert,
                    step.keep,
                    step.q_weight,
                    t,
                    step.noise.as_ref(),
                    par,
                )
            }),
            _ => false,
        };
        if !fused {
            // The draw as a tensor of this element type: the values a fill would have given.
            let z = match &step.noise {
                Some((_, draw)) => {
                    let mut z = Array::<E, D>::zeros(shape.clone());
                    draw.fill(z.as_slice_mut().expect("standard layout"), 0);
                    Some(z)
                }
                None => None,
            };
            let mut terms = step.terms.to_vec();
            if let (Some((w, _)), Some(z)) = (step.noise, &z) {
                terms.push((w, z));
            }
            let step = FusedStep {
                terms: &terms,
                noise: None,
                ..step
            };
            convert_then_step(self, q, step, par)?;
        }
        Ok(())
    }

    fn threshold_per_sample(
        &mut self,
        ratio: f64,
        floor: f64,
        max: f64,
        par: Parallelism,
    ) -> Result<()> {
        make_standard(self);
        let batch = Array::shape(self).first().copied().unwrap_or(1).max(1);
        let data = self.as_slice_mut().expect("standard layout");
        if data.is_empty() {
            return Ok(());
        }
        let per = data.len() / batch;
        let one = |chunk: &mut [E]| {
            SCRATCH.with(|cell| {
                let mut abs = cell.borrow_mut();
                abs.clear();
                abs.extend(chunk.iter().map(|v| v.widen().abs()));
                let s = quantile_select(&mut abs, ratio).clamp(floor, max);
                let (lo, hi) = (E::from_f64_lossy(-s), E::from_f64_lossy(s));
                for v in chunk.iter_mut() {
                    if !v.is_nan() {
                        *v = v.max(lo).min(hi) / hi;
                    }
                }
            })
        };
        if par.parts(data.len()) > 1 && batch > 1 {
            data.par_chunks_mut(per).for_each(one);
        } else {
            data.chunks_mut(per).for_each(one);
        }
        Ok(())
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        let (lo, hi) = (E::from_f64_lossy(lo), E::from_f64_lossy(hi));
        Ok(self.mapv(|v| if v.is_nan() { v } else { v.max(lo).min(hi) }))
    }

    fn all_finite(&self, par: Parallelism) -> Result<bool> {
        Ok(match self.as_slice() {
            Some(s) => kernels::all_finite(s, par),
            None => self.iter().all(|v| v.is_finite()),
        })
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
    let (lo, _, frac) = quantile_positions(v.len(), ratio);
    let (_, lo_val, upper) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_val = *lo_val;
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

    const SEQ: Parallelism = Parallelism::Sequential;

    #[test]
    fn lincomb_matches_elementwise_formula() {
        let a = array![[1.0f64, 2.0], [3.0, 4.0]].into_dyn();
        let b = array![[0.5f64, -1.0], [2.0, 0.0]].into_dyn();
        let c = crate::tensor::lincomb(&[(2.0, &a), (-3.0, &b)], SEQ).unwrap();
        assert_eq!(c, array![[0.5, 7.0], [0.0, 8.0]].into_dyn());
        let mut d = a.clone();
        d.linear_combination(Some(0.5), &[(1.0, &b)], SEQ).unwrap();
        assert_eq!(d, array![[1.0, 0.0], [3.5, 2.0]].into_dyn());
    }

    #[test]
    fn lincomb_rejects_shape_mismatch() {
        let a = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let b = ArrayD::<f64>::zeros(IxDyn(&[3, 2]));
        assert!(matches!(
            crate::tensor::lincomb(&[(1.0, &a), (1.0, &b)], SEQ),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn non_contiguous_arrays_are_handled() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]];
        let t = a.t().to_owned(); // standard layout copy
        let tv = a.clone().reversed_axes(); // Fortran layout, not standard
        let r1 = crate::tensor::lincomb(&[(1.0, &t), (1.0, &t)], SEQ).unwrap();
        let r2 = crate::tensor::lincomb(&[(1.0, &tv), (1.0, &tv)], SEQ).unwrap();
        assert_eq!(
            r1.iter().copied().collect::<Vec<_>>(),
            r2.iter().copied().collect::<Vec<_>>()
        );
        let mut x = tv.clone();
        let mut q = tv.clone();
        let step = FusedStep {
            net: &tv,
            mu: &t,
            convert: [1.0, 0.0, 0.0],
            keep: 1.0,
            q_weight: 1.0,
            terms: &[],
            noise: None,
        };
        x.convert_and_step(&mut q, step, SEQ).unwrap();
        assert_eq!(
            x.iter().copied().collect::<Vec<_>>(),
            r2.iter().copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn threshold_golden() {
        // One sample, |x| sorted: 0.5 1 2 4; quantile 0.5 → p = 1.5 → 1.5; s = clamp(1.5, 1, 3).
        let mut x = array![[4.0f64, -2.0, 0.5, 1.0]].into_dyn();
        x.threshold_per_sample(0.5, 1.0, 3.0, SEQ).unwrap();
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
            let r = crate::tensor::lincomb(&[(c1, &ta), (c2, &tb)], SEQ).unwrap();
            for i in 0..6 {
                let w = c1 * a[i] + c2 * b[i];
                prop_assert!((r.as_slice().unwrap()[i] - w).abs() <= 1e-14 * (1.0 + w.abs()));
            }
        }
    }
}
