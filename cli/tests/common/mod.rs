//! Helpers shared by the `mrsampler` binary's tests.

#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// A file of the models crate's parity cases.
pub fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data")
        .join(name)
}

/// Runs the binary; returns whether it succeeded and its stdout + stderr.
pub fn mrsampler(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mrsampler"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Writes a deterministic `w × h` RGB test pattern (varied by `k`) to `path`.
pub fn rgb(path: &Path, w: u32, h: u32, k: u32) {
    image::ImageBuffer::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 13 + k * 7) % 256) as u8,
            ((y * 11 + k) % 256) as u8,
            ((x * y + 40) % 256) as u8,
        ])
    })
    .save(path)
    .unwrap();
}
