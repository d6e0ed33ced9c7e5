//! The integration tests of `mrsampler`, one binary (each test file is a module; shared
//! helpers in `common`). `tests/allocations.rs` stays apart: it installs a counting global
//! allocator.

mod common;

mod adaptive;
mod api;
mod backends;
mod calibration;
mod conflicts;
mod convergence;
mod determinism;
mod diffusers;
mod errors;
mod golden;
mod inline_noise;
mod prior_correction;
mod properties;
mod robustness;
mod standard;
mod vectors;
