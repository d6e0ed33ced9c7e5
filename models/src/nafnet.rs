//! Refusion's `ConditionalNAFNet` (the NAFNet of the IR-SDE code base's `refusion` options).
//!
//! Input `cat(x_t − μ, μ)` (or `x_t` alone), zero padded at the bottom/right to a multiple of
//! `2^levels`; a 3 × 3 intro; encoder levels of NAF blocks each followed by a 2 × 2 stride-2
//! down-sampling; middle NAF blocks; decoder levels of a 1 × 1 convolution and PixelShuffle(2)
//! up-sampling, an additive skip and NAF blocks; a 3 × 3 ending; output cropped back. A NAF
//! block is LayerNorm → time scale/shift → 1 × 1 → depthwise 3 × 3 → SimpleGate → simplified
//! channel attention → 1 × 1 with a learned residual scale, then the same with a gated
//! feed-forward. The time embedding passes a SimpleGate MLP. The output is the predicted noise.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::blocks::{
    ChannelNorm, Conv, ConvSpec, Linear, NetworkInput, chunks, network_input, pad_to,
    pixel_shuffle, simple_gate, time_embedding, zero_pad,
};
use crate::checkpoint::{Checkpoint, Weights};
use crate::error::{Error, Result};

/// The configuration of a [`ConditionalNafNet`] (upstream's constructor arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NafNetConfig {
    /// Image channels of `x_t`, `μ` and the output (`img_channel`).
    pub img_channels: usize,
    /// Base width (`width`).
    pub width: usize,
    /// NAF blocks per encoder level (`enc_blk_nums`).
    pub enc_blocks: Vec<usize>,
    /// NAF blocks in the middle (`middle_blk_num`).
    pub middle_blocks: usize,
    /// NAF blocks per decoder level, deepest first (`dec_blk_nums`).
    pub dec_blocks: Vec<usize>,
    /// Whether the input is `cat(x_t − μ, μ)` (`true`) or `x_t` alone.
    pub conditional: bool,
}

impl NafNetConfig {
    /// Refusion's released configuration: width 64, encoder `[1, 1, 1, 28]`, one middle
    /// block, decoder `[1, 1, 1, 1]`, RGB, conditional.
    pub fn refusion() -> Self {
        Self {
            img_channels: 3,
            width: 64,
            enc_blocks: vec![1, 1, 1, 28],
            middle_blocks: 1,
            dec_blocks: vec![1, 1, 1, 1],
            conditional: true,
        }
    }

    /// Infers the configuration from a checkpoint's tensor names and shapes.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`] if the checkpoint is not a `ConditionalNAFNet`;
    /// [`Error::InvalidConfig`] if its levels are inconsistent.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let unknown = |what: &str| Error::UnknownArchitecture {
            path: ckpt.origin().to_owned(),
            reason: format!("`{what}` not found or not 4-D"),
        };
        let shape4 =
            |name: &str| -> Option<[usize; 4]> { ckpt.shape(name).and_then(|s| s.try_into().ok()) };
        let [width, cin, ..] = shape4("intro.weight").ok_or_else(|| unknown("intro.weight"))?;
        let [img_channels, ..] = shape4("ending.weight").ok_or_else(|| unknown("ending.weight"))?;
        let count =
            |f: &dyn Fn(usize) -> String| (0..).take_while(|i| ckpt.contains(&f(*i))).count();
        let levels = count(&|i| format!("downs.{i}.weight"));
        let ups = count(&|i| format!("ups.{i}.0.weight"));
        if levels != ups {
            return Err(Error::config(format!(
                "{levels} down-sampling levels but {ups} up-sampling levels"
            )));
        }
        let enc_blocks = (0..levels)
            .map(|i| count(&|j| format!("encoders.{i}.{j}.conv1.weight")))
            .collect();
        let dec_blocks = (0..levels)
            .map(|i| count(&|j| format!("decoders.{i}.{j}.conv1.weight")))
            .collect();
        let middle_blocks = count(&|j| format!("middle_blks.{j}.conv1.weight"));
        let conditional = cin == 2 * img_channels;
        let config = Self {
            img_channels,
            width,
            enc_blocks,
            middle_blocks,
            dec_blocks,
            conditional,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration for values upstream cannot build.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.width < 4 || !self.width.is_multiple_of(2) {
            return Err(Error::config(format!(
                "width = {} must be even and at least 4",
                self.width
            )));
        }
        if self.img_channels == 0 {
            return Err(Error::config("img_channel must be at least 1"));
        }
        if self.enc_blocks.len() != self.dec_blocks.len() {
            return Err(Error::config(format!(
                "enc_blk_nums {:?} and dec_blk_nums {:?} must have the same length",
                self.enc_blocks, self.dec_blocks
            )));
        }
        Ok(())
    }
}

