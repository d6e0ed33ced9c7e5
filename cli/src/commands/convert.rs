//! `mrsampler convert`: a clean safetensors file (unwrapped, unprefixed, checked) from a
//! checkpoint; of a DA-CLIP checkpoint, only the image encoder's tensors.

use std::path::PathBuf;

use candle_core::DType;
use mrsampler_models::{Checkpoint, DaClipEncoder, Network};

use crate::error::Result;
use crate::loading::{Precision, is_encoder, load_options};

/// `convert`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// A `.pth` state dict or a safetensors file.
    pub input: PathBuf,
    /// The safetensors file to write.
    pub output: PathBuf,
    /// An upstream option file (YAML) stating the configuration.
    #[arg(long)]
    pub options: Option<PathBuf>,
    /// The dtype to store.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

/// Runs `convert`.
pub fn run(args: Args) -> Result<()> {
    let Args {
        input,
        output,
        options,
        dtype,
    } = args;
    let ckpt = Checkpoint::load(&input)?;
    if is_encoder(&ckpt) {
        let part = DaClipEncoder::compact(&ckpt)?;
        part.save_safetensors(&output, dtype.into())?;
        eprintln!(
            "{} -> {}: DA-CLIP image encoder, {} of {} tensors",
            input.display(),
            output.display(),
            part.len(),
            ckpt.len()
        );
        return Ok(());
    }
    // Building the network checks every tensor, so the output is known to load.
    let net = Network::from_checkpoint(&ckpt, &load_options(options, "cpu", DType::F32)?)?;
    ckpt.save_safetensors(&output, dtype.into())?;
    eprintln!(
        "{} -> {}: {}, {} tensors, {} parameters",
        input.display(),
        output.display(),
        net.config(),
        ckpt.len(),
        net.parameter_count()
    );
    Ok(())
}
