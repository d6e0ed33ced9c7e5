//! Parameterizations and their exact converters (`docs/math.md` §2).
//!
//! Every quantity below is consistent with `x = α x₀ + (1 − α) μ + σ ε`:
//! noise `ε`, data `x₀`, velocity `v = α σ∞ ε − (σ/σ∞)(x₀ − μ)` and score `s = −ε/σ`.
//! Each converter is affine in the network output, `x` and `μ`, so it is returned as the three
//! `f64` coefficients of one fused linear combination.

use std::str::FromStr;

use crate::error::{Error, Result};

/// What the user's network was trained to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FitTarget {
    /// The noise `ε` (IR-SDE / DA-CLIP networks; the reference alias `reverse_traj`).
    Noise,
    /// The clean data `x₀` (the reference alias `patch`).
    Data,
    /// The velocity `v = α σ∞ ε − (σ/σ∞)(x₀ − μ)`.
    Velocity,
    /// The score `∇ₓ log p_t(x) = −ε/σ`.
    Score,
}

impl FromStr for FitTarget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "noise" | "reverse_traj" => Ok(Self::Noise),
            "data" | "patch" => Ok(Self::Data),
            "velocity" => Ok(Self::Velocity),
            "score" => Ok(Self::Score),
            other => Err(Error::setting(
                "fit_target",
                other,
                "use noise, data, velocity or score",
            )),
        }
    }
}

/// The quantity the solver integrates (`docs/math.md` §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Parameterization {
    /// Data prediction `x̂₀` (DPM-Solver++ form): stable at few steps (default).
    #[default]
    Data,
    /// Noise prediction `ε̂` (DPM-Solver form).
    Noise,
}

impl FromStr for Parameterization {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "data" => Ok(Self::Data),
            "noise" => Ok(Self::Noise),
            other => Err(Error::setting(
                "parameterization",
                other,
                "use data or noise",
            )),
        }
    }
}

/// Coefficients of `out = net·n + x·x + mu·μ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Weight of the network output.
    pub net: f64,
    /// Weight of the current state `x_t`.
    pub x: f64,
    /// Weight of the mean `μ`.
    pub mu: f64,
}

impl Affine {
    /// `out = net`.
    pub const IDENTITY: Self = Self {
        net: 1.0,
        x: 0.0,
        mu: 0.0,
    };
}

impl FitTarget {
    /// The converter from this network's output to the solver quantity `to` at time `t` of
    /// `schedule` (table of `docs/math.md` §2): `q = c.net·output + c.x·x + c.mu·μ`.
    ///
    /// ```
    /// use mrsampler::param::{FitTarget, Parameterization};
    /// use mrsampler::schedule::{IrSdeSchedule, Schedule};
    /// let sch = IrSdeSchedule::da_clip();
    /// let (a, s) = (sch.alpha(40.0), sch.sigma(40.0));
    /// let c = FitTarget::Noise.converter(Parameterization::Data, &sch, 40.0);
    /// // x̂₀ = (x − (1 − α) μ − σ ε̂) / α
    /// assert!((c.net + s / a).abs() < 1e-15 && (c.x - 1.0 / a).abs() < 1e-15);
    /// ```
    pub fn converter(
        self,
        to: Parameterization,
        schedule: &dyn crate::schedule::Schedule,
        t: f64,
    ) -> Affine {
        convert_coefficients(
            self,
            to,
            schedule.alpha(t),
            schedule.sigma(t),
            schedule.sigma_inf(),
        )
    }
}

