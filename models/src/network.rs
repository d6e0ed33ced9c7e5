//! One entry point for every supported architecture: [`Network::load`] reads a checkpoint,
//! tells its architecture from the tensor names, infers (or takes from an option file) its
//! configuration and builds it; [`Network`] is a [`ScoreModel`].

use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mrsampler::{FitTarget, ModelError, ScoreModel};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::nafnet::{ConditionalNafNet, NafNetConfig};
use crate::options::{NetworkOptions, UpstreamOptions};
use crate::unet::{ConditionalUNet, UNetConfig};

/// The supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// IR-SDE's `ConditionalUNet`.
    UNet,
    /// Refusion's `ConditionalNAFNet`.
    NafNet,
}

impl Architecture {
    /// Tells the architecture from the tensor names.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`] if the names fit none.
    pub fn detect(ckpt: &Checkpoint) -> Result<Self> {
        if ckpt.contains("init_conv.weight") && ckpt.contains("downs.0.0.block1.proj.weight") {
            Ok(Self::UNet)
        } else if ckpt.contains("intro.weight") && ckpt.contains("ending.weight") {
            Ok(Self::NafNet)
        } else {
            let first: Vec<&str> = ckpt.names().take(3).collect();
            Err(Error::UnknownArchitecture {
                path: ckpt.origin().to_owned(),
                reason: format!(
                    "neither `init_conv.weight` + `downs.0.0.block1.proj.weight` nor \
                     `intro.weight` + `ending.weight` is present (first tensors: {first:?})"
                ),
            })
        }
    }

    /// The upstream class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::UNet => "ConditionalUNet",
            Self::NafNet => "ConditionalNAFNet",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

/// A network configuration of any supported architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    /// IR-SDE's U-Net.
    UNet(UNetConfig),
    /// Refusion's NAFNet.
    NafNet(NafNetConfig),
}

impl NetworkConfig {
    /// Infers the configuration from the tensor names and shapes alone.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`], [`Error::InvalidConfig`].
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        match Architecture::detect(ckpt)? {
            Architecture::UNet => Ok(Self::UNet(UNetConfig::infer(ckpt)?)),
            Architecture::NafNet => Ok(Self::NafNet(NafNetConfig::infer(ckpt)?)),
        }
    }

    /// The configuration an option file states, completed from the checkpoint where the
    /// file is silent (attention kinds, stem size and input layout are properties of the
    /// upstream module file, not of the options).
    ///
    /// # Errors
    /// [`Error::ArchitectureMismatch`] if the options name another architecture than the
    /// checkpoint holds; the errors of [`infer`](Self::infer).
    pub fn from_options(ckpt: &Checkpoint, options: &NetworkOptions) -> Result<Self> {
        let found = Architecture::detect(ckpt)?;
        let mismatch = || Error::ArchitectureMismatch {
            stated: options.class_name().to_owned(),
            found: found.class_name(),
        };
        match (options, found) {
            (
                NetworkOptions::UNet {
                    in_nc,
                    out_nc,
                    nf,
                    channel_mults,
                },
                Architecture::UNet,
            ) => {
                let inferred = UNetConfig::infer(ckpt)?;
                let depth = channel_mults.len();
                let mut c = UNetConfig::ir_sde(*in_nc, *out_nc, *nf, depth);
                c.channel_mults = channel_mults.clone();
                c.stem_kernel = inferred.stem_kernel;
                c.conditional = inferred.conditional;
                c.head_dim = inferred.head_dim;
                c.mid_attention = inferred.mid_attention;
                // DA-CLIP's `context_dim` / `use_*_context` settings, as the tensors say.
                c.context_dim = inferred.context_dim;
                c.degradation_prompt = inferred.degradation_prompt;
                if inferred.level_attention.len() == depth {
                    c.level_attention = inferred.level_attention;
                }
                Ok(Self::UNet(c))
            }
            (NetworkOptions::NafNet(stated), Architecture::NafNet) => {
                let mut c = stated.clone();
                c.conditional = NafNetConfig::infer(ckpt)?.conditional;
                Ok(Self::NafNet(c))
            }
            _ => Err(mismatch()),
        }
    }

    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::UNet(_) => Architecture::UNet,
            Self::NafNet(_) => Architecture::NafNet,
        }
    }
}

impl fmt::Display for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UNet(c) => c.fmt(f),
            Self::NafNet(c) => c.fmt(f),
        }
    }
}

/// Where and how to run a loaded network.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The device (default CPU).
    pub device: Device,
    /// The dtype of weights and computation (default f32).
    pub dtype: DType,
    /// An upstream option file to take the configuration from (default: infer it).
    pub options: Option<UpstreamOptions>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            options: None,
        }
    }
}

/// A loaded network of any supported architecture; predicts the noise.
///
/// ```no_run
/// use mrsampler::{MrSampler, Sampler, SeededNoise};
/// use mrsampler_models::{LoadOptions, Network, preset};
///
/// let mut net = Network::load("ir-sde-deraining.pth", &LoadOptions::default())?;
/// let schedule = preset("ir-sde-deraining")?.schedule();
/// let mu = candle_core::Tensor::zeros((1, 3, 64, 48), candle_core::DType::F32, net.device())?;
/// let out = MrSampler::new(schedule, 10)?.sample(&mut net, &mu, None, &mut SeededNoise::new(0))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub enum Network {
    /// IR-SDE's U-Net.
    UNet(Box<ConditionalUNet>),
    /// Refusion's NAFNet.
    NafNet(Box<ConditionalNafNet>),
}

