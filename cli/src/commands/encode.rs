//! `mrsampler encode`: DA-CLIP's contexts of an image, computed by its encoder after
//! upstream's preprocessing.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use mrsampler_models::DaClipEncoder;

use crate::error::Result;
use crate::files::write_atomically;
use crate::images;
use crate::loading::{Precision, check_dtype, parse_device};

/// `encode`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// DA-CLIP's checkpoint (`.pt` as released, or converted safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// The degraded image (PNG, JPEG).
    #[arg(long)]
    pub image: PathBuf,
    /// Where to write the image context `.npy`, `[1, output_dim]` float32.
    #[arg(long)]
    pub out_image_context: PathBuf,
    /// Where to write the degradation context `.npy`, `[1, output_dim]` float32.
    #[arg(long)]
    pub out_degra_context: PathBuf,
    /// `cpu`, `cuda:N` or `metal`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights and computation dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

/// Runs `encode`.
pub fn run(args: Args) -> Result<()> {
    let Args {
        weights,
        image,
        out_image_context,
        out_degra_context,
        device,
        dtype,
    } = args;
    let device = parse_device(&device)?;
    check_dtype(&device, dtype.into())?;
    let enc = DaClipEncoder::load(&weights, &device, dtype.into())?;
    let picture = images::read(&image)?;
    if picture.channels != 3 {
        return Err(format!(
            "{}: the encoder takes RGB images; this one has {} channel(s)",
            image.display(),
            picture.channels
        )
        .into());
    }
    let start = Instant::now();
    let contexts = enc.contexts(&picture.tensor(&Device::Cpu, DType::F32)?)?;
    let seconds = start.elapsed().as_secs_f64();
    for (t, path) in [
        (&contexts.image, &out_image_context),
        (&contexts.degradation, &out_degra_context),
    ] {
        let t = t.to_device(&Device::Cpu)?;
        write_atomically(path, |tmp| Ok(t.write_npy(tmp)?))?;
    }
    eprintln!(
        "{}: contexts {:?} of {} in {seconds:.3} s -> {}, {}",
        weights.display(),
        contexts.image.dims(),
        image.display(),
        out_image_context.display(),
        out_degra_context.display()
    );
    Ok(())
}
