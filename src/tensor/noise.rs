//! Sources of standard-normal draws for the stochastic steps.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::SamplerTensor;
use crate::error::{Error, Result};

/// Supplies one tensor of i.i.d. `N(0, 1)` draws per request, shaped like `like`.
///
/// Samplers never create randomness themselves: the caller threads a source through every
/// call, so runs are reproducible and backends can bring device generators.
pub trait NoiseSource<T: SamplerTensor> {
    /// A fresh standard-normal tensor with the shape, element type and device of `like`.
    fn standard_normal(&mut self, like: &T) -> Result<T>;
}

/// Seeded host generator: `rand`'s `StdRng` with `StandardNormal`, drawn in row-major order.
///
/// Reproducible for a given seed and `rand` version; the stream is not promised stable across
/// `rand` major versions.
#[derive(Debug)]
pub struct SeededNoise {
    rng: StdRng,
}

impl SeededNoise {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl<T: SamplerTensor> NoiseSource<T> for SeededNoise {
    fn standard_normal(&mut self, like: &T) -> Result<T> {
        let shape = like.shape();
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        like.new_from_host(&shape, &data)
    }
}

/// Replays given draws in order (conformance cases, porting checks).
///
/// Errors with [`Error::NoiseExhausted`] when more draws are requested than supplied, and with
/// [`Error::ShapeMismatch`] when a draw has the wrong number of elements.
#[derive(Debug, Clone)]
pub struct ReplayNoise {
    draws: Vec<Vec<f64>>,
    next: usize,
}

impl ReplayNoise {
    /// A source that returns `draws[0]`, `draws[1]`, … (each flattened row-major).
    pub fn new(draws: Vec<Vec<f64>>) -> Self {
        Self { draws, next: 0 }
    }

    /// How many draws have been used.
    pub fn used(&self) -> usize {
        self.next
    }
}

impl<T: SamplerTensor> NoiseSource<T> for ReplayNoise {
    fn standard_normal(&mut self, like: &T) -> Result<T> {
        let draw = self.draws.get(self.next).ok_or(Error::NoiseExhausted {
            needed: self.next + 1,
            available: self.draws.len(),
        })?;
        let shape = like.shape();
        let n: usize = shape.iter().product();
        if draw.len() != n {
            return Err(Error::ShapeMismatch {
                what: "replayed noise draw (element count)",
                expected: vec![n],
                found: vec![draw.len()],
            });
        }
        self.next += 1;
        like.new_from_host(&shape, draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let like = ArrayD::<f64>::zeros(IxDyn(&[4, 1000]));
        let a: ArrayD<f64> = SeededNoise::new(7).standard_normal(&like).unwrap();
        let b: ArrayD<f64> = SeededNoise::new(7).standard_normal(&like).unwrap();
        assert_eq!(a, b);
        let n = a.len() as f64;
        let mean = a.sum() / n;
        let var = a.mapv(|v| (v - mean).powi(2)).sum() / n;
        // 4000 draws: the mean's std is 0.016, the variance's about 0.022.
        assert!(mean.abs() < 0.08, "{mean}");
        assert!((var - 1.0).abs() < 0.11, "{var}");
    }

    #[test]
    fn replay_errors_when_exhausted_or_misshaped() {
        let like = ArrayD::<f64>::zeros(IxDyn(&[2]));
        let mut r = ReplayNoise::new(vec![vec![1.0, 2.0], vec![1.0]]);
        let a: ArrayD<f64> = r.standard_normal(&like).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.0, 2.0]);
        assert!(matches!(
            NoiseSource::<ArrayD<f64>>::standard_normal(&mut r, &like),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut r = ReplayNoise::new(vec![]);
        assert!(matches!(
            NoiseSource::<ArrayD<f64>>::standard_normal(&mut r, &like),
            Err(Error::NoiseExhausted {
                needed: 1,
                available: 0
            })
        ));
    }
}
