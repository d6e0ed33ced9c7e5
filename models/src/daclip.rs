//! DA-CLIP universal image restoration as one [`ScoreModel`]: the encoder turns the degraded
//! image into its two contexts once, and the context-taking U-Net serves every sampler call
//! with the per-image work of those contexts ([`Conditioning`]) already done.

use std::path::Path;

use candle_core::{Device, Tensor, TensorId};
use mrsampler::{FitTarget, ModelError, ScoreModel};

use crate::checkpoint::Checkpoint;
use crate::clip::{Contexts, DaClipEncoder};
use crate::error::{Error, Result};
use crate::network::{LoadOptions, Network, predict_as_input};
use crate::unet::{ConditionalUNet, Conditioning};

/// DA-CLIP's denoiser and encoder; predicts the noise.
///
/// The contexts follow `μ`: a call with a `μ` other than the one the current contexts were
/// computed from (by [`condition_on`](Self::condition_on) or an earlier call) computes that
/// `μ`'s contexts first, so one model restores many images without carrying one image's
/// contexts into another's. Contexts given with [`use_contexts`](Self::use_contexts) are
/// pinned instead: every call uses them until the next `use_contexts` or `condition_on`. Pin
/// the whole image's contexts before a tiled restore, where each call sees a tile, not the
/// image.
///
/// ```no_run
/// use mrsampler::{MrSampler, Sampler, SeededNoise};
/// use mrsampler_models::{DaClip, LoadOptions, preset};
///
/// let mut model = DaClip::load("universal-ir.pth", "daclip_ViT-B-32.pt", &LoadOptions::default())?;
/// # let lq = candle_core::Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, model.device())?;
/// model.condition_on(&lq)?;
/// let sampler = MrSampler::new(preset("daclip")?.schedule(), 10)?;
/// let restored = sampler.sample(&mut model, &lq, None, &mut SeededNoise::new(0))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DaClip {
    net: ConditionalUNet,
    encoder: DaClipEncoder,
    conditioning: Conditioning,
    /// The `μ` the conditioning was computed from, or `None` once pinned by the caller.
    source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Nothing,
    Mu(TensorId),
    Pinned,
}

impl DaClip {
    /// Pairs a context-taking U-Net with an encoder whose output width it takes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the network takes no contexts or another width.
    pub fn new(net: ConditionalUNet, encoder: DaClipEncoder) -> Result<Self> {
        let want = encoder.config().output_dim;
        match net.config().context_dim {
            Some(d) if d == want => {}
            Some(d) => {
                return Err(Error::config(format!(
                    "the denoiser takes {d}-wide contexts but the encoder gives {want}-wide ones"
                )));
            }
            None => {
                return Err(Error::config(format!(
                    "{} takes no contexts: it is not a DA-CLIP denoiser",
                    net.config()
                )));
            }
        }
        Ok(Self {
            net,
            encoder,
            conditioning: Conditioning::none(),
            source: Source::Nothing,
        })
    }

    /// Loads the denoiser (configuration inferred, or from `opts.options`) and the encoder.
    ///
    /// # Errors
    /// The errors of [`Network::from_checkpoint`] and [`DaClipEncoder::from_checkpoint`];
    /// [`Error::InvalidConfig`] as in [`new`](Self::new).
    pub fn load(
        denoiser: impl AsRef<Path>,
        encoder: impl AsRef<Path>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let net = match Network::from_checkpoint(&Checkpoint::load(denoiser)?, opts)? {
            Network::UNet(n) => *n,
            other => {
                return Err(Error::config(format!(
                    "a DA-CLIP denoiser is a ConditionalUNet, not a {}",
                    other.architecture()
                )));
            }
        };
        let encoder = DaClipEncoder::load(encoder, &opts.device, opts.dtype)?;
        Self::new(net, encoder)
    }

    /// Computes the contexts of the degraded image `lq` (`[B, 3, H, W]` in `[0, 1]`) and the
    /// denoiser's per-image work, for the calls whose `μ` is `lq` (the same tensor); a call
    /// with another `μ` computes that one's. Returns the contexts (pass them to
    /// [`use_contexts`](Self::use_contexts) to pin them for every `μ`, e.g. for tiles).
    ///
    /// # Errors
    /// As [`DaClipEncoder::contexts`] and [`ConditionalUNet::condition`].
    pub fn condition_on(&mut self, lq: &Tensor) -> Result<Contexts> {
        let contexts = self.encoder.contexts(lq)?;
        self.use_contexts(&contexts)?;
        self.source = Source::Mu(lq.id());
        Ok(contexts)
    }

    /// Pins given contexts (e.g. computed once and stored, or a whole image's for its tiles):
    /// every following call uses them, whatever its `μ`, until the next `use_contexts` or
    /// `condition_on`.
    ///
    /// # Errors
    /// As [`ConditionalUNet::condition`].
    pub fn use_contexts(&mut self, contexts: &Contexts) -> Result<()> {
        self.conditioning = self
            .net
            .condition(Some(&contexts.image), Some(&contexts.degradation))?;
        self.source = Source::Pinned;
        Ok(())
    }

    /// The denoiser.
    pub fn network(&self) -> &ConditionalUNet {
        &self.net
    }

    /// The denoiser, to change its settings (e.g. its attention budget).
    pub fn network_mut(&mut self) -> &mut ConditionalUNet {
        &mut self.net
    }

    /// The encoder.
    pub fn encoder(&self) -> &DaClipEncoder {
        &self.encoder
    }

    /// The device of the denoiser.
    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// The noise prediction with the current contexts.
    ///
    /// # Errors
    /// As [`ConditionalUNet::forward_conditioned`].
    pub fn forward(&self, xt: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        self.net.forward_conditioned(xt, mu, t, &self.conditioning)
    }
}

impl ScoreModel<Tensor> for DaClip {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Noise
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, ModelError> {
        self.predict_per_sample(x, mu, &[t])
    }

    /// Per-sample times; the contexts are the pinned ones (one row per sample, e.g. several
    /// images' contexts concatenated) or `μ`'s own.
    fn predict_per_sample(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, ModelError> {
        if self.source != Source::Pinned && self.source != Source::Mu(mu.id()) {
            let contexts = self.encoder.contexts(mu)?;
            self.use_contexts(&contexts)?;
            self.source = Source::Mu(mu.id());
        }
        predict_as_input(self.net.dtype(), x, mu, t, |x, mu, t| {
            self.forward(x, mu, t)
        })
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}
