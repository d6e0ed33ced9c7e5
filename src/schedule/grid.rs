//! Sampling time grids (`docs/math.md` §3 and §3.3).

use std::str::FromStr;

use super::Schedule;
use crate::error::{Error, Result};
use crate::mode::Mode;

/// How the `M + 1` sampling times `τ_0 > … > τ_M` are placed (`docs/math.md` §3).
///
/// Times are in the schedule's own units; "index" below means those units for an IR-SDE
/// schedule. `t_max` is the schedule's end after `lambda_min` clipping.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeGrid {
    /// `linspace(0, t_max, M+1)` reversed.
    Linspace,
    /// `k·⌊t_max/(M+1)⌋ + offset` for `k = M..0`: starts below `t_max`.
    Leading {
        /// Added to every time (`timestep_offset`, default 0).
        offset: f64,
    },
    /// `t_max − kΔ`, `Δ = T/(M+1)`, while positive. Reference mode ends at `Δ` (and may give
    /// `M+1` steps); exact mode keeps the first `M` values and ends at `t_min`.
    Trailing,
    /// Karras et al. spacing of `κ = σ/α` with exponent `rho` (default 7), mapped back to time.
    KarrasN {
        /// The Karras exponent ρ.
        rho: f64,
    },
    /// Karras spacing applied directly to the time `t ∈ [1, T]`; exact mode ends at `t_min`.
    KarrasT {
        /// The Karras exponent ρ.
        rho: f64,
    },
    /// Uniform in `λ` between `max(λ(t_max), lambda_min)` and the largest finite `λ`
    /// (the reference's `linear-lambda`); the natural grid for exponential integrators.
    #[doc(alias = "linear-lambda")]
    UniformLambda,
    /// Explicit times, strictly decreasing (`M + 1` values for `M` steps), inside the
    /// schedule's `[t_min, t_max]`.
    Custom(Vec<f64>),
}

impl TimeGrid {
    /// Checks the grid's own parameters (`rho`, `offset`, the custom times).
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            TimeGrid::KarrasN { rho } | TimeGrid::KarrasT { rho }
                if !(*rho > 0.0 && rho.is_finite()) =>
            {
                Err(Error::setting(
                    "rho",
                    rho,
                    "must be finite and > 0 (typically 7)",
                ))
            }
            TimeGrid::Leading { offset } if !offset.is_finite() => {
                Err(Error::setting("timestep_offset", offset, "must be finite"))
            }
            TimeGrid::Custom(v) if v.len() < 2 => {
                Err(Error::grid("a custom grid needs at least two times"))
            }
            TimeGrid::Custom(v) => match v.iter().find(|t| !t.is_finite()) {
                Some(bad) => Err(Error::grid(format!(
                    "custom grid contains non-finite time {bad}"
                ))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The reference's name of this grid.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Linspace => "linspace",
            Self::Leading { .. } => "leading",
            Self::Trailing => "trailing",
            Self::KarrasN { .. } => "karras-n",
            Self::KarrasT { .. } => "karras-t",
            Self::UniformLambda => "linear-lambda",
            Self::Custom(_) => "custom",
        }
    }
}

/// Parses the reference's `time_schedule` names (`linspace`, `leading`, `trailing`, `karras-n`,
/// `karras-t`, `linear-lambda`, alias `uniform-lambda`) with the reference's defaults: `rho` 7,
/// `offset` 0 (set the fields afterwards for others). A custom grid has no name: build
/// [`TimeGrid::Custom`] from its times.
impl FromStr for TimeGrid {
    type Err = Error;
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "linspace" => Self::Linspace,
            "leading" => Self::Leading { offset: 0.0 },
            "trailing" => Self::Trailing,
            "karras-n" => Self::KarrasN { rho: 7.0 },
            "karras-t" => Self::KarrasT { rho: 7.0 },
            "linear-lambda" | "uniform-lambda" => Self::UniformLambda,
            "custom" => {
                return Err(Error::grid(
                    "a custom grid has no name: build TimeGrid::Custom(times) from its times",
                ));
            }
            other => {
                return Err(Error::setting(
                    "time_schedule",
                    other,
                    "use linspace, uniform-lambda (alias linear-lambda), karras-n, karras-t, \
                     trailing or leading",
                ));
            }
        })
    }
}