impl Network {
    /// Reads a `.pth` or safetensors checkpoint and builds its network, with the
    /// configuration of `opts.options` or, without one, inferred from the tensors.
    ///
    /// # Errors
    /// The errors of [`Checkpoint::load`] and [`Network::from_checkpoint`].
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        Self::from_checkpoint(&ckpt, opts)
    }

    /// Builds the network of a checkpoint.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`], [`Error::ArchitectureMismatch`],
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`], [`Error::UnexpectedTensor`].
    pub fn from_checkpoint(ckpt: &Checkpoint, opts: &LoadOptions) -> Result<Self> {
        let config = match opts.options.as_ref().and_then(|o| o.network.as_ref()) {
            Some(stated) => NetworkConfig::from_options(ckpt, stated)?,
            None => NetworkConfig::infer(ckpt)?,
        };
        Self::build(ckpt, config, &opts.device, opts.dtype)
    }

    /// Builds `config` from a checkpoint.
    ///
    /// # Errors
    /// As [`from_checkpoint`](Self::from_checkpoint).
    pub fn build(
        ckpt: &Checkpoint,
        config: NetworkConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Ok(match config {
            NetworkConfig::UNet(c) => Self::UNet(Box::new(ConditionalUNet::from_checkpoint(
                ckpt, c, device, dtype,
            )?)),
            NetworkConfig::NafNet(c) => Self::NafNet(Box::new(ConditionalNafNet::from_checkpoint(
                ckpt, c, device, dtype,
            )?)),
        })
    }

    /// Builds `config` with random weights.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Candle`].
    pub fn random(config: NetworkConfig, device: &Device, dtype: DType) -> Result<Self> {
        Ok(match config {
            NetworkConfig::UNet(c) => {
                Self::UNet(Box::new(ConditionalUNet::random(c, device, dtype)?))
            }
            NetworkConfig::NafNet(c) => {
                Self::NafNet(Box::new(ConditionalNafNet::random(c, device, dtype)?))
            }
        })
    }

    /// The configuration.
    pub fn config(&self) -> NetworkConfig {
        match self {
            Self::UNet(n) => NetworkConfig::UNet(n.config().clone()),
            Self::NafNet(n) => NetworkConfig::NafNet(n.config().clone()),
        }
    }

    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::UNet(_) => Architecture::UNet,
            Self::NafNet(_) => Architecture::NafNet,
        }
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        match self {
            Self::UNet(n) => n.parameter_count(),
            Self::NafNet(n) => n.parameter_count(),
        }
    }

    /// The multiple the network pads an image's height and width to (`2^levels`).
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(n) => 1 << n.config().depth(),
            Self::NafNet(n) => 1 << n.config().enc_blocks.len(),
        }
    }

    /// The smallest image side the network takes: the U-Net pads by reflection, which needs a
    /// side longer than the padding (`size_multiple() / 2 + 1` covers every side); the NAFNet
    /// pads with zeros and takes any side.
    pub fn min_side(&self) -> usize {
        match self {
            Self::UNet(_) => self.size_multiple() / 2 + 1,
            Self::NafNet(_) => 1,
        }
    }

    /// Image channels the network takes.
    pub fn channels(&self) -> usize {
        match self {
            Self::UNet(n) => n.config().in_channels,
            Self::NafNet(n) => n.config().img_channels,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        match self {
            Self::UNet(n) => n.device(),
            Self::NafNet(n) => n.device(),
        }
    }

    /// The dtype of weights and computation.
    pub fn dtype(&self) -> DType {
        match self {
            Self::UNet(n) => n.dtype(),
            Self::NafNet(n) => n.dtype(),
        }
    }

    /// The noise prediction (see [`ConditionalUNet::forward`]).
    ///
    /// # Errors
    /// [`Error::Input`], [`Error::Candle`].
    pub fn forward(&self, xt: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        match self {
            Self::UNet(n) => n.forward(xt, mu, t),
            Self::NafNet(n) => n.forward(xt, mu, t),
        }
    }
}

/// Runs `forward` in the network's dtype at the times `t` (one, or one per sample) and returns
/// the result in the input's dtype.
pub(crate) fn predict_as_input(
    dtype: DType,
    x: &Tensor,
    mu: &Tensor,
    t: &[f64],
    forward: impl FnOnce(&Tensor, &Tensor, &[f32]) -> Result<Tensor>,
) -> std::result::Result<Tensor, ModelError> {
    if t.len() != 1 && t.len() != x.dim(0)? {
        return Err(ModelError::msg(format!(
            "{} times for a batch of {}: give one time per sample",
            t.len(),
            x.dim(0)?
        )));
    }
    let (xd, md) = (x.to_dtype(dtype)?, mu.to_dtype(dtype)?);
    let t: Vec<f32> = t.iter().map(|&t| t as f32).collect();
    Ok(forward(&xd, &md, &t)?.to_dtype(x.dtype())?)
}

macro_rules! score_model {
    ($ty:ty) => {
        impl ScoreModel<Tensor> for $ty {
            fn fit_target(&self) -> FitTarget {
                FitTarget::Noise
            }

            fn predict(
                &mut self,
                x: &Tensor,
                mu: &Tensor,
                t: f64,
            ) -> std::result::Result<Tensor, ModelError> {
                predict_as_input(self.dtype(), x, mu, &[t], |x, mu, t| self.forward(x, mu, t))
            }

            fn predict_per_sample(
                &mut self,
                x: &Tensor,
                mu: &Tensor,
                t: &[f64],
            ) -> std::result::Result<Tensor, ModelError> {
                predict_as_input(self.dtype(), x, mu, t, |x, mu, t| self.forward(x, mu, t))
            }

            fn input_rank(&self) -> Option<usize> {
                Some(4)
            }
        }
    };
}

score_model!(Network);
score_model!(ConditionalUNet);
score_model!(ConditionalNafNet);
