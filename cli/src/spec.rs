//! The tool's side of the library's [`SamplerSpec`] (`KIND[-ORDER][:PARAM][:GRID]`, one text
//! form for `restore`'s flags, `eval --samplers`, `calibrate --sampler` and grid files): grid
//! files as grids, and samplers built for images (output clamped to `[0, 1]`).

use std::path::Path;
use std::sync::Arc;

use mrsampler::schedule::{IrSdeSchedule, Schedule, TimeGrid};
use mrsampler::{BaselineSampler, Calibrator, GridSpec, MrSampler, Sampler, SamplerSpec};

use crate::error::Result;
use crate::grid_file::GridFile;

/// Parses a sampler argument: a [`SamplerSpec`], or a grid file alone (`….json`: the sampler
/// it was calibrated for, on its grid). A spec naming a grid file must name the file's own
/// sampler.
pub fn parse_spec(s: &str) -> std::result::Result<SamplerSpec, String> {
    if s.ends_with(".json") && !s.starts_with("mrs-") {
        let file = GridFile::load(Path::new(s)).map_err(|e| e.to_string())?;
        let own = file.spec().map_err(|e| format!("{s}: {e}"))?;
        return Ok(own.with_grid(GridSpec::File(s.into())));
    }
    let spec: SamplerSpec = s.parse().map_err(|e: mrsampler::Error| e.to_string())?;
    if let GridSpec::File(path) = &spec.grid {
        let file = GridFile::load(path).map_err(|e| e.to_string())?;
        let own = file
            .spec()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if own.solver_name() != spec.solver_name() {
            return Err(format!(
                "sampler `{s}`: the grid file was calibrated for {}, not {}; give the file alone \
                 to use its sampler",
                own.solver_name(),
                spec.solver_name()
            ));
        }
    }
    Ok(spec)
}

/// What the tool adds to a [`SamplerSpec`].
pub trait ToolSpec {
    /// The grid file, when the grid is one.
    fn grid_file(&self) -> Option<&Path>;

    /// The step count of a spec on a grid file, `None` for others.
    fn calibrated_steps(&self) -> Result<Option<usize>>;

    /// The sampler with `nfe` evaluations on `schedule`, its output clamped to `[0, 1]`, a grid
    /// file read (and checked against the schedule and `nfe`).
    fn for_images(&self, schedule: &IrSdeSchedule, nfe: usize) -> Result<Box<dyn Sampler>>;

    /// The MR Sampler the spec names (`None` for a baseline), as [`for_images`](Self::for_images).
    fn mrs_for_images(&self, schedule: &IrSdeSchedule, nfe: usize) -> Result<Option<MrSampler>>;

    /// The converged reference of the spec's rows at `nfe` (an MR Sampler; `None` for a
    /// baseline): the MR Sampler at `converged_nfe` on its grid, or with `teacher` on the
    /// calibration teacher grid at `nfe` (every named grid at `nfe` nests in it), or, for a
    /// calibrated grid, on the teacher's grid it was chosen from.
    fn reference(
        &self,
        schedule: &IrSdeSchedule,
        nfe: usize,
        converged_nfe: usize,
        teacher: bool,
    ) -> Result<Option<MrSampler>>;
}

impl ToolSpec for SamplerSpec {
    fn grid_file(&self) -> Option<&Path> {
        match &self.grid {
            GridSpec::File(path) => Some(path),
            _ => None,
        }
    }

    fn calibrated_steps(&self) -> Result<Option<usize>> {
        self.grid_file()
            .map(|p| GridFile::load(p).map(|f| f.steps))
            .transpose()
    }

    fn for_images(&self, schedule: &IrSdeSchedule, nfe: usize) -> Result<Box<dyn Sampler>> {
        if let Some(mrs) = self.mrs_for_images(schedule, nfe)? {
            return Ok(Box::new(mrs));
        }
        let kind = self
            .kind
            .baseline()
            .ok_or("an MR Sampler spec built no MR Sampler")?;
        Ok(Box::new(
            BaselineSampler::new(schedule.clone(), kind, nfe)?.with_data_range(Some((0.0, 1.0)))?,
        ))
    }

    fn mrs_for_images(&self, schedule: &IrSdeSchedule, nfe: usize) -> Result<Option<MrSampler>> {
        let resolved = match self.grid_file() {
            Some(path) => {
                let file = GridFile::load(path)?;
                file.check_schedule(schedule, path)?;
                if file.steps != nfe {
                    return Err(format!(
                        "{}: the grid has {} steps; {nfe} were asked for (a calibrated grid \
                         runs at the NFE it was calibrated for)",
                        path.display(),
                        file.steps
                    )
                    .into());
                }
                self.clone().with_grid(GridSpec::Times(file.times))
            }
            None => self.clone(),
        };
        let schedule: Arc<dyn Schedule> = Arc::new(schedule.clone());
        match resolved.build_mrs(schedule, nfe)? {
            Some(mrs) => Ok(Some(mrs.with_data_range(Some((0.0, 1.0)))?)),
            None => Ok(None),
        }
    }

    fn reference(
        &self,
        schedule: &IrSdeSchedule,
        nfe: usize,
        converged_nfe: usize,
        teacher: bool,
    ) -> Result<Option<MrSampler>> {
        let steps = self.calibrated_steps()?.unwrap_or(nfe);
        let Some(own) = self.mrs_for_images(schedule, steps)? else {
            return Ok(None);
        };
        let times = match self.grid_file() {
            Some(path) => Some(GridFile::load(path)?.teacher_grid),
            // Explicit times have no finer version of themselves: the teacher grid through them.
            None if teacher || matches!(self.grid, GridSpec::Times(_)) => {
                Some(Calibrator::new(steps)?.teacher_grid(&own)?)
            }
            None => None,
        };
        match times {
            Some(times) => Ok(Some(own.with_grid(TimeGrid::Custom(times))?)),
            None => self.mrs_for_images(schedule, converged_nfe),
        }
    }
}
