//! What the planners read: the samplers' settings, as plain values (the samplers hand a copy
//! to the planner, so this layer never sees the sampler types above it).

use std::sync::Arc;

use super::{Plan, PlannedStep};
use crate::config::{Baseline, Mode, Solver, Thresholding};
use crate::error::Result;
use crate::param::Parameterization;
use crate::schedule::{ReferenceInterp, Schedule, TimeGrid};
use crate::tensor::Parallelism;

/// The MR Sampler's settings (validated by [`MrSampler`](crate::MrSampler)).
#[derive(Debug, Clone)]
pub(crate) struct MrsSettings {
    pub schedule: Arc<dyn Schedule>,
    pub num_steps: usize,
    pub mode: Mode,
    pub solver: Solver,
    pub parameterization: Parameterization,
    pub grid: TimeGrid,
    pub lambda_min: Option<f64>,
    pub thresholding: Option<Thresholding>,
    pub denoise_last: bool,
    pub prior_correction: bool,
    pub data_range: Option<(f64, f64)>,
    pub parallelism: Parallelism,
}

impl MrsSettings {
    /// The schedule the model is evaluated on: the schedule itself in exact mode, its
    /// reference interpolation in reference mode.
    pub fn model_schedule(&self) -> Result<Arc<dyn Schedule>> {
        Ok(match self.mode {
            Mode::Exact => self.schedule.clone(),
            Mode::Reference => Arc::new(ReferenceInterp::new(self.schedule.clone())?),
        })
    }

    /// The plan's common fields.
    pub fn finish_plan(
        &self,
        timesteps: Vec<f64>,
        steps: Vec<PlannedStep>,
        prior_std: f64,
        history: usize,
    ) -> Plan {
        Plan {
            timesteps,
            steps,
            prior_std,
            data_range: self.data_range,
            thresholding: self.thresholding,
            history,
            parallelism: self.parallelism,
            controller: None,
        }
    }
}

/// A baseline's settings (validated by [`BaselineSampler`](crate::BaselineSampler)).
#[derive(Debug, Clone)]
pub(crate) struct BaselineSettings {
    pub schedule: Arc<dyn Schedule>,
    pub kind: Baseline,
    pub num_steps: usize,
    pub mode: Mode,
    pub data_range: Option<(f64, f64)>,
    pub parallelism: Parallelism,
}
