//! The `φ`-functions of exponential integrators (`docs/math.md` §4.1), accurate for every
//! step length.
//!
//! `φ₀(z) = e^z` and `φ_k(z) = Σ_{n≥0} zⁿ/(n + k)!`, so that `φ_{k+1}(z) = (φ_k(z) − 1/k!)/z`.
//! The recurrence is what the closed forms `(e^z − 1)/z`, `(e^z − 1 − z)/z²`, … compute; for
//! small `|z|` it subtracts nearly equal numbers and loses about `−k·log₁₀|z|` digits
//! (`φ₃` at `z = 10⁻⁴` keeps four). Below `|z| = 1` the series is summed instead, which is
//! accurate to a few units in the last place.
//!
//! The solvers use the step-scaled forms `z·φ_k(z)` with `z = ±h` (`h` the λ-step), which stay
//! finite and well-conditioned as `h → 0`; [`scaled`] returns them.

/// Largest `|z|` summed as a series. Above it the recurrence loses at most about two digits
/// for `φ₄` (the highest the solvers use), below it the series converges to full precision in
/// [`TERMS`] terms.
const SERIES_BELOW: f64 = 1.0;

/// Terms of the series: `1/(TERMS + 4)! < 10⁻²⁵`, far below `f64` resolution for `|z| ≤ 1`.
const TERMS: usize = 22;

/// `φ_k(z)` for `k ≥ 1`.
pub(crate) fn phi(k: usize, z: f64) -> f64 {
    debug_assert!(k >= 1);
    if z.abs() < SERIES_BELOW {
        // Horner on Σ zⁿ·k!/(n + k)! = 1 + z/(k+1)·(1 + z/(k+2)·(1 + …)), times 1/k!.
        let mut sum = 1.0;
        for n in (1..=TERMS).rev() {
            sum = 1.0 + sum * z / (n + k) as f64;
        }
        sum / factorial(k)
    } else {
        let mut p = z.exp_m1() / z;
        for j in 1..k {
            p = (p - 1.0 / factorial(j)) / z;
        }
        p
    }
}

/// `[z·φ₁(z), z·φ₂(z), …, z·φ_K(z)]`: the weights of the exact integral of a polynomial
/// over a step of signed length `z`. `z·φ₁(z) = e^z − 1` is taken from `expm1` directly.
pub(crate) fn scaled<const K: usize>(z: f64) -> [f64; K] {
    let mut out = [0.0; K];
    for (k, o) in out.iter_mut().enumerate() {
        *o = if k == 0 {
            z.exp_m1()
        } else {
            z * phi(k + 1, z)
        };
    }
    out
}

fn factorial(k: usize) -> f64 {
    (1..=k).map(|j| j as f64).product()
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// Values of `φ₁ … φ₄` (both sides of the series/recurrence switch at `|z| = 1`) computed with 50-digit arithmetic (mpmath, from the definition
    /// `φ_k(z) = (e^z − Σ_{n<k} zⁿ/n!)/z^k`), independent of this file.
    const HIGH_PRECISION: &[(f64, [f64; 4])] = &[
        (
            -3.0,
            [
                0.3167376438773787,
                0.22775411870754045,
                0.09074862709748652,
                0.025306013189726716,
            ],
        ),
        (
            -1.0,
            [
                0.6321205588285577,
                0.36787944117144233,
                0.13212055882855767,
                0.03454610783810899,
            ],
        ),
        (
            -0.999,
            [
                0.6323848802666037,
                0.36798310283623253,
                0.13214904620997742,
                0.034552172629318555,
            ],
        ),
        (
            -0.5,
            [
                0.7869386805747332,
                0.4261226388505337,
                0.1477547222989326,
                0.03782388873546811,
            ],
        ),
        (
            -1e-4,
            [
                0.999950001666625,
                0.49998333374999165,
                0.16666250008333194,
                0.04166583334722202,
            ],
        ),
        (
            1e-8,
            [
                1.000000005,
                0.5000000016666667,
                0.16666666708333333,
                0.04166666675,
            ],
        ),
        (
            0.75,
            [
                1.4893333554835662,
                0.6524444739780882,
                0.20325929863745107,
                0.048790175961045866,
            ],
        ),
        (
            1.001,
            [
                1.7192821876938849,
                0.718563624069815,
                0.21834527879102403,
                0.05162698513921816,
            ],
        ),
        (
            2.0,
            [
                3.194528049465325,
                1.0972640247326626,
                0.2986320123663313,
                0.06598267284983231,
            ],
        ),
    ];

    #[test]
    fn matches_high_precision_values() {
        for &(z, want) in HIGH_PRECISION {
            for (k, w) in want.iter().enumerate() {
                assert_relative_eq!(phi(k + 1, z), *w, max_relative = 4e-16);
            }
        }
    }

    /// The closed forms lose digits as `z → 0`; the series does not.
    #[test]
    fn small_steps_keep_full_precision() {
        let z: f64 = -1e-6;
        let naive_phi3 = ((z.exp_m1() / z - 1.0) / z - 0.5) / z;
        let exact = 1.0 / 6.0 + z / 24.0 + z * z / 120.0;
        assert!((naive_phi3 - exact).abs() / exact > 1e-6, "{naive_phi3}");
        assert_relative_eq!(phi(3, z), exact, max_relative = 1e-15);
    }

    #[test]
    fn scaled_forms() {
        let z: f64 = -0.3;
        let [a, b, c] = scaled::<3>(z);
        assert_relative_eq!(a, z.exp_m1(), max_relative = 1e-16);
        assert_relative_eq!(b, z * phi(2, z), max_relative = 1e-16);
        assert_relative_eq!(c, z * phi(3, z), max_relative = 1e-16);
    }
}