/// The converter from a network trained on `fit` to the solver quantity `to`, at a time with
/// mean weight `alpha`, std `sigma` and stationary std `sigma_inf` (table of `docs/math.md` §2).
pub(crate) fn convert_coefficients(
    fit: FitTarget,
    to: Parameterization,
    alpha: f64,
    sigma: f64,
    sigma_inf: f64,
) -> Affine {
    let (a, s, si) = (alpha, sigma, sigma_inf);
    match (fit, to) {
        (FitTarget::Data, Parameterization::Data) | (FitTarget::Noise, Parameterization::Noise) => {
            Affine::IDENTITY
        }
        // x̂₀ = (x − σ ε̂)/α − ((1 − α)/α) μ
        (FitTarget::Noise, Parameterization::Data) => Affine {
            net: -s / a,
            x: 1.0 / a,
            mu: -(1.0 - a) / a,
        },
        // x̂₀ = α x − (σ/σ∞) v̂ + (1 − α) μ
        (FitTarget::Velocity, Parameterization::Data) => Affine {
            net: -s / si,
            x: a,
            mu: 1.0 - a,
        },
        // ε = −σ s, then noise → data
        (FitTarget::Score, Parameterization::Data) => Affine {
            net: s * s / a,
            x: 1.0 / a,
            mu: -(1.0 - a) / a,
        },
        // ε̂ = (x − μ − α (x̂₀ − μ))/σ
        (FitTarget::Data, Parameterization::Noise) => Affine {
            net: -a / s,
            x: 1.0 / s,
            mu: (a - 1.0) / s,
        },
        // ε̂ = (α v̂ + (σ/σ∞)(x − μ))/σ∞
        (FitTarget::Velocity, Parameterization::Noise) => Affine {
            net: a / si,
            x: s / (si * si),
            mu: -s / (si * si),
        },
        (FitTarget::Score, Parameterization::Noise) => Affine {
            net: -s,
            x: 0.0,
            mu: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds (x, net output) for a known (x₀, ε) and checks each converter recovers the
    /// target quantity exactly (up to rounding).
    fn check(alpha: f64, sigma_inf: f64, x0: f64, eps: f64, mu: f64) {
        let sigma = sigma_inf * (1.0 - alpha * alpha).sqrt();
        let x = alpha * x0 + (1.0 - alpha) * mu + sigma * eps;
        let v = alpha * sigma_inf * eps - (sigma / sigma_inf) * (x0 - mu);
        let score = -eps / sigma;
        let outputs = [
            (FitTarget::Noise, eps),
            (FitTarget::Data, x0),
            (FitTarget::Velocity, v),
            (FitTarget::Score, score),
        ];
        for (fit, net) in outputs {
            for (to, want) in [(Parameterization::Data, x0), (Parameterization::Noise, eps)] {
                let c = convert_coefficients(fit, to, alpha, sigma, sigma_inf);
                let got = c.net * net + c.x * x + c.mu * mu;
                let scale =
                    1.0 + x.abs() / alpha.min(sigma) + net.abs() + mu.abs() / alpha.min(sigma);
                assert!(
                    (got - want).abs() <= 1e-13 * scale,
                    "{fit:?}->{to:?}: {got} vs {want}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(7), failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn converters_are_exact(
            alpha in 0.01f64..0.99,
            sigma_inf in 0.05f64..1.0,
            x0 in -1.0f64..2.0,
            eps in -3.0f64..3.0,
            mu in -1.0f64..2.0,
        ) {
            check(alpha, sigma_inf, x0, eps, mu);
        }
    }

    #[test]
    fn data_noise_round_trip() {
        let (a, s, si) = (0.3, 0.18, 0.19);
        let to_noise = convert_coefficients(FitTarget::Data, Parameterization::Noise, a, s, si);
        let to_data = convert_coefficients(FitTarget::Noise, Parameterization::Data, a, s, si);
        let (x, mu, x0) = (0.42, 0.3, 0.77);
        let e = to_noise.net * x0 + to_noise.x * x + to_noise.mu * mu;
        let back = to_data.net * e + to_data.x * x + to_data.mu * mu;
        assert!((back - x0).abs() < 1e-14);
    }

    #[test]
    fn aliases_parse() {
        assert_eq!(
            "reverse_traj".parse::<FitTarget>().unwrap(),
            FitTarget::Noise
        );
        assert_eq!("patch".parse::<FitTarget>().unwrap(), FitTarget::Data);
        assert!("x0".parse::<FitTarget>().is_err());
    }
}
