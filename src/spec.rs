//! [`SamplerSpec`]: one textual name for a sampler configuration, `KIND[-ORDER][:PARAM][:GRID]`,
//! shared by every place that names a sampler in text (the tool's `restore` flags and
//! `eval --samplers`, calibrated grid files, the conformance format's `sampler` object).
//!
//! ```
//! use std::sync::Arc;
//! use mrsampler::{FitTarget, Sampler, SamplerSpec, schedule::IrSdeSchedule};
//! # fn main() -> Result<(), mrsampler::Error> {
//! let spec: SamplerSpec = "mrs-sde-2:noise:uniform-lambda".parse()?;
//! assert_eq!(spec.to_string(), "mrs-sde-2:noise:uniform-lambda");
//! let sampler = spec.build(Arc::new(IrSdeSchedule::da_clip()), 10)?; // a Box<dyn Sampler>
//! assert_eq!(sampler.plan(FitTarget::Noise)?.num_evaluations(), Some(10));
//! // Baselines have no order, parameterization or grid.
//! assert_eq!("posterior".parse::<SamplerSpec>()?.to_string(), "posterior");
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::config::{Baseline, Solver};
use crate::error::{Error, Result};
use crate::param::Parameterization;
use crate::sampler::{BaselineSampler, MrSampler, Sampler};
use crate::schedule::{Schedule, TimeGrid};

/// The sampler families a [`SamplerSpec`] names (text in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SamplerKind {
    /// The MR Sampler on the probability-flow ODE, multistep (`mrs-ode`, orders 1–3).
    MrsOde,
    /// The MR Sampler on the reverse SDE, multistep (`mrs-sde`, orders 1–2).
    MrsSde,
    /// Posterior sampling, IR-SDE's and DA-CLIP's sampler (`posterior`).
    Posterior,
    /// Euler–Maruyama on the reverse SDE (`euler`, alias `euler-maruyama`).
    EulerMaruyama,
    /// Euler on the probability-flow ODE (`euler-ode`).
    EulerOde,
    /// Heun on the probability-flow ODE (`heun-ode`).
    HeunOde,
    /// Stochastic Heun on the reverse SDE (`heun-sde`).
    HeunSde,
}

impl SamplerKind {
    /// Every kind, in the order of the documentation.
    pub const ALL: [SamplerKind; 7] = [
        SamplerKind::MrsOde,
        SamplerKind::MrsSde,
        SamplerKind::Posterior,
        SamplerKind::EulerMaruyama,
        SamplerKind::EulerOde,
        SamplerKind::HeunOde,
        SamplerKind::HeunSde,
    ];

    /// The kind's name in text.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::MrsOde => "mrs-ode",
            SamplerKind::MrsSde => "mrs-sde",
            SamplerKind::Posterior => "posterior",
            SamplerKind::EulerMaruyama => "euler",
            SamplerKind::EulerOde => "euler-ode",
            SamplerKind::HeunOde => "heun-ode",
            SamplerKind::HeunSde => "heun-sde",
        }
    }

    /// Whether it is the MR Sampler (which has an order, a parameterization and a grid).
    pub fn is_mrs(self) -> bool {
        matches!(self, SamplerKind::MrsOde | SamplerKind::MrsSde)
    }

    /// Whether it draws noise after its start state.
    pub fn is_stochastic(self) -> bool {
        !matches!(
            self,
            SamplerKind::MrsOde | SamplerKind::EulerOde | SamplerKind::HeunOde
        )
    }

    /// The orders it takes.
    pub fn orders(self) -> std::ops::RangeInclusive<usize> {
        match self {
            SamplerKind::MrsOde => 1..=3,
            SamplerKind::MrsSde => 1..=2,
            _ => 1..=1,
        }
    }

    /// The baseline it names (`None` for the MR Sampler).
    pub fn baseline(self) -> Option<Baseline> {
        match self {
            SamplerKind::MrsOde | SamplerKind::MrsSde => None,
            SamplerKind::Posterior => Some(Baseline::Posterior),
            SamplerKind::EulerMaruyama => Some(Baseline::EulerMaruyama),
            SamplerKind::EulerOde => Some(Baseline::EulerOde),
            SamplerKind::HeunOde => Some(Baseline::Heun { stochastic: false }),
            SamplerKind::HeunSde => Some(Baseline::Heun { stochastic: true }),
        }
    }
}

