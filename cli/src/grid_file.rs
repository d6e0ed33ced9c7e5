//! The grid file (`mrsampler-grid-v1`, JSON) that `calibrate` writes and `restore --grid` and
//! `eval --samplers` read: the sampler it was calibrated for, its times, the teacher's grid (the
//! converged reference `eval` compares it with), the schedule it belongs to, every candidate's
//! scores and how the calibration was made.

use std::path::Path;

use mrsampler::SamplerSpec;
use mrsampler::schedule::{IrSdeSchedule, Schedule};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The grid file's format name.
pub const FORMAT: &str = "mrsampler-grid-v1";

/// The schedule a grid belongs to: its times only mean something on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScheduleStamp {
    /// The end of the schedule (`T`).
    pub t_max: f64,
    /// The stationary std `σ∞`.
    pub sigma_inf: f64,
    /// `σ` at `T/2`, which tells the θ schedules apart.
    pub sigma_mid: f64,
}

impl ScheduleStamp {
    /// The stamp of `schedule`.
    pub fn of(schedule: &IrSdeSchedule) -> Self {
        let t = schedule.t_max();
        Self {
            t_max: t,
            sigma_inf: schedule.sigma_inf(),
            sigma_mid: schedule.sigma(t / 2.0),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs());
        close(self.t_max, other.t_max)
            && close(self.sigma_inf, other.sigma_inf)
            && close(self.sigma_mid, other.sigma_mid)
    }
}

/// One candidate grid's scores.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Candidate {
    /// `searched`, or the named grid.
    pub name: String,
    /// RMS distance of its result to the teacher's on the calibration images.
    pub distance: f64,
    /// Its times.
    pub times: Vec<f64>,
}

/// How the grid was made.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Provenance {
    /// The checkpoint (`shipped` for the shipped network).
    pub model: String,
    /// The calibration images' file names.
    pub images: Vec<String>,
    /// Start states per image, first seed.
    pub seeds: usize,
    /// First seed.
    pub seed: u64,
    /// The teacher's fine steps per family.
    pub fine_steps: usize,
    /// Coordinates the search scored.
    pub coordinates: usize,
    /// Network evaluations (each on the whole calibration batch).
    pub evaluations: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A calibrated grid file.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct GridFile {
    /// [`FORMAT`].
    pub format: String,
    /// The sampler, `KIND-ORDER:PARAM`.
    pub sampler: String,
    /// Steps (network evaluations).
    pub steps: usize,
    /// The grid `τ_0 > … > τ_K`.
    pub times: Vec<f64>,
    /// Which candidate was chosen.
    pub chosen: String,
    /// The search's own RMS distance of the searched grid's result to the teacher's (at the
    /// recorded coordinates, before the output clamp).
    pub search_distance: f64,
    /// The teacher's grid: the converged reference.
    pub teacher_grid: Vec<f64>,
    /// The schedule it belongs to.
    pub schedule: ScheduleStamp,
    /// Every candidate, the searched grid first.
    pub candidates: Vec<Candidate>,
    /// How it was made.
    pub provenance: Provenance,
}

impl GridFile {
    /// Reads and checks a grid file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: GridFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a grid file ({e})", path.display()))?;
        if file.format != FORMAT {
            return Err(format!(
                "{}: format `{}`, expected `{FORMAT}` (written by `mrsampler calibrate`)",
                path.display(),
                file.format
            )
            .into());
        }
        if file.times.len() != file.steps + 1 || file.teacher_grid.len() < 2 {
            return Err(format!(
                "{}: {} times for {} steps (a K-step grid has K + 1 times)",
                path.display(),
                file.times.len(),
                file.steps
            )
            .into());
        }
        Ok(file)
    }

    /// The sampler it was calibrated for (its grid field aside).
    pub fn spec(&self) -> Result<SamplerSpec> {
        Ok(self.sampler.parse()?)
    }

    /// An error unless the grid belongs to `schedule`.
    pub fn check_schedule(&self, schedule: &IrSdeSchedule, path: &Path) -> Result<()> {
        if self.schedule.matches(&ScheduleStamp::of(schedule)) {
            Ok(())
        } else {
            Err(format!(
                "{}: calibrated for another schedule ({:?}); this model's is {:?}: calibrate \
                 again for this model",
                path.display(),
                self.schedule,
                ScheduleStamp::of(schedule)
            )
            .into())
        }
    }
}
