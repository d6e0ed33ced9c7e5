//! Published Mean-Reverting diffusion networks in [candle](candle_core), loading their
//! released checkpoints, as [`ScoreModel`](mrsampler::ScoreModel)s for the
//! [`mrsampler`] samplers.
//!
//! * [`ConditionalUNet`]: IR-SDE's U-Net (deraining, deblurring, super-resolution,
//!   inpainting, deshadowing; and the unconditional denoising variant).
//! * [`ConditionalNafNet`]: Refusion's NAFNet.
//! * DA-CLIP universal image restoration: its context-taking [`ConditionalUNet`] (spatial
//!   transformers, degradation prompt), its image encoder [`DaClipEncoder`] (a CLIP ViT with
//!   a controller), and [`DaClip`], the two as one score model.
//! * Any other network exported to ONNX: `OnnxNetwork` (feature `onnx`), run by ONNX
//!   Runtime, which is loaded at run time from a library the user has.
//!
//! Checkpoints are read as users have them: PyTorch `.pth` state dicts (plain, wrapped in
//! `state_dict` / `params`, with or without `module.` prefixes) or safetensors. The
//! architecture and its configuration are inferred from the tensor names and shapes
//! ([`NetworkConfig::infer`]), or taken from an upstream option file
//! ([`UpstreamOptions`]); a checkpoint that does not fit is refused with an error naming
//! the first tensor that does not. [`preset`] gives each checkpoint family's schedule.
//!
//! ```no_run
//! use mrsampler::{MrSampler, Sampler, SeededNoise};
//! use mrsampler_models::{LoadOptions, Network, preset};
//!
//! let mut net = Network::load("ir-sde-deraining.pth", &LoadOptions::default())?;
//! let sampler = MrSampler::new(preset("ir-sde-deraining")?.schedule(), 10)?;
//! # let mu = candle_core::Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, net.device())?;
//! let restored = sampler.sample(&mut net, &mu, None, &mut SeededNoise::new(0))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout: `checkpoint` (file formats, shape-checked weight access), `blocks` (layers shared
//! by the networks), `kernels` (CPU convolution kernels), one module per
//! architecture (`unet` with its `transformer` blocks, `nafnet`, `clip` for the encoder,
//! `daclip` for the pipeline), `network` (detection and the common entry point),
//! `options` (upstream YAML), `preset` (schedules of the checkpoint families), `tiling`
//! (large images: the network on overlapping tiles, blended), `onnx` (ONNX Runtime).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocks;
mod border;
mod checkpoint;
mod clip;
mod daclip;
mod error;
mod kernels;
pub mod layers;
mod nafnet;
mod network;
#[cfg(feature = "onnx")]
mod onnx;
mod options;
mod preset;
mod tiling;
mod transformer;
mod unet;

pub use border::{Mirrored, mirror_pad};
pub use checkpoint::{Checkpoint, Format};
pub use clip::{CLIP_MEAN, CLIP_STD, ClipVisionConfig, Contexts, DaClipEncoder};
pub use daclip::DaClip;
pub use error::{Error, Result};
pub use kernels::depthwise_conv3x3;
pub use nafnet::{ConditionalNafNet, NafNetConfig};
pub use network::{Architecture, LoadOptions, Network, NetworkConfig};
#[cfg(feature = "onnx")]
pub use onnx::{OnnxDevice, OnnxNetwork, OnnxOptions};
pub use options::{NetworkOptions, SdeOptions, UpstreamOptions};
pub use preset::{PRESETS, Preset, lookup as preset};
pub use tiling::{TileSpec, Tiled, tile_origins};
pub use unet::{Attention, ConditionalUNet, Conditioning, DEFAULT_ATTENTION_BUDGET, UNetConfig};