/// Where a [`SamplerSpec`]'s time grid comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GridSpec {
    /// A grid the sampler builds at any step count (not [`TimeGrid::Custom`]). Text: its name,
    /// with a non-default parameter in brackets: `karras-t(5)`, `leading(1)`.
    Named(TimeGrid),
    /// Explicit times `τ_0 > … > τ_M`. Text: `[100,52.5,0]` (Rust's shortest round-trip
    /// decimal form, so text and value convert both ways exactly).
    Times(Vec<f64>),
    /// A file of calibrated times (`….json`), which the program that runs the spec reads (the
    /// tool's grid files); resolve it to [`GridSpec::Times`] with
    /// [`SamplerSpec::with_grid`] before building.
    File(PathBuf),
}

impl fmt::Display for GridSpec {
    // The default parameters are written as their names alone, so a default is an exact value.
    #[allow(clippy::float_cmp)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GridSpec::Named(grid) => match grid {
                TimeGrid::UniformLambda => f.write_str("uniform-lambda"),
                TimeGrid::KarrasN { rho } | TimeGrid::KarrasT { rho } if *rho != 7.0 => {
                    write!(f, "{}({rho})", grid.name())
                }
                TimeGrid::Leading { offset } if *offset != 0.0 => write!(f, "leading({offset})"),
                other => f.write_str(other.name()),
            },
            GridSpec::Times(times) => {
                f.write_str("[")?;
                for (i, t) in times.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("]")
            }
            GridSpec::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for GridSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::setting("grid", s, reason);
        if let Some(list) = s.strip_prefix('[') {
            let list = list
                .strip_suffix(']')
                .ok_or_else(|| bad("a list of times is closed by `]`".into()))?;
            let times = list
                .split(',')
                .map(|t| t.trim().parse::<f64>())
                .collect::<std::result::Result<Vec<f64>, _>>()
                .map_err(|e| bad(format!("a list of times holds numbers: {e}")))?;
            return Ok(GridSpec::Times(times));
        }
        if s.ends_with(".json") {
            return Ok(GridSpec::File(PathBuf::from(s)));
        }
        let (name, parameter) = match s.split_once('(') {
            Some((name, rest)) => {
                let value = rest
                    .strip_suffix(')')
                    .ok_or_else(|| bad("a grid parameter is closed by `)`".into()))?;
                let value: f64 = value
                    .parse()
                    .map_err(|e| bad(format!("a grid parameter is a number: {e}")))?;
                (name, Some(value))
            }
            None => (s, None),
        };
        let grid = match (name.parse::<TimeGrid>()?, parameter) {
            (grid, None) => grid,
            (TimeGrid::KarrasN { .. }, Some(rho)) => TimeGrid::KarrasN { rho },
            (TimeGrid::KarrasT { .. }, Some(rho)) => TimeGrid::KarrasT { rho },
            (TimeGrid::Leading { .. }, Some(offset)) => TimeGrid::Leading { offset },
            (grid, Some(_)) => {
                return Err(bad(format!(
                    "the {} grid has no parameter (karras-n, karras-t and leading have one)",
                    grid.name()
                )));
            }
        };
        Ok(GridSpec::Named(grid))
    }
}

