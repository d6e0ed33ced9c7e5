//! The crate's single error type.
//!
//! Every fallible function returns [`Result<T>`]. Each variant carries the values that
//! were wrong and its message says how to fix them.

use std::fmt;

/// A boxed error of any type (a network's or a tensor backend's own), as stored in
/// [`Error::Model`] and [`Error::Backend`].
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error a user network (a [`ScoreModel`](crate::ScoreModel)) returns: any error type
/// converts into it with `?`, a message with [`ModelError::msg`], and it converts with `?` into
/// the boxed errors applications return (`Box<dyn Error>`, `Box<dyn Error + Send + Sync>`).
///
/// ```
/// use mrsampler::ModelError;
///
/// fn network(ok: bool) -> Result<f64, ModelError> {
///     let v: f64 = "0.5".parse()?; // any std::error::Error converts
///     if !ok {
///         return Err(ModelError::msg("the device ran out of memory"));
///     }
///     Ok(v)
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     assert_eq!(network(true)?, 0.5);
///     assert!(network(false).is_err());
///     Ok(())
/// }
/// ```
///
/// (It does not implement `std::error::Error` itself, as `anyhow::Error` does not: that is what
/// lets every error type convert into it.)
pub struct ModelError(BoxedError);

impl ModelError {
    /// An error that is just a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self(message.to_string().into())
    }

    /// An already boxed error.
    pub fn from_boxed(error: BoxedError) -> Self {
        Self(error)
    }

    /// The boxed error inside.
    pub fn into_inner(self) -> BoxedError {
        self.0
    }

    /// The error inside, to inspect or downcast (`downcast_ref::<E>()`).
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ModelError {
    fn from(error: E) -> Self {
        Self(Box::new(error))
    }
}

impl From<ModelError> for BoxedError {
    fn from(error: ModelError) -> Self {
        error.0
    }
}

impl From<ModelError> for Box<dyn std::error::Error + 'static> {
    fn from(error: ModelError) -> Self {
        error.0
    }
}