impl fmt::Display for NafNetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConditionalNAFNet img_channel={} width={} enc_blk_nums={:?} middle_blk_num={} \
             dec_blk_nums={:?}{}",
            self.img_channels,
            self.width,
            self.enc_blocks,
            self.middle_blocks,
            self.dec_blocks,
            if self.conditional {
                ""
            } else {
                " unconditional"
            }
        )
    }
}

#[derive(Debug, Clone)]
struct NafBlock {
    mlp: Linear,
    norm1: ChannelNorm,
    norm2: ChannelNorm,
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    sca: Conv,
    conv4: Conv,
    conv5: Conv,
    beta: Tensor,
    gamma: Tensor,
}

impl NafBlock {
    fn new(w: &Weights, p: &str, c: usize, time_dim: usize) -> Result<Self> {
        let dw = 2 * c;
        let ffn = 2 * c;
        let conv = |name: &str, s: ConvSpec| Conv::new(w, &format!("{p}.{name}"), s);
        Ok(Self {
            mlp: Linear::new(w, &format!("{p}.mlp.1"), time_dim / 2, 4 * c)?,
            norm1: ChannelNorm::new(w, &format!("{p}.norm1"), c)?,
            norm2: ChannelNorm::new(w, &format!("{p}.norm2"), c)?,
            conv1: conv("conv1", ConvSpec::same(c, dw, 1, true))?,
            conv2: conv(
                "conv2",
                ConvSpec {
                    groups: dw,
                    ..ConvSpec::same(dw, dw, 3, true)
                },
            )?,
            conv3: conv("conv3", ConvSpec::same(dw / 2, c, 1, true))?,
            sca: conv("sca.1", ConvSpec::same(dw / 2, dw / 2, 1, true))?,
            conv4: conv("conv4", ConvSpec::same(c, ffn, 1, true))?,
            conv5: conv("conv5", ConvSpec::same(ffn / 2, c, 1, true))?,
            beta: w.take(&format!("{p}.beta"), &[1, c, 1, 1])?,
            gamma: w.take(&format!("{p}.gamma"), &[1, c, 1, 1])?,
        })
    }

    fn forward(&self, inp: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let m = chunks(&self.mlp.forward(&simple_gate(temb)?)?, 4)?;
        let (shift_att, scale_att, shift_ffn, scale_ffn) = (&m[0], &m[1], &m[2], &m[3]);
        let x = self.norm1.forward_modulated(inp, scale_att, shift_att)?;
        let x = simple_gate(&self.conv2.forward(&self.conv1.forward(&x)?)?)?;
        let attn = self.sca.forward(&x.mean_keepdim((2, 3))?)?;
        let y = self
            .conv3
            .forward_scaled_residual(&x.broadcast_mul(&attn)?, &self.beta, inp)?;
        let x = self.norm2.forward_modulated(&y, scale_ffn, shift_ffn)?;
        let x = self.conv4.forward_gated(&x)?;
        self.conv5.forward_scaled_residual(&x, &self.gamma, &y)
    }
}

fn blocks(w: &Weights, p: &str, n: usize, c: usize, time_dim: usize) -> Result<Vec<NafBlock>> {
    (0..n)
        .map(|j| NafBlock::new(w, &format!("{p}.{j}"), c, time_dim))
        .collect()
}

fn run(blocks: &[NafBlock], x: Tensor, temb: &Tensor) -> Result<Tensor> {
    blocks.iter().try_fold(x, |x, b| b.forward(&x, temb))
}

/// Refusion's `ConditionalNAFNet`; predicts the noise. A
/// [`ScoreModel`](mrsampler::ScoreModel) on `[B, C, H, W]` tensors of any size.
#[derive(Debug, Clone)]
pub struct ConditionalNafNet {
    config: NafNetConfig,
    dtype: DType,
    device: Device,
    params: usize,
    time1: Linear,
    time2: Linear,
    intro: Conv,
    ending: Conv,
    encoders: Vec<Vec<NafBlock>>,
    downs: Vec<Conv>,
    middle: Vec<NafBlock>,
    ups: Vec<Conv>,
    decoders: Vec<Vec<NafBlock>>,
}

