//! Shared helpers for the integration tests.
#![allow(dead_code)]

use mrsampler::schedule::Schedule;
use proptest::test_runner::{Config, RngSeed};

/// A smooth continuous MR schedule written through the public trait: `λ(t) = 5 − t` on
/// `t ∈ [0, 8]` (λ from 5 down to −3), `σ∞ = 0.2`, `α = 1/sqrt(1 + e^{−2λ}/σ∞²)`
/// (`docs/math.md` §9.9).
#[derive(Debug)]
pub struct LinearLambda;

pub const SI: f64 = 0.2;

impl Schedule for LinearLambda {
    fn sigma_inf(&self) -> f64 {
        SI
    }
    fn t_max(&self) -> f64 {
        8.0
    }
    fn alpha(&self, t: f64) -> f64 {
        let l = 5.0 - t;
        1.0 / (1.0 + (-2.0 * l).exp() / (SI * SI)).sqrt()
    }
    fn sigma(&self, t: f64) -> f64 {
        self.alpha(t) * (t - 5.0).exp()
    }
    fn lambda(&self, t: f64) -> f64 {
        5.0 - t
    }
    fn theta(&self, t: f64) -> f64 {
        1.0 - self.alpha(t).powi(2)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (5.0 - lambda).clamp(0.0, 8.0)
    }
}

/// A deterministic proptest configuration (fixed seed, no persistence files).
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6d72_7361),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Least-squares slope of −ln(err) against ln(m).
pub fn slope(ms: &[usize], errs: &[f64]) -> f64 {
    let xs: Vec<f64> = ms.iter().map(|&m| (m as f64).ln()).collect();
    let ys: Vec<f64> = errs.iter().map(|e| -e.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    num / den
}
