//! [`CoupledNoise`]: a noise source for a coarse stochastic pass, built from two plans (so it
//! lives above `plan` and `tensor`).

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::plan::coupling::coupling_weights;
use crate::tensor::{NoiseSource, Parallelism, SamplerTensor, lincomb};

/// Noise for a coarse stochastic pass on the Brownian path of a fine one (docs/math.md §8.3).
///
/// Built from the two passes' plans and the source the fine pass draws from (a fresh copy of
/// it, e.g. `PhiloxNoise::new(seed)` with the same seed): every coarse draw is the normalised
/// sum of the fine draws under its step, each carried through the fine steps after it. For the
/// MR Sampler's exponential integrators this is the exact stochastic integral each coarse step
/// needs, so the coarse result converges to the fine pass's result as the coarse grid is
/// refined: the way to measure an SDE sampler's distance to its own converged result, or its
/// strong order. The fine grid must contain the coarse grid's times (same grid family, a step
/// count that is a multiple). Give both passes the same start state
/// ([`Sampler::prior_state`](crate::Sampler::prior_state)): a prior drawn by the pass itself
/// would be a coarse request the coupling does not expect.
///
/// ```
/// use mrsampler::prelude::*;
/// use mrsampler::{CoupledNoise, PhiloxNoise};
/// use ndarray::{ArrayD, IxDyn};
///
/// let schedule = IrSdeSchedule::da_clip();
/// let coarse = MrSampler::new(schedule.clone(), 5)?.with_solver(Solver::sde(2))?;
/// let fine = MrSampler::new(schedule, 20)?.with_solver(Solver::sde(2))?;
/// let mu = ArrayD::<f64>::from_elem(IxDyn(&[1, 4]), 0.5);
/// let z = ArrayD::<f64>::from_elem(IxDyn(&[1, 4]), 0.3);
/// let start = coarse.prior_state(&mu, &z)?;
/// let mut model = FnModel::new(FitTarget::Noise, |x: &ArrayD<f64>, _: &ArrayD<f64>, _t: f64| {
///     Ok(x.mapv(|v| 0.1 * v))
/// });
/// let reference = fine.sample(&mut model, &mu, Some(start.clone()), &mut PhiloxNoise::new(7))?;
/// let mut noise = CoupledNoise::new(
///     &coarse.plan(FitTarget::Noise)?,
///     &fine.plan(FitTarget::Noise)?,
///     PhiloxNoise::new(7),
/// )?;
/// let x = coarse.sample(&mut model, &mu, Some(start), &mut noise)?;
/// assert_eq!(x.stats.nfe, 5);
/// # let _ = reference;
/// # Ok::<(), mrsampler::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CoupledNoise<N> {
    inner: N,
    weights: std::collections::VecDeque<Vec<f64>>,
    requested: usize,
}

impl<N> CoupledNoise<N> {
    /// The coupling of the pass planned as `coarse` to the pass planned as `fine`, which draws
    /// from (a copy of) `inner`.
    ///
    /// # Errors
    /// [`Error::InvalidGrid`] when a coarse stochastic step is not a union of fine stochastic
    /// steps, or a plan is adaptive or has two-stage stochastic steps (stochastic Heun).
    pub fn new(coarse: &Plan, fine: &Plan, inner: N) -> Result<Self> {
        Ok(Self {
            inner,
            weights: coupling_weights(coarse, fine)?.into(),
            requested: 0,
        })
    }
}

impl<T: SamplerTensor, N: NoiseSource<T>> NoiseSource<T> for CoupledNoise<N> {
    fn fill_standard_normal(&mut self, out: &mut T, par: Parallelism) -> Result<()> {
        self.requested += 1;
        let weights = self.weights.pop_front().ok_or(Error::NoiseExhausted {
            needed: self.requested,
            available: self.requested - 1,
        })?;
        let mut draws = Vec::with_capacity(weights.len());
        for _ in &weights {
            let mut z = out.clone();
            self.inner.fill_standard_normal(&mut z, par)?;
            draws.push(z);
        }
        let terms: Vec<(f64, &T)> = weights
            .iter()
            .zip(&draws)
            .filter(|(w, _)| **w != 0.0)
            .map(|(w, z)| (*w, z))
            .collect();
        *out = lincomb(&terms, par)?;
        Ok(())
    }
}