/// A sampler configuration without its step count, as text: `KIND[-ORDER][:PARAM][:GRID]`.
///
/// * `KIND`: [`SamplerKind`]'s names (`mrs-ode`, `mrs-sde`, `posterior`, `euler`, `euler-ode`,
///   `heun-ode`, `heun-sde`);
/// * `ORDER`: the MR Sampler's order (default 2);
/// * `PARAM`: `data` (default) or `noise`;
/// * `GRID`: a [`GridSpec`] (default `linspace`): a grid name, a list of times, or a grid
///   file (`….json`).
///
/// Baselines take none of the three. [`Display`](fmt::Display) writes the canonical form
/// (every field of an MR Sampler, e.g. `mrs-ode-2:data:linspace`), which parses back to the
/// same value. With the `serde` feature a spec (de)serializes as that text.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    /// The family.
    pub kind: SamplerKind,
    /// The MR Sampler's order (1 for a baseline).
    pub order: usize,
    /// The MR Sampler's parameterization.
    pub param: Parameterization,
    /// The MR Sampler's time grid.
    pub grid: GridSpec,
}

impl SamplerSpec {
    /// The MR Sampler of `kind` and `order`, data form, linspace grid.
    pub fn mrs(kind: SamplerKind, order: usize) -> Self {
        Self {
            kind,
            order,
            param: Parameterization::Data,
            grid: GridSpec::Named(TimeGrid::Linspace),
        }
    }

    /// A baseline sampler.
    pub fn baseline(kind: SamplerKind) -> Self {
        Self {
            order: 1,
            ..Self::mrs(kind, 1)
        }
    }

    /// The same spec on `grid`.
    pub fn with_grid(mut self, grid: GridSpec) -> Self {
        self.grid = grid;
        self
    }

    /// `KIND-ORDER:PARAM` for the MR Sampler, `KIND` for a baseline: the sampler without its
    /// grid (what a calibrated grid file records).
    pub fn solver_name(&self) -> String {
        if !self.kind.is_mrs() {
            return self.kind.name().to_owned();
        }
        let param = match self.param {
            Parameterization::Noise => "noise",
            _ => "data",
        };
        format!("{}-{}:{param}", self.kind.name(), self.order)
    }

    /// Checks the spec's fields against each other, in the spec's own terms.
    pub fn check(&self) -> Result<()> {
        let orders = self.kind.orders();
        if !orders.contains(&self.order) {
            return Err(Error::setting(
                "order",
                self.order,
                format!(
                    "{} takes orders {}–{}",
                    self.kind.name(),
                    orders.start(),
                    orders.end()
                ),
            ));
        }
        Ok(())
    }

    /// The MR Sampler `self` names with `steps` network evaluations on `schedule` (`None` for
    /// a baseline). A [`GridSpec::Times`] grid sets the step count itself; `steps` must match.
    pub fn build_mrs(
        &self,
        schedule: Arc<dyn Schedule>,
        steps: usize,
    ) -> Result<Option<MrSampler>> {
        self.check()?;
        let solver = match self.kind {
            SamplerKind::MrsOde => Solver::ode(self.order),
            SamplerKind::MrsSde => Solver::sde(self.order),
            _ => return Ok(None),
        };
        let grid = match &self.grid {
            GridSpec::Named(grid) => grid.clone(),
            GridSpec::Times(times) => {
                if times.len() != steps + 1 {
                    return Err(Error::setting(
                        "num_steps",
                        steps,
                        format!(
                            "the spec's grid has {} times, so {} steps",
                            times.len(),
                            times.len().saturating_sub(1)
                        ),
                    ));
                }
                TimeGrid::Custom(times.clone())
            }
            GridSpec::File(path) => {
                return Err(Error::setting(
                    "grid",
                    path.display(),
                    "a grid file is read by the program that runs the spec: replace it with its \
                     times (SamplerSpec::with_grid(GridSpec::Times(..)))",
                ));
            }
        };
        Ok(Some(
            MrSampler::from_arc(schedule, steps)?
                .with_solver(solver)?
                .with_parameterization(self.param)?
                .with_grid(grid)?,
        ))
    }

