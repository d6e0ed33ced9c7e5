//! Exact output law of a sampler on Gaussian data, with no Monte Carlo.
//!
//! For Gaussian data the oracle's prediction is affine in the state, and every solver step is
//! a linear combination, so the sampler's output is an affine function of the independent
//! standard-normal draws it consumes (the prior draw and one per stochastic step). Running the
//! sampler on "affine forms" (per coordinate: a constant plus one coefficient per draw) gives
//! the exact mean and variance of its output.

use ndarray::{Array2, ArrayD, IxDyn};

use super::GaussianOracle;
use crate::error::{Error, ModelError, Result};
use crate::model::ScoreModel;
use crate::param::FitTarget;
use crate::sampler::Sampler;
use crate::tensor::{NoiseSource, Parallelism};

/// Mean and variance per coordinate of a sampler's output.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianLaw {
    /// Means.
    pub mean: Vec<f64>,
    /// Variances.
    pub var: Vec<f64>,
}

impl GaussianLaw {
    /// Exact 2-Wasserstein distance per coordinate to `N(mᵢ, cᵢ)`:
    /// `sqrt((meanᵢ − mᵢ)² + (sdᵢ − sqrt(cᵢ))²)`.
    pub fn w2_per_coordinate(&self, m: &[f64], c: &[f64]) -> Vec<f64> {
        self.mean
            .iter()
            .zip(&self.var)
            .zip(m.iter().zip(c))
            .map(|((mu, v), (mi, ci))| ((mu - mi).powi(2) + (v.sqrt() - ci.sqrt()).powi(2)).sqrt())
            .collect()
    }

    /// Exact 2-Wasserstein distance to the diagonal Gaussian `N(m, diag c)`:
    /// `sqrt(Σᵢ (meanᵢ − mᵢ)² + (sdᵢ − sqrt(cᵢ))²)`.
    pub fn w2_to(&self, m: &[f64], c: &[f64]) -> f64 {
        self.mean
            .iter()
            .zip(&self.var)
            .zip(m.iter().zip(c))
            .map(|((mu, v), (mi, ci))| (mu - mi).powi(2) + (v.sqrt() - ci.sqrt()).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// The oracle applied to affine forms: column 0 is the constant part, the others are
/// coefficients of independent standard normals.
struct AffineOracle<'a> {
    oracle: &'a GaussianOracle,
}

impl ScoreModel<ArrayD<f64>> for AffineOracle<'_> {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Data
    }
    fn predict(
        &mut self,
        x: &ArrayD<f64>,
        mu: &ArrayD<f64>,
        t: f64,
    ) -> Result<ArrayD<f64>, ModelError> {
        let sch = self.oracle.schedule();
        let (a, s) = (sch.alpha(t), sch.sigma(t));
        let (m, c) = (self.oracle.mean(), self.oracle.variance());
        let mut out = x.clone();
        let cols = x.shape()[1];
        for i in 0..x.shape()[0] {
            let g = a * c[i] / (a * a * c[i] + s * s);
            let mu_i = mu[[i, 0]];
            out[[i, 0]] = m[i] + g * ((x[[i, 0]] - mu_i) - a * (m[i] - mu_i));
            for j in 1..cols {
                out[[i, j]] = g * x[[i, j]];
            }
        }
        Ok(out)
    }
}

/// Each draw is a new basis direction.
struct AffineNoise {
    next: usize,
}

impl NoiseSource<ArrayD<f64>> for AffineNoise {
    fn fill_standard_normal(&mut self, out: &mut ArrayD<f64>, _: Parallelism) -> Result<()> {
        let cols = out.shape()[1];
        self.next += 1;
        if self.next >= cols {
            return Err(Error::NoiseExhausted {
                needed: self.next,
                available: cols - 1,
            });
        }
        out.fill(0.0);
        out.index_axis_mut(ndarray::Axis(1), self.next).fill(1.0);
        Ok(())
    }
}

/// Where [`gaussian_output_law_from`] starts the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The sampler's own prior `μ + σ_prior·z` (what a user gets).
    Prior,
    /// The exact marginal `p_{τ₀}(x | μ)` of the oracle at the grid's first time: the output
    /// law then converges to the data law itself as the step count grows.
    ExactMarginal,
}

