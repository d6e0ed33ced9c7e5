//! The reference implementation's view of a discrete schedule (`docs/math.md` §1.4, §7.1).

use std::sync::Arc;

use super::{Knots, Schedule};
use crate::error::{Error, Result};

/// Piecewise-linear interpolation through the knots `(xp, yp)` (`xp` increasing), extended
/// linearly beyond both ends with the first or last segment.
///
/// At a knot `x = xp[i]` (`i ≥ 1`) the segment to its left is used, and the arithmetic is
/// `y0 + (x − x0)(y1 − y0)/(x1 − x0)`, as in the reference's `interpolate_fn`.
pub(crate) fn interpolate(x: f64, xp: &[f64], yp: &[f64]) -> f64 {
    let k = xp.len();
    debug_assert!(k >= 2 && yp.len() == k);
    // Number of knots strictly below x.
    let below = xp.partition_point(|&v| v < x);
    let i = if below == 0 {
        0
    } else {
        (below - 1).min(k - 2)
    };
    let (x0, x1, y0, y1) = (xp[i], xp[i + 1], yp[i], yp[i + 1]);
    y0 + (x - x0) * (y1 - y0) / (x1 - x0)
}

/// A discrete schedule seen the way the reference implementation sees it: `α̃(t)`, `σ̃(t)` and
/// `λ̃(t)` are each interpolated piecewise-linearly between integer indices, independently.
///
/// At non-integer `t` this makes `λ̃ ≠ ln(α̃/σ̃)`, which is the parity quirk that reference
/// mode reproduces (`docs/math.md` §1.4). Models evaluated "at the sampler's own α, σ" in
/// reference mode (the [`oracle`](crate::oracle) models) should use this view.
#[derive(Debug, Clone)]
pub struct ReferenceInterp {
    inner: Arc<dyn Schedule>,
    lambda_rev: Vec<f64>,
    t_rev: Vec<f64>,
}

impl ReferenceInterp {
    /// Wraps a discrete schedule; errors if it has no integer-index [`Knots`].
    pub fn new(inner: Arc<dyn Schedule>) -> Result<Self> {
        let knots = inner.knots().ok_or(Error::ScheduleMismatch {
            needs: "integer-index knots (reference mode interpolates between them)",
            fix: "use a discrete schedule such as IrSdeSchedule, or exact mode",
        })?;
        let lambda_rev = knots.lambda.iter().rev().copied().collect();
        let t_rev = knots.t.iter().rev().copied().collect();
        Ok(Self {
            inner,
            lambda_rev,
            t_rev,
        })
    }

    fn k(&self) -> &Knots {
        self.inner.knots().expect("checked in new")
    }
}

impl Schedule for ReferenceInterp {
    fn sigma_inf(&self) -> f64 {
        self.inner.sigma_inf()
    }
    fn t_min(&self) -> f64 {
        self.inner.t_min()
    }
    fn t_max(&self) -> f64 {
        self.inner.t_max()
    }
    fn alpha(&self, t: f64) -> f64 {
        interpolate(t, &self.k().t, &self.k().alpha)
    }
    fn sigma(&self, t: f64) -> f64 {
        interpolate(t, &self.k().t, &self.k().sigma)
    }
    fn lambda(&self, t: f64) -> f64 {
        interpolate(t, &self.k().t, &self.k().lambda)
    }
    fn theta(&self, t: f64) -> f64 {
        self.inner.theta(t)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        interpolate(lambda, &self.lambda_rev, &self.t_rev)
    }
    fn t_of_kappa(&self, kappa: f64) -> f64 {
        let k = self.k();
        let kappa_i: Vec<f64> = k.sigma.iter().zip(&k.alpha).map(|(s, a)| s / a).collect();
        interpolate(kappa, &kappa_i, &k.t)
    }
    fn t_max_for_lambda_min(&self, lambda_min: f64) -> f64 {
        self.inner.t_max_for_lambda_min(lambda_min)
    }
    fn t_lambda_finite(&self) -> f64 {
        self.inner.t_lambda_finite()
    }
    fn knots(&self) -> Option<&Knots> {
        self.inner.knots()
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values (integer times, α_T = eps) are the point here
mod tests {
    use super::*;
    use crate::schedule::IrSdeSchedule;

    #[test]
    fn interpolation_is_linear_and_extrapolates() {
        let xp = [0.0, 1.0, 3.0];
        let yp = [1.0, 3.0, 7.0];
        assert_eq!(interpolate(0.5, &xp, &yp), 2.0);
        assert_eq!(interpolate(2.0, &xp, &yp), 5.0);
        assert_eq!(interpolate(-1.0, &xp, &yp), -1.0);
        assert_eq!(interpolate(4.0, &xp, &yp), 9.0);
        assert_eq!(interpolate(3.0, &xp, &yp), 7.0);
    }

    /// `docs/math.md` §9.2: α̃ and σ̃ on the linear-lambda M = 10 grid.
    #[test]
    fn golden_interpolated_coefficients() {
        let s = ReferenceInterp::new(Arc::new(IrSdeSchedule::da_clip())).unwrap();
        let ts = [
            100.0,
            90.5275715018,
            80.6124220622,
            69.6729594312,
            56.7480982176,
            40.7150843075,
            23.7677477474,
            11.7629631733,
            5.1235823022,
            1.7202489382,
            0.0,
        ];
        let alpha = [
            0.005,
            0.0133124785,
            0.0353745903,
            0.0936852036,
            0.2426607422,
            0.5537142431,
            0.8703460654,
            0.9780408908,
            0.996788381,
            0.9995168735,
            0.9999360643,
        ];
        let sigma = [
            0.1960759804,
            0.1960610109,
            0.1959554437,
            0.195214712,
            0.1902128831,
            0.1632597073,
            0.096529891,
            0.0408240582,
            0.0156642595,
            0.0060011061,
            0.0022172245,
        ];
        for i in 0..ts.len() {
            assert!((s.alpha(ts[i]) - alpha[i]).abs() < 2e-10, "alpha {i}");
            assert!((s.sigma(ts[i]) - sigma[i]).abs() < 2e-10, "sigma {i}");
            let lam = -3.6690643267 + i as f64 * 0.9780499497;
            assert!((s.lambda(ts[i]) - lam).abs() < 1e-8, "lambda {i}");
        }
    }
}
