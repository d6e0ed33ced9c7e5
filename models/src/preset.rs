//! The SDE settings each released checkpoint family was trained with.
//!
//! Values are those of the `sde` sections of the upstream option files (IR-SDE code base,
//! `codes/config/<task>/options/test/{ir-sde,refusion}.yml`; DA-CLIP,
//! `universal-image-restoration/config/daclip-sde/options/test.yml`). Every family uses the
//! cosine θ schedule with `T = 100` and `eps = 0.005`; they differ in `max_sigma`.
//!
//! Upstream's `denoising-sde` configurations are not listed: they train for a different
//! (non mean-reverting) process, `DenoisingSDE`, whose drift pulls towards the clean image.

use mrsampler::schedule::{IrSdeSchedule, ThetaSchedule};

use crate::error::{Error, Result};
use crate::network::Architecture;

/// A checkpoint family and its schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// The name `restore --preset` takes.
    pub name: &'static str,
    /// The network of the family.
    pub architecture: Architecture,
    /// `sde.max_sigma` (÷255 applies).
    pub max_sigma: f64,
    /// `sde.T`.
    pub steps: usize,
    /// `sde.eps`.
    pub eps: f64,
    /// The upstream option file the values come from.
    pub source: &'static str,
}

impl Preset {
    /// The schedule: cosine θ with this preset's `T`, `eps` and `max_sigma`.
    pub fn schedule(&self) -> IrSdeSchedule {
        IrSdeSchedule::new(ThetaSchedule::Cosine, self.steps, self.eps, self.max_sigma)
            .expect("preset values are valid")
    }
}

const fn preset(
    name: &'static str,
    architecture: Architecture,
    max_sigma: f64,
    source: &'static str,
) -> Preset {
    Preset {
        name,
        architecture,
        max_sigma,
        steps: 100,
        eps: 0.005,
        source,
    }
}

use Architecture::{NafNet, UNet};

/// Every known family.
pub const PRESETS: &[Preset] = &[
    preset(
        "ir-sde-deraining",
        UNet,
        10.0,
        "codes/config/deraining/options/test/ir-sde.yml",
    ),
    preset(
        "ir-sde-deblurring",
        UNet,
        10.0,
        "codes/config/deblurring/options/test/ir-sde.yml",
    ),
    preset(
        "ir-sde-sisr",
        UNet,
        30.0,
        "codes/config/sisr/options/test/ir-sde.yml",
    ),
    preset(
        "ir-sde-inpainting",
        UNet,
        30.0,
        "codes/config/inpainting/options/test/ir-sde.yml",
    ),
    preset(
        "ir-sde-deshadow",
        UNet,
        30.0,
        "codes/config/deshadow/options/test/ir-sde.yml",
    ),
    preset(
        "refusion-deraining",
        NafNet,
        50.0,
        "codes/config/deraining/options/test/refusion.yml",
    ),
    preset(
        "refusion-deblurring",
        NafNet,
        50.0,
        "codes/config/deblurring/options/test/refusion.yml",
    ),
    preset(
        "refusion-sisr",
        NafNet,
        50.0,
        "codes/config/sisr/options/test/refusion.yml",
    ),
    preset(
        "refusion-inpainting",
        NafNet,
        50.0,
        "codes/config/inpainting/options/test/refusion.yml",
    ),
    preset(
        "refusion-deshadow",
        NafNet,
        50.0,
        "codes/config/deshadow/options/test/refusion.yml",
    ),
    preset(
        "daclip",
        UNet,
        50.0,
        "daclip-uir: universal-image-restoration/config/daclip-sde/options/test.yml",
    ),
];

/// Looks a preset up by name.
///
/// ```
/// let p = mrsampler_models::preset("ir-sde-deraining").unwrap();
/// assert_eq!(p.max_sigma, 10.0);
/// ```
///
/// # Errors
/// [`Error::UnknownPreset`] listing the known names.
pub fn lookup(name: &str) -> Result<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::UnknownPreset {
            name: name.to_owned(),
            known: PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