impl fmt::Debug for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Shorthand for `std::result::Result<T, mrsampler::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or running a sampler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schedule parameter is out of its valid range.
    #[error("invalid schedule parameter `{param}` = {value}: {reason}")]
    InvalidSchedule {
        /// The parameter's name (`T`, `eps`, `max_sigma`, ...).
        param: &'static str,
        /// The rejected value, as given.
        value: String,
        /// What the valid range is.
        reason: &'static str,
    },

    /// A sampler setting is out of its valid range.
    #[error("invalid setting `{setting}` = {value}: {reason}")]
    InvalidSetting {
        /// The setting's name (`order`, `num_steps`, `threshold_ratio`, ...).
        setting: &'static str,
        /// The rejected value, as given.
        value: String,
        /// What the valid range is, or what to change.
        reason: String,
    },

    /// A time grid is unusable: not strictly decreasing, outside the schedule, too short.
    #[error("invalid time grid: {reason}")]
    InvalidGrid {
        /// What is wrong with the grid and how to fix it.
        reason: String,
    },

    /// Reference mode reproduces a sampler that cannot run fewer steps than its order.
    #[error(
        "reference mode needs at least `order` steps: M = {steps} < order = {order}; \
         use more steps, a lower order, or exact mode"
    )]
    TooFewSteps {
        /// Number of grid intervals.
        steps: usize,
        /// Configured solver order.
        order: usize,
    },

    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Which tensor had the wrong shape (`model output`, `noise`, `start state`, ...).
        what: &'static str,
        /// The shape it must have (that of μ).
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },

    /// μ's rank is not the one the network takes.
    #[error(
        "the network takes rank-{expected} tensors (batch axis first) but μ has shape {found:?}; \
         add the missing batch axis (e.g. reshape (C, H, W) to (1, C, H, W))"
    )]
    RankMismatch {
        /// The rank the network takes ([`ScoreModel::input_rank`](crate::ScoreModel::input_rank)).
        expected: usize,
        /// μ's shape.
        found: Vec<usize>,
    },

    /// A tensor's element type differs from μ's.
    #[error(
        "element type mismatch for {what}: μ is {expected}, found {found}; convert it to μ's \
         type before sampling"
    )]
    DTypeMismatch {
        /// Which tensor (`start state`, `noise`).
        what: &'static str,
        /// μ's element type.
        expected: &'static str,
        /// The tensor's element type.
        found: &'static str,
    },

    /// A tensor holds NaN or ±∞.
    #[error(
        "non-finite value (NaN or ±inf) in {what} at step {step} (t = {time}); \
         check the network output and the schedule near this time"
    )]
    NonFinite {
        /// Which tensor (`mu`, `start state`, `model output`, `state`).
        what: &'static str,
        /// 1-based step index (0 before the first step).
        step: usize,
        /// The time of that step, in schedule units.
        time: f64,
    },

    /// The user's network returned an error.
    #[error("the model failed at step {step} (t = {time}): {source}")]
    Model {
        /// 1-based step index.
        step: usize,
        /// The time the model was evaluated at.
        time: f64,
        /// The model's own error.
        #[source]
        source: BoxedError,
    },

    /// A replaying noise source ran out of draws.
    #[error(
        "noise source exhausted: draw {needed} was requested but only {available} were supplied; \
         supply one draw per stochastic step"
    )]
    NoiseExhausted {
        /// 1-based index of the draw that was requested.
        needed: usize,
        /// How many draws the source holds.
        available: usize,
    },

    /// An adaptive solver needed more network evaluations than its budget.
    #[error(
        "the adaptive solver reached its limit of {max_nfe} network evaluations at t = {time}; \
         loosen rtol/atol or raise max_nfe"
    )]
    BudgetExceeded {
        /// The configured limit.
        max_nfe: usize,
        /// The time of the evaluation that was refused.
        time: f64,
    },

    /// An adaptive solver's step shrank to nothing: its error estimate stays above the
    /// tolerance however small the step (a tolerance below the tensors' rounding error).
    #[error(
        "the adaptive solver's step shrank to nothing at t = {time}: its error estimate stays \
         above the tolerance however small the step (the tolerance is tighter than the \
         arithmetic can reach; f32 resolves about 1e-7 relative); loosen rtol/atol"
    )]
    StepSizeUnderflow {
        /// The time the solver could not advance from.
        time: f64,
    },

    /// Two settings that cannot be combined (or an option set where it does not apply).
    #[error("`{setting}` cannot be combined with `{other}`: {reason}")]
    Conflict {
        /// The setting (and value) that does not fit.
        setting: String,
        /// The setting (and value) it conflicts with.
        other: String,
        /// Why, and what to change.
        reason: String,
    },

    /// The configuration needs something the schedule does not provide.
    #[error("the schedule does not provide {needs}; {fix}")]
    ScheduleMismatch {
        /// What the configuration needs from the schedule.
        needs: &'static str,
        /// What to use instead.
        fix: &'static str,
    },

    /// The step-level API was driven out of order.
    #[error("step API misuse: {what}")]
    StepOrder {
        /// What was called at the wrong time.
        what: &'static str,
    },

    /// A tensor backend operation failed (device errors, dtype conversions).
    #[error("tensor backend error: {source}")]
    Backend {
        /// The backend's own error.
        #[source]
        source: BoxedError,
    },
}

impl Error {
    /// Builds [`Error::InvalidSetting`].
    pub(crate) fn setting(
        setting: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidSetting {
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Conflict`].
    pub(crate) fn conflict(
        setting: impl Into<String>,
        other: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Conflict {
            setting: setting.into(),
            other: other.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::InvalidGrid`].
    pub(crate) fn grid(reason: impl Into<String>) -> Self {
        Error::InvalidGrid {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<E: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
    }

    #[test]
    fn messages_name_the_problem() {
        let e = Error::TooFewSteps { steps: 2, order: 3 };
        let m = e.to_string();
        assert!(m.contains("M = 2 < order = 3"), "{m}");
        let e = Error::NonFinite {
            what: "model output",
            step: 4,
            time: 60.0,
        };
        assert!(e.to_string().contains("step 4"));
    }
}