    /// The sampler `self` names with `steps` network evaluations on `schedule`, output not
    /// clamped (set a data range on the concrete sampler, or use
    /// [`build_mrs`](Self::build_mrs) / [`BaselineSampler`] to configure further).
    pub fn build(&self, schedule: Arc<dyn Schedule>, steps: usize) -> Result<Box<dyn Sampler>> {
        if let Some(mrs) = self.build_mrs(schedule.clone(), steps)? {
            return Ok(Box::new(mrs));
        }
        let baseline = self.kind.baseline().ok_or(Error::StepOrder {
            what: "an MR Sampler kind without an MR Sampler",
        })?;
        Ok(Box::new(BaselineSampler::from_arc(
            schedule, baseline, steps,
        )?))
    }
}

impl fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.solver_name())?;
        if self.kind.is_mrs() {
            write!(f, ":{}", self.grid)?;
        }
        Ok(())
    }
}

impl FromStr for SamplerSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let usage = || {
            Error::setting(
                "sampler",
                s,
                "expected KIND[-ORDER][:PARAM][:GRID]: KIND mrs-ode, mrs-sde, posterior, euler, \
                 euler-ode, heun-ode or heun-sde; PARAM data or noise; GRID a time grid \
                 (linspace, uniform-lambda, karras-t, ...), a list of times [100,50,0] or a grid \
                 file (….json); e.g. mrs-sde-2:data:linspace",
            )
        };
        let (head, rest) = match s.split_once(':') {
            Some((head, rest)) => (head, Some(rest)),
            None => (s, None),
        };
        if let Some(&kind) = SamplerKind::ALL
            .iter()
            .find(|k| !k.is_mrs() && (k.name() == head || (head == "euler-maruyama")))
        {
            let kind = if head == "euler-maruyama" {
                SamplerKind::EulerMaruyama
            } else {
                kind
            };
            if rest.is_some() {
                return Err(Error::setting(
                    "sampler",
                    s,
                    format!(
                        "{} has no order, parameterization or grid: write `{}` alone",
                        kind.name(),
                        kind.name()
                    ),
                ));
            }
            return Ok(Self::baseline(kind));
        }
        let (name, order) = match head.rsplit_once('-') {
            Some((name, o)) if !o.is_empty() && o.chars().all(|c| c.is_ascii_digit()) => {
                (name, o.parse().map_err(|_| usage())?)
            }
            _ => (head, 2),
        };
        let kind = match name {
            "mrs-ode" => SamplerKind::MrsOde,
            "mrs-sde" => SamplerKind::MrsSde,
            _ => return Err(usage()),
        };
        // The grid may itself hold colons (a path), so PARAM is the first field only.
        let (param, grid) = match rest {
            None => (Parameterization::Data, GridSpec::Named(TimeGrid::Linspace)),
            Some(rest) => {
                let (param, grid) = match rest.split_once(':') {
                    Some((p, g)) => (p, Some(g)),
                    None => (rest, None),
                };
                let param: Parameterization = param.parse()?;
                let grid = match grid {
                    None | Some("") => GridSpec::Named(TimeGrid::Linspace),
                    Some(g) => g.parse()?,
                };
                (param, grid)
            }
        };
        let spec = Self {
            kind,
            order,
            param,
            grid,
        };
        spec.check()?;
        Ok(spec)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for SamplerSpec {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SamplerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_in_canonical_form() {
        for (text, canonical) in [
            ("mrs-ode", "mrs-ode-2:data:linspace"),
            ("mrs-sde-1", "mrs-sde-1:data:linspace"),
            ("mrs-ode-3:noise", "mrs-ode-3:noise:linspace"),
            (
                "mrs-ode-2:data:linear-lambda",
                "mrs-ode-2:data:uniform-lambda",
            ),
            ("mrs-ode-2:data:karras-t", "mrs-ode-2:data:karras-t"),
            ("mrs-ode-2:data:karras-n(5)", "mrs-ode-2:data:karras-n(5)"),
            (
                "mrs-sde-2:noise:leading(1.5)",
                "mrs-sde-2:noise:leading(1.5)",
            ),
            (
                "mrs-ode-1:data:[100,52.25,0]",
                "mrs-ode-1:data:[100,52.25,0]",
            ),
            (
                "mrs-ode-2:data:runs/x:y.json",
                "mrs-ode-2:data:runs/x:y.json",
            ),
            ("posterior", "posterior"),
            ("euler-maruyama", "euler"),
            ("heun-sde", "heun-sde"),
        ] {
            let spec: SamplerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), canonical, "{text}");
            assert_eq!(
                canonical.parse::<SamplerSpec>().unwrap(),
                spec,
                "{canonical}"
            );
        }
        // Times survive the text form exactly.
        let times = vec![100.0, 1.0 / 3.0, 1e-7, 0.0];
        let spec = SamplerSpec::mrs(SamplerKind::MrsOde, 2).with_grid(GridSpec::Times(times));
        assert_eq!(spec.to_string().parse::<SamplerSpec>().unwrap(), spec);
    }

    #[cfg(feature = "conformance")] // which brings serde_json
    #[test]
    fn serde_uses_the_text_form() {
        let spec: SamplerSpec = "mrs-sde-1:noise:[100,0.5,0]".parse().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, "\"mrs-sde-1:noise:[100,0.5,0]\"");
        assert_eq!(serde_json::from_str::<SamplerSpec>(&json).unwrap(), spec);
        let err = serde_json::from_str::<SamplerSpec>("\"mrs-ode-9\"").unwrap_err();
        assert!(err.to_string().contains("orders 1–3"), "{err}");
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        for (text, needle) in [
            ("mrs-ode-4", "orders 1–3"),
            ("mrs-sde-3", "orders 1–2"),
            ("mrs-pde-2", "expected KIND"),
            ("mrs-ode-2:velocity", "data or noise"),
            ("mrs-ode-2:data:spiral", "linspace"),
            ("mrs-ode-2:data:linspace(3)", "no parameter"),
            ("mrs-ode-2:data:[100,x,0]", "numbers"),
            ("posterior:noise", "alone"),
        ] {
            let err = text.parse::<SamplerSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn specs_build_the_samplers_they_name() {
        use crate::param::FitTarget;
        use crate::schedule::IrSdeSchedule;
        let schedule: Arc<dyn Schedule> = Arc::new(IrSdeSchedule::da_clip());
        let mrs: SamplerSpec = "mrs-sde-1:noise:karras-t(5)".parse().unwrap();
        let built = mrs.build_mrs(schedule.clone(), 7).unwrap().unwrap();
        let expected = MrSampler::from_arc(schedule.clone(), 7)
            .unwrap()
            .with_solver(Solver::sde(1))
            .unwrap()
            .with_parameterization(Parameterization::Noise)
            .unwrap()
            .with_grid(TimeGrid::KarrasT { rho: 5.0 })
            .unwrap();
        let plan = |s: &dyn Sampler| s.plan(FitTarget::Noise).unwrap();
        assert_eq!(plan(&built), plan(&expected));
        let times: SamplerSpec = "mrs-ode-2:data:[100,40,0]".parse().unwrap();
        assert!(times.build(schedule.clone(), 2).is_ok());
        assert!(times.build(schedule.clone(), 3).is_err());
        let file: SamplerSpec = "mrs-ode-2:data:grid.json".parse().unwrap();
        assert!(file.build(schedule.clone(), 2).is_err());
        for kind in SamplerKind::ALL.into_iter().filter(|k| !k.is_mrs()) {
            let built = SamplerSpec::baseline(kind)
                .build(schedule.clone(), 5)
                .unwrap();
            let expected =
                BaselineSampler::from_arc(schedule.clone(), kind.baseline().unwrap(), 5).unwrap();
            assert_eq!(plan(&*built), plan(&expected), "{kind:?}");
        }
    }
}
