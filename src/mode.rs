//! The fidelity [`Mode`]: the lowest layer's vocabulary, so that grids (`schedule`) and
//! samplers share it.

/// Fidelity mode (`docs/math.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// The MR Sampler without the reference implementation's defects (default): continuous
    /// schedule, true third order, lower-order final steps, grids that end where the schedule
    /// ends, strided baselines (`docs/math.md` §7.2).
    #[default]
    Exact,
    /// Number-for-number parity with the public PyTorch implementation, defects included
    /// (`docs/math.md` §7.1). For reproducing published numbers and validating ports.
    Reference,
}