/// `numpy.linspace(a, b, n)`: `a + i·step`, last value exactly `b`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n)
        .map(|i| if i == n - 1 { b } else { a + i as f64 * step })
        .collect()
}

/// Builds the grid `τ_0 > … > τ_M` for `steps = M` (`docs/math.md` §3; exact-mode rules §3.3).
///
/// `schedule` is the view the sampler integrates with ([`ReferenceInterp`] in reference
/// mode). Grids must be strictly decreasing in both modes; exact-mode grids must also have
/// `M + 1` values inside `[t_min, t_max]`.
///
/// [`ReferenceInterp`]: super::ReferenceInterp
pub(crate) fn build_grid(
    grid: &TimeGrid,
    steps: usize,
    lambda_min: Option<f64>,
    mode: Mode,
    schedule: &dyn Schedule,
) -> Result<Vec<f64>> {
    if steps == 0 {
        return Err(Error::setting(
            "num_steps",
            0,
            "at least one step is needed",
        ));
    }
    let m = steps;
    let big_t = schedule.t_max();
    let t_lo = schedule.t_min();
    if steps > MAX_STEPS {
        return Err(Error::setting(
            "num_steps",
            steps,
            format!("at most {MAX_STEPS} steps are supported"),
        ));
    }
    let t_max = match lambda_min {
        Some(l) => schedule.t_max_for_lambda_min(l),
        None => big_t,
    };
    if lambda_min.is_some() && t_max <= t_lo {
        return Err(Error::setting(
            "lambda_min",
            lambda_min.unwrap_or_default(),
            format!(
                "every time of the schedule has λ below it (λ ranges over [{}, {}]), so no grid                  is left; lower lambda_min",
                schedule.lambda(big_t),
                schedule.lambda(schedule.t_lambda_finite())
            ),
        ));
    }
    let exact = mode == Mode::Exact;
    let clamp = |v: f64| v.clamp(t_lo, big_t);
    let tau: Vec<f64> = match grid {
        TimeGrid::Linspace => {
            let mut v = linspace(t_lo, t_max, m + 1);
            v.reverse();
            v
        }
        TimeGrid::Leading { offset } => {
            let stride = ((t_max - t_lo) / (m + 1) as f64).floor();
            (0..=m)
                .rev()
                .map(|k| t_lo + k as f64 * stride + offset)
                .collect()
        }
        TimeGrid::Trailing => {
            let delta = (big_t - t_lo) / (m + 1) as f64;
            if exact {
                // The reference's formula for τ_0..τ_{M−1}, then t_min; a value at or below
                // t_min (after lambda_min clipping) is a duplicate, which the check below refuses.
                let mut v: Vec<f64> = (0..m).map(|k| clamp(t_max - k as f64 * delta)).collect();
                v.push(t_lo);
                v
            } else {
                let count = ((t_max - t_lo) / delta).ceil().max(0.0) as usize;
                (0..count)
                    .map(|k| clamp(t_max - k as f64 * delta))
                    .collect()
            }
        }
        TimeGrid::KarrasN { rho } => {
            let k_min = schedule.sigma(t_lo) / schedule.alpha(t_lo);
            let k_max = schedule.sigma(big_t) / schedule.alpha(big_t);
            let (a, b) = (k_max.powf(1.0 / rho), k_min.powf(1.0 / rho));
            linspace(0.0, 1.0, m + 1)
                .into_iter()
                .map(|u| schedule.t_of_kappa((a + u * (b - a)).powf(*rho)))
                .map(|t| if exact { clamp(t) } else { t })
                .collect()
        }
        TimeGrid::KarrasT { rho } => {
            let a = (big_t).powf(1.0 / rho);
            let lo = t_lo + 1.0;
            let b = lo.powf(1.0 / rho);
            let mut v: Vec<f64> = linspace(0.0, 1.0, m + 1)
                .into_iter()
                .map(|u| clamp((a + u * (b - a)).powf(*rho)))
                .collect();
            if exact {
                v[m] = t_lo;
            }
            v
        }
        TimeGrid::UniformLambda => {
            let l_lo = match lambda_min {
                Some(l) => schedule.lambda(big_t).max(l),
                None => schedule.lambda(big_t),
            };
            let t_top = schedule.t_lambda_finite();
            let l_hi = schedule.lambda(t_top);
            if exact && t_top > t_lo {
                // λ(t_min) = +∞: uniform up to the largest finite λ, then the limit step.
                let mut v: Vec<f64> = linspace(l_lo, l_hi, m)
                    .into_iter()
                    .map(|l| schedule.t_of_lambda(l))
                    .collect();
                v.push(t_lo);
                v
            } else {
                linspace(l_lo, l_hi, m + 1)
                    .into_iter()
                    .map(|l| schedule.t_of_lambda(l))
                    .collect()
            }
        }
        TimeGrid::Custom(v) => {
            if v.len() != m + 1 {
                return Err(Error::grid(format!(
                    "a custom grid for {m} steps needs {} times, got {}",
                    m + 1,
                    v.len()
                )));
            }
            v.clone()
        }
    };
    if tau.len() < 2 {
        return Err(Error::grid(format!(
            "the {} grid with {m} steps has fewer than two times ({tau:?}); use more steps or a \
             lower lambda_min",
            grid.name()
        )));
    }
    if let Some(bad) = tau.iter().find(|v| !v.is_finite()) {
        return Err(Error::grid(format!(
            "grid contains a non-finite time {bad}"
        )));
    }
    validate_decreasing(&tau, grid, mode)?;
    if exact || matches!(grid, TimeGrid::Custom(_)) {
        validate_range(&tau, t_lo, big_t, grid)?;
    }
    Ok(tau)
}