impl ConditionalNafNet {
    /// Builds the network from a checkpoint, checking every tensor's shape against `config`
    /// and that the checkpoint holds nothing else.
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] or [`Error::UnexpectedTensor`]
    /// naming the first tensor that does not fit; [`Error::InvalidConfig`].
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        config: NafNetConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let w = Weights::new(ckpt, device, dtype, config.to_string());
        Self::build(w, config, dtype)
    }

    /// Builds the network with random weights (for parameter counts and benchmarks).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::Candle`] if the device cannot allocate.
    pub fn random(config: NafNetConfig, device: &Device, dtype: DType) -> Result<Self> {
        config.validate()?;
        let w = Weights::random(device, dtype, config.to_string());
        Self::build(w, config, dtype)
    }

    fn build(w: Weights, c: NafNetConfig, dtype: DType) -> Result<Self> {
        let width = c.width;
        let time_dim = 4 * width;
        let time1 = Linear::new(&w, "time_mlp.1", width, 2 * time_dim)?;
        let time2 = Linear::new(&w, "time_mlp.3", time_dim, time_dim)?;
        let cin = if c.conditional {
            2 * c.img_channels
        } else {
            c.img_channels
        };
        let intro = Conv::new(&w, "intro", ConvSpec::same(cin, width, 3, true))?;
        let ending = Conv::new(&w, "ending", ConvSpec::same(width, c.img_channels, 3, true))?;
        let mut chan = width;
        let (mut encoders, mut downs) = (Vec::new(), Vec::new());
        for (i, &n) in c.enc_blocks.iter().enumerate() {
            encoders.push(blocks(&w, &format!("encoders.{i}"), n, chan, time_dim)?);
            downs.push(Conv::new(
                &w,
                &format!("downs.{i}"),
                ConvSpec {
                    cin: chan,
                    cout: 2 * chan,
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                    groups: 1,
                    bias: true,
                },
            )?);
            chan *= 2;
        }
        let middle = blocks(&w, "middle_blks", c.middle_blocks, chan, time_dim)?;
        let (mut ups, mut decoders) = (Vec::new(), Vec::new());
        for (i, &n) in c.dec_blocks.iter().enumerate() {
            ups.push(Conv::new(
                &w,
                &format!("ups.{i}.0"),
                ConvSpec::same(chan, 2 * chan, 1, false),
            )?);
            chan /= 2;
            decoders.push(blocks(&w, &format!("decoders.{i}"), n, chan, time_dim)?);
        }
        let device = w.device().clone();
        let params = w.finish()?;
        Ok(Self {
            config: c,
            dtype,
            device,
            params,
            time1,
            time2,
            intro,
            ending,
            encoders,
            downs,
            middle,
            ups,
            decoders,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NafNetConfig {
        &self.config
    }

    /// Number of parameters (as PyTorch's `sum(p.numel() for p in net.parameters())`).
    pub fn parameter_count(&self) -> usize {
        self.params
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights and of the computation.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The noise prediction for states `xt` and means `mu` (`[B, C, H, W]`, any `H, W`) at
    /// one time per sample (`t.len() == B`, or one time for all).
    ///
    /// # Errors
    /// [`Error::Input`] for shapes the network cannot take; [`Error::Candle`].
    pub fn forward(&self, xt: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        crate::layers::on_pool(&self.device, || self.forward_here(xt, mu, t))
    }

    /// The body of the public entry point, on the thread that runs it.
    fn forward_here(&self, xt: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        let c = &self.config;
        let NetworkInput { x, times, h, w } =
            network_input(xt, mu, c.img_channels, c.conditional, t)?;
        let temb = time_embedding(&times, c.width, self.dtype, &self.device)?;
        let temb = self
            .time2
            .forward(&simple_gate(&self.time1.forward(&temb)?)?)?;
        let m = 1usize << c.enc_blocks.len();
        let x = zero_pad(&x, pad_to(h, m), pad_to(w, m))?;
        let mut x = self.intro.forward(&x)?;
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (enc, down) in self.encoders.iter().zip(&self.downs) {
            x = run(enc, x, &temb)?;
            skips.push(x.clone());
            x = down.forward(&x)?;
        }
        x = run(&self.middle, x, &temb)?;
        for (dec, up) in self.decoders.iter().zip(&self.ups) {
            x = pixel_shuffle(&up.forward(&x)?, 2)?;
            let skip = skips.pop().ok_or_else(|| Error::config("skip stack"))?;
            x = run(dec, (x + skip)?, &temb)?;
        }
        let x = self.ending.forward(&x)?;
        Ok(x.narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?)
    }
}
