//! [`BaselineSampler`]: the samplers the MR Sampler is compared with (`docs/math.md` §6):
//! Euler–Maruyama, posterior sampling, Euler on the probability-flow ODE and Heun.

use std::sync::Arc;

use super::Sampler;
use crate::config::{Mode, check_data_range};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::schedule::Schedule;
use crate::tensor::Parallelism;

pub use crate::config::Baseline;

/// A baseline sampler with `K` network evaluations.
///
/// In [`Mode::Exact`] (default) the samplers stride over `linspace(T, 0, K+1)` and are valid
/// at any `K`. [`Mode::Reference`] reproduces the original code: the Euler and posterior
/// samplers visit the integer indices `int(linspace(1, T, K))` from the top and advance
/// **one index per call**, so with `K < T` they never integrate the whole horizon and return
/// a sample close to the prior; that quirk must be asked for with
/// [`with_reference_unit_steps`](Self::with_reference_unit_steps).
///
/// Baselines convert the network output to a noise prediction.
#[derive(Debug, Clone)]
pub struct BaselineSampler {
    pub(crate) schedule: Arc<dyn Schedule>,
    pub(crate) kind: Baseline,
    pub(crate) num_steps: usize,
    pub(crate) mode: Mode,
    pub(crate) data_range: Option<(f64, f64)>,
    pub(crate) parallelism: Parallelism,
    pub(crate) reference_unit_steps: bool,
}

impl BaselineSampler {
    /// A baseline over `schedule` with `num_steps` network evaluations (≥ 1), exact mode, no
    /// data range.
    pub fn new(
        schedule: impl Schedule + 'static,
        kind: Baseline,
        num_steps: usize,
    ) -> Result<Self> {
        Self::from_arc(Arc::new(schedule), kind, num_steps)
    }

    /// As [`new`](Self::new), for a shared schedule.
    pub fn from_arc(schedule: Arc<dyn Schedule>, kind: Baseline, num_steps: usize) -> Result<Self> {
        crate::schedule::validate(&*schedule)?;
        Self {
            schedule,
            kind,
            num_steps,
            mode: Mode::Exact,
            data_range: None,
            parallelism: Parallelism::default(),
            reference_unit_steps: false,
        }
        .validate()
    }

    /// Fidelity mode (default [`Mode::Exact`]).
    pub fn with_mode(self, mode: Mode) -> Result<Self> {
        Self { mode, ..self }.validate()
    }

    /// `true`: switches to [`Mode::Reference`] and accepts its unit steps at strided indices
    /// for Euler–Maruyama and posterior sampling with `K` below the schedule's `T` (without
    /// this opt-in such a configuration is an error). Only for reproducing the reference's
    /// numbers. `false` withdraws the opt-in and leaves the mode as it is.
    pub fn with_reference_unit_steps(self, on: bool) -> Result<Self> {
        let mode = if on { Mode::Reference } else { self.mode };
        Self {
            reference_unit_steps: on,
            mode,
            ..self
        }
        .validate()
    }

    /// The range `(lo, hi)` of the data the network was trained on: the returned sample is
    /// clamped to it (default `None`: no clamp). IR-SDE images live in `(0, 1)`.
    pub fn with_data_range(self, range: Option<(f64, f64)>) -> Result<Self> {
        let data_range = check_data_range(range)?;
        Self { data_range, ..self }.validate()
    }

    /// How the tensor kernels may split work across threads (default `Rayon(0)`).
    pub fn with_parallelism(self, parallelism: Parallelism) -> Result<Self> {
        Self {
            parallelism,
            ..self
        }
        .validate()
    }

    /// Which baseline this is.
    pub fn kind(&self) -> Baseline {
        self.kind
    }

    /// The configured number of evaluations.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// The fidelity mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The checks of each setting on its own (a setter's); the combination is checked by
    /// [`check`](Self::check) or when planning, so setter order never matters.
    fn validate(self) -> Result<Self> {
        super::check_steps(self.num_steps)?;
        Ok(self)
    }