/// The exact per-coordinate mean and variance of `sampler`'s unclamped output for the data law
/// of `oracle` and the mean `mu` (one value per coordinate), starting from the sampler's own
/// prior (see [`gaussian_output_law_from`] for the other start).
///
/// Valid for samplers that are affine in their inputs: dynamic thresholding must be off (the
/// output clamp is ignored; the unclamped output is used).
///
/// ```
/// use mrsampler::oracle::{gaussian_output_law, GaussianOracle};
/// use mrsampler::schedule::IrSdeSchedule;
/// use mrsampler::MrSampler;
/// # fn main() -> Result<(), mrsampler::Error> {
/// let s = MrSampler::new(IrSdeSchedule::da_clip(), 20)?;
/// let o = GaussianOracle::new(vec![0.7, 0.4], vec![0.01, 0.02], s.model_schedule()?)?;
/// let law = gaussian_output_law(&s, &o, &[0.3, 0.5])?;
/// assert!(law.w2_to(o.mean(), o.variance()) < 0.02);
/// # Ok(()) }
/// ```
pub fn gaussian_output_law<S: Sampler>(
    sampler: &S,
    oracle: &GaussianOracle,
    mu: &[f64],
) -> Result<GaussianLaw> {
    gaussian_output_law_from(sampler, oracle, mu, Start::Prior)
}

/// As [`gaussian_output_law`], with a choice of start law.
pub fn gaussian_output_law_from<S: Sampler>(
    sampler: &S,
    oracle: &GaussianOracle,
    mu: &[f64],
    start: Start,
) -> Result<GaussianLaw> {
    let d = oracle.event_size();
    if mu.len() != d {
        return Err(Error::ShapeMismatch {
            what: "mu (one value per oracle coordinate)",
            expected: vec![d],
            found: vec![mu.len()],
        });
    }
    // Learn the number of evaluations (each draws at most one noise) from a plain dry start.
    let probe = ArrayD::<f64>::zeros(IxDyn(&[1, 1]));
    let dry = sampler.start(
        FitTarget::Data,
        &probe,
        Some(probe.clone()),
        &mut AffineNoise { next: 0 },
    )?;
    let (n_eval, t0) = (dry.num_evaluations(), dry.current_time());
    let cols = n_eval + 2;
    let mut mu_t = Array2::<f64>::zeros((d, cols));
    for (i, m) in mu.iter().enumerate() {
        mu_t[[i, 0]] = *m;
    }
    let mu_t = mu_t.into_dyn();
    let mut model = AffineOracle { oracle };
    let mut noise = AffineNoise { next: 0 };
    let x_start = match start {
        Start::Prior => None,
        Start::ExactMarginal => {
            // ξ₀ is the first basis direction; later draws take the next ones.
            noise.next = 1;
            let mut x = Array2::<f64>::zeros((d, cols));
            for (i, m) in mu.iter().enumerate() {
                let (mean, var) = oracle.marginal(i, *m, t0);
                x[[i, 0]] = mean;
                x[[i, 1]] = var.sqrt();
            }
            Some(x.into_dyn())
        }
    };
    let out = sampler.sample(&mut model, &mu_t, x_start, &mut noise)?;
    let x = out.x_unclipped;
    let mean = (0..d).map(|i| x[[i, 0]]).collect();
    let var = (0..d)
        .map(|i| (1..cols).map(|j| x[[i, j]] * x[[i, j]]).sum())
        .collect();
    Ok(GaussianLaw { mean, var })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Solver;
    use crate::schedule::IrSdeSchedule;
    use crate::{MrSampler, SeededNoise};

    /// The propagated law agrees with Monte Carlo over many seeds.
    #[test]
    fn matches_monte_carlo() {
        let s = MrSampler::new(IrSdeSchedule::da_clip(), 8)
            .unwrap()
            .with_solver(Solver::sde(2))
            .unwrap()
            .with_data_range(None)
            .unwrap();
        let mut o = GaussianOracle::new(
            vec![0.7, 0.2],
            vec![0.01, 0.04],
            s.model_schedule().unwrap(),
        )
        .unwrap();
        let law = gaussian_output_law(&s, &o, &[0.3, 0.6]).unwrap();
        let n = 40_000;
        let mu = ArrayD::from_shape_fn(IxDyn(&[n, 2]), |i| if i[1] == 0 { 0.3 } else { 0.6 });
        let out = s
            .sample(&mut o, &mu, None, &mut SeededNoise::new(3))
            .unwrap()
            .x;
        for j in 0..2 {
            let col: Vec<f64> = (0..n).map(|i| out[[i, j]]).collect();
            let mean = col.iter().sum::<f64>() / n as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let se = (law.var[j] / n as f64).sqrt();
            assert!(
                (mean - law.mean[j]).abs() < 5.0 * se,
                "mean {j}: {mean} vs {}",
                law.mean[j]
            );
            assert!(
                (var / law.var[j] - 1.0).abs() < 0.04,
                "var {j}: {var} vs {}",
                law.var[j]
            );
        }
    }
}
