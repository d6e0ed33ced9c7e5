//! What the binary ships inside itself: the trained denoising network with its option file,
//! and the evaluation crops (`assets/`), so that an installed or copied `mrsampler` runs
//! `restore` and `eval` without the source tree.

use candle_core::Device;
use mrsampler_models::{Checkpoint, UpstreamOptions};

use crate::error::Result;
use crate::images::{self, Picture};

/// The shipped network's weights (`assets/restore/model.safetensors`).
const MODEL: &[u8] = include_bytes!("../../assets/restore/model.safetensors");

/// The shipped network's option file (`assets/restore/options.yml`).
const OPTIONS: &str = include_str!("../../assets/restore/options.yml");

/// The shipped network's checkpoint.
pub fn checkpoint() -> Result<Checkpoint> {
    let tensors = candle_core::safetensors::load_buffer(MODEL, &Device::Cpu)?;
    Ok(Checkpoint::from_tensors(tensors))
}

/// The shipped network's option file, parsed.
pub fn options() -> Result<UpstreamOptions> {
    Ok(UpstreamOptions::parse(
        OPTIONS,
        std::path::Path::new("(shipped) assets/restore/options.yml"),
    )?)
}

/// One shipped evaluation crop: its name and its clean and degraded PNG files.
pub struct ShippedPair {
    /// `test` or `val`.
    pub set: &'static str,
    /// The crop's name (file stem).
    pub name: &'static str,
    gt: &'static [u8],
    degraded: &'static [u8],
}

impl ShippedPair {
    /// The clean crop.
    pub fn gt(&self) -> Result<Picture> {
        images::decode(
            self.gt,
            &format!("(shipped) {}/gt/{}.png", self.set, self.name),
        )
    }

    /// The degraded crop.
    pub fn degraded(&self) -> Result<Picture> {
        images::decode(
            self.degraded,
            &format!("(shipped) {}/degraded/{}.png", self.set, self.name),
        )
    }
}

macro_rules! shipped_pair {
    ($set:literal, $name:literal) => {
        ShippedPair {
            set: $set,
            name: $name,
            gt: include_bytes!(concat!("../../assets/eval/", $set, "/gt/", $name, ".png")),
            degraded: include_bytes!(concat!(
                "../../assets/eval/",
                $set,
                "/degraded/",
                $name,
                ".png"
            )),
        }
    };
}

/// The test crops (where results are reported).
const TEST: &[ShippedPair] = &[
    shipped_pair!("test", "chelsea_eye_left"),
    shipped_pair!("test", "chelsea_eye_right"),
    shipped_pair!("test", "chelsea_nose"),
    shipped_pair!("test", "coffee_cup"),
    shipped_pair!("test", "coffee_saucer"),
    shipped_pair!("test", "coffee_spoon"),
];

/// The validation crops (where configurations are chosen).
const VAL: &[ShippedPair] = &[
    shipped_pair!("val", "rocket_base"),
    shipped_pair!("val", "rocket_lights"),
    shipped_pair!("val", "rocket_nose"),
    shipped_pair!("val", "rocket_tower"),
];

/// The shipped set `test` or `val`.
pub fn set(name: &str) -> Result<&'static [ShippedPair]> {
    match name {
        "test" => Ok(TEST),
        "val" => Ok(VAL),
        other => Err(format!("no shipped set `{other}`; use test or val").into()),
    }
}