/// Largest supported number of steps (a guard against accidental huge allocations).
pub const MAX_STEPS: usize = 1_000_000;

/// Exact mode: a grid must be strictly decreasing. Reference mode also runs repeated times
/// of its named grids (the `leading` grid with more steps than the schedule has indices): a
/// first-order step of zero length is the identity there, and the planner refuses higher
/// orders over it. A custom grid must be strictly decreasing in both modes (the reference has
/// no custom grids, so there is nothing to reproduce).
fn validate_decreasing(tau: &[f64], grid: &TimeGrid, mode: Mode) -> Result<()> {
    let strict = mode == Mode::Exact || matches!(grid, TimeGrid::Custom(_));
    for (k, w) in tau.windows(2).enumerate() {
        let bad = match strict {
            true => w[1] >= w[0],
            false => w[1] > w[0],
        };
        if bad {
            return Err(Error::grid(format!(
                "the {} grid is not strictly decreasing at positions {k}, {} ({} then {}); \
                 duplicates or increasing times are not allowed: use fewer steps or another grid",
                grid.name(),
                k + 1,
                w[0],
                w[1]
            )));
        }
    }
    Ok(())
}

/// Every time inside the schedule's range (exact mode; custom grids in both modes, where the
/// reference would extrapolate α and σ linearly into meaningless values).
fn validate_range(tau: &[f64], t_lo: f64, t_hi: f64, grid: &TimeGrid) -> Result<()> {
    for &t in tau {
        if t < t_lo || t > t_hi {
            return Err(Error::grid(format!(
                "time {t} of the {} grid lies outside the schedule's range [{t_lo}, {t_hi}]",
                grid.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values (integer times, α_T = eps) are the point here
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schedule::{IrSdeSchedule, ReferenceInterp};

    fn reference() -> ReferenceInterp {
        ReferenceInterp::new(Arc::new(IrSdeSchedule::da_clip())).unwrap()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// `docs/math.md` §9.2 golden grids.
    #[test]
    fn golden_grids_reference() {
        let s = reference();
        let lm = Some(-5.0);
        let g = |grid: TimeGrid, m| build_grid(&grid, m, lm, Mode::Reference, &s).unwrap();
        close(
            &g(TimeGrid::Linspace, 10),
            &(0..=10).rev().map(|k| k as f64 * 10.0).collect::<Vec<_>>(),
            1e-12,
        );
        close(
            &g(TimeGrid::Leading { offset: 0.0 }, 10),
            &(0..=10).rev().map(|k| k as f64 * 9.0).collect::<Vec<_>>(),
            0.0,
        );
        close(
            &g(TimeGrid::Leading { offset: 0.0 }, 20),
            &(0..=20).rev().map(|k| k as f64 * 4.0).collect::<Vec<_>>(),
            0.0,
        );
        let tr = g(TimeGrid::Trailing, 10);
        assert_eq!(tr.len(), 11);
        assert!((tr[1] - 90.90909).abs() < 1e-5 && (tr[10] - 9.09091).abs() < 1e-5);
        close(
            &g(TimeGrid::KarrasN { rho: 7.0 }, 10),
            &[
                100.0, 94.71218, 88.90436, 82.32188, 74.60933, 65.06999, 52.28016, 34.43594,
                15.83870, 4.66084, 0.0,
            ],
            1e-5,
        );
        close(
            &g(TimeGrid::KarrasT { rho: 7.0 }, 10),
            &[
                100.0, 70.76249, 49.18110, 33.50647, 22.32487, 14.50732, 9.16425, 5.60520, 3.30332,
                1.86438, 1.0,
            ],
            1e-5,
        );
        close(
            &g(TimeGrid::UniformLambda, 10),
            &[
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
            ],
            1e-9,
        );
        close(
            &g(TimeGrid::UniformLambda, 5),
            &[100.0, 80.61242, 56.74810, 23.76775, 5.12358, 0.0],
            1e-5,
        );
        // lambda_min = −3 clips to t_max = 93.
        let l3 = build_grid(&TimeGrid::Linspace, 10, Some(-3.0), Mode::Reference, &s).unwrap();
        assert_eq!(l3[0], 93.0);
        assert!((l3[1] - 83.7).abs() < 1e-12);
        let ll3 = build_grid(
            &TimeGrid::UniformLambda,
            10,
            Some(-3.0),
            Mode::Reference,
            &s,
        )
        .unwrap();
        assert!((ll3[0] - 93.54638).abs() < 1e-5);
    }

    #[test]
    fn reference_trailing_can_add_a_step() {
        let s = reference();
        let v = build_grid(&TimeGrid::Trailing, 28, None, Mode::Reference, &s).unwrap();
        assert_eq!(v.len(), 30);
        let e = build_grid(
            &TimeGrid::Trailing,
            28,
            None,
            Mode::Exact,
            &IrSdeSchedule::da_clip(),
        )
        .unwrap();
        assert_eq!(e.len(), 29);
        assert_eq!(*e.last().unwrap(), 0.0);
    }

    #[test]
    fn exact_grids_have_m_plus_one_decreasing_values_ending_at_zero() {
        let s = IrSdeSchedule::da_clip();
        for grid in [
            TimeGrid::Linspace,
            TimeGrid::Trailing,
            TimeGrid::KarrasN { rho: 7.0 },
            TimeGrid::KarrasT { rho: 7.0 },
            TimeGrid::UniformLambda,
        ] {
            for m in [1, 2, 3, 5, 10, 20, 50, 99] {
                let v = build_grid(&grid, m, None, Mode::Exact, &s).unwrap();
                assert_eq!(v.len(), m + 1, "{grid:?} {m}");
                assert!(v[m].abs() < 1e-12, "{grid:?} {m}: ends at {}", v[m]);
                assert!(v.windows(2).all(|w| w[1] < w[0]));
            }
        }
    }

    #[test]
    fn exact_mode_rejects_duplicate_times() {
        let s = IrSdeSchedule::da_clip();
        // ⌊100/201⌋ = 0: every leading time is 0.
        let e = build_grid(
            &TimeGrid::Leading { offset: 0.0 },
            200,
            None,
            Mode::Exact,
            &s,
        );
        assert!(matches!(e, Err(Error::InvalidGrid { .. })));
        let e = build_grid(
            &TimeGrid::Custom(vec![50.0, 50.0, 0.0]),
            2,
            None,
            Mode::Exact,
            &s,
        );
        assert!(matches!(e, Err(Error::InvalidGrid { .. })));
        // A repeated time in a custom grid: refused in reference mode too.
        let e = build_grid(
            &TimeGrid::Custom(vec![100.0, 50.0, 50.0, 0.0]),
            3,
            None,
            Mode::Reference,
            &s,
        );
        assert!(matches!(e, Err(Error::InvalidGrid { .. })), "{e:?}");
        let e = build_grid(
            &TimeGrid::Custom(vec![150.0, 50.0, 0.0]),
            2,
            None,
            Mode::Exact,
            &s,
        );
        assert!(matches!(e, Err(Error::InvalidGrid { .. })));
        let e = build_grid(&TimeGrid::Custom(vec![50.0, 0.0]), 2, None, Mode::Exact, &s);
        assert!(matches!(e, Err(Error::InvalidGrid { .. })));
        assert!(build_grid(&TimeGrid::Linspace, 0, None, Mode::Exact, &s).is_err());
    }
}