    /// Checks the settings together, as [`plan`](Sampler::plan) does.
    ///
    /// # Errors
    /// [`Error::Conflict`] or [`Error::ScheduleMismatch`] naming the settings that do not go
    /// together.
    pub fn check(self) -> Result<Self> {
        self.check_combination()?;
        Ok(self)
    }

    /// See [`check`](Self::check).
    fn check_combination(&self) -> Result<()> {
        let unit_steps_apply = self.mode == Mode::Reference
            && matches!(self.kind, Baseline::EulerMaruyama | Baseline::Posterior);
        if self.reference_unit_steps && !unit_steps_apply {
            return Err(Error::conflict(
                "reference_unit_steps",
                format!("mode = {:?}, baseline = {:?}", self.mode, self.kind),
                "the opt-in applies to reference-mode Euler–Maruyama and posterior sampling \
                 only; turn it off",
            ));
        }
        if self.mode == Mode::Reference {
            let knots = self.schedule.knots().ok_or(Error::ScheduleMismatch {
                needs: "integer-index knots (reference-mode baselines visit them)",
                fix: "use an IrSdeSchedule, or exact mode",
            })?;
            let n = knots.t.len() - 1;
            let k = self.num_steps;
            match self.kind {
                Baseline::Heun { .. } => {
                    return Err(Error::conflict(
                        "baseline = Heun",
                        "mode = Reference",
                        "the Heun baseline exists in exact mode only (the reference's version \
                         uses the wrong score and step length)",
                    ));
                }
                Baseline::EulerOde if k != n => {
                    return Err(Error::conflict(
                        format!("num_steps = {k}"),
                        "mode = Reference, baseline = EulerOde",
                        format!(
                            "reference-mode Euler-ODE is defined only for K = T = {n} steps; use \
                             exact mode for other step counts"
                        ),
                    ));
                }
                Baseline::EulerMaruyama | Baseline::Posterior
                    if k < n && !self.reference_unit_steps =>
                {
                    return Err(Error::conflict(
                        format!("num_steps = {k}"),
                        format!("mode = Reference, baseline = {:?}", self.kind),
                        format!(
                            "the reference takes unit-length steps at {k} strided indices of \
                             T = {n}, so it never integrates the whole horizon and returns a \
                             sample near the prior; use exact mode (strided steps), K = {n}, or \
                             .with_reference_unit_steps(true) to reproduce the reference anyway"
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl BaselineSampler {
    /// The settings the planner reads (a copy: the planner sits below the samplers).
    pub(crate) fn settings(&self) -> crate::plan::settings::BaselineSettings {
        crate::plan::settings::BaselineSettings {
            schedule: self.schedule.clone(),
            kind: self.kind,
            num_steps: self.num_steps,
            mode: self.mode,
            data_range: self.data_range,
            parallelism: self.parallelism,
        }
    }
}

impl Sampler for BaselineSampler {
    fn plan(&self, fit: crate::FitTarget) -> Result<Plan> {
        self.check_combination()?;
        crate::plan::check_fit(fit, &*self.schedule)?;
        crate::plan::baseline::plan(&self.settings(), fit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FitTarget;
    use crate::schedule::IrSdeSchedule;

    #[test]
    fn reference_heun_and_unit_steps() {
        // The conflicts themselves are tested together in tests/it/conflicts.rs.
        let s = IrSdeSchedule::da_clip();
        let h = BaselineSampler::new(s.clone(), Baseline::Heun { stochastic: false }, 10).unwrap();
        assert_eq!(h.plan(FitTarget::Noise).unwrap().steps.len(), 10);
        let p = BaselineSampler::new(s, Baseline::Posterior, 10).unwrap();
        let e = p
            .clone()
            .with_mode(Mode::Reference)
            .and_then(BaselineSampler::check);
        assert!(e.unwrap_err().to_string().contains("exact mode"));
        let opted = p.with_reference_unit_steps(true).unwrap();
        assert_eq!(opted.mode(), Mode::Reference);
    }
}
