//! IR-SDE's `ConditionalUNet` (Luo et al., ICML 2023; the network of the deraining,
//! deblurring, super-resolution, inpainting, deshadowing and denoising configurations of the
//! IR-SDE code base).
//!
//! Input `cat(x_t − μ, μ)` (or `x_t` alone for the unconditional denoising variant), reflect
//! padded at the bottom/right to a multiple of `2^levels`; a `7 × 7` stem; per level two
//! residual blocks with a time scale-shift, an attention block and a strided (`4 × 4`, stride
//! 2) down-sampling; a middle of two residual blocks around an attention block; the mirrored
//! decoder with skip concatenations and nearest up-sampling; output cropped back. The output
//! is the predicted noise.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::blocks::{
    ChannelNorm, Conv, ConvSpec, Linear, NetworkInput, attention, chunks, network_input, pad_to,
    reflect_pad, silu_modulated, silu_plus, softmax, time_embedding,
};
use crate::checkpoint::{Checkpoint, Weights};
use crate::error::{Error, Result};
use crate::transformer::SpatialTransformer;

/// The attention block kind at one position of the U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Linear attention over pixels (softmax over channels for queries and over pixels for
    /// keys), followed by a 1 × 1 projection and a channel LayerNorm. IR-SDE's default.
    Linear,
    /// Full softmax self-attention over pixels (the denoising configuration's middle block).
    Full,
    /// DA-CLIP's spatial transformer: GroupNorm, self-attention over pixels, cross-attention
    /// to the image context, GEGLU feed-forward (`dim / 32` heads of 32).
    Transformer,
}

/// The configuration of a [`ConditionalUNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetConfig {
    /// Image channels of `x_t` and `μ` (`in_nc`).
    pub in_channels: usize,
    /// Output channels (`out_nc`).
    pub out_channels: usize,
    /// Base width (`nf`).
    pub nf: usize,
    /// Channel multipliers of the levels' outputs: level `i` maps `nf·m[i−1]` (with
    /// `m[−1] = 1`) to `nf·m[i]` channels. IR-SDE's `depth = d` is `[2, 4, …, 2^d]`.
    pub channel_mults: Vec<usize>,
    /// Whether the input is `cat(x_t − μ, μ)` (`true`) or `x_t` alone.
    pub conditional: bool,
    /// Kernel size of the stem convolution (7 upstream).
    pub stem_kernel: usize,
    /// Attention block of each level (down and up paths alike).
    pub level_attention: Vec<Attention>,
    /// Attention block of the middle.
    pub mid_attention: Attention,
    /// Attention heads (4 upstream).
    pub heads: usize,
    /// Width of each head of the linear and full attention blocks (32 upstream).
    pub head_dim: usize,
    /// Width of the context vectors (DA-CLIP's 512): the image context the
    /// [`Attention::Transformer`] blocks attend to and the degradation context of the prompt
    /// path. `None` for IR-SDE's networks.
    pub context_dim: Option<usize>,
    /// Whether the degradation prompt path (`text_mlp`, `prompt`, `prompt_mlp`) adds the
    /// degradation context to the time embedding (DA-CLIP's `use_degra_context`).
    pub degradation_prompt: bool,
}

impl UNetConfig {
    /// IR-SDE's constructor arguments `(in_nc, out_nc, nf, depth)` with upstream's fixed
    /// choices (conditional input, 7 × 7 stem, linear attention everywhere, 4 heads of 32).
    ///
    /// ```
    /// let c = mrsampler_models::UNetConfig::ir_sde(3, 3, 64, 4);
    /// assert_eq!(c.channel_mults, vec![2, 4, 8, 16]);
    /// ```
    pub fn ir_sde(in_nc: usize, out_nc: usize, nf: usize, depth: usize) -> Self {
        Self {
            in_channels: in_nc,
            out_channels: out_nc,
            nf,
            channel_mults: (1..=depth).map(|i| 1 << i).collect(),
            conditional: true,
            stem_kernel: 7,
            level_attention: vec![Attention::Linear; depth],
            mid_attention: Attention::Linear,
            heads: 4,
            head_dim: 32,
            context_dim: None,
            degradation_prompt: false,
        }
    }

    /// DA-CLIP's constructor arguments `(in_nc, out_nc, nf, ch_mult, context_dim,
    /// use_degra_context, use_image_context)` with upstream's fixed choices: spatial
    /// transformers at levels 3 and deeper and in the middle when the image context is used,
    /// linear attention elsewhere. The released network is
    /// `daclip(3, 3, 64, &[1, 2, 4, 8], 512, true, true)`.
    ///
    /// ```
    /// use mrsampler_models::{Attention, UNetConfig};
    /// let c = UNetConfig::daclip(3, 3, 64, &[1, 2, 4, 8], 512, true, true);
    /// assert_eq!(c.level_attention[3], Attention::Transformer);
    /// assert_eq!(c.mid_attention, Attention::Transformer);
    /// ```
    pub fn daclip(
        in_nc: usize,
        out_nc: usize,
        nf: usize,
        ch_mult: &[usize],
        context_dim: usize,
        use_degra_context: bool,
        use_image_context: bool,
    ) -> Self {
        let image = use_image_context && context_dim > 0;
        let kind = |i: usize| {
            if image && i >= 3 {
                Attention::Transformer
            } else {
                Attention::Linear
            }
        };
        Self {
            channel_mults: ch_mult.to_vec(),
            level_attention: (0..ch_mult.len()).map(kind).collect(),
            mid_attention: if image {
                Attention::Transformer
            } else {
                Attention::Linear
            },
            context_dim: (context_dim > 0).then_some(context_dim),
            degradation_prompt: use_degra_context && context_dim > 0,
            ..Self::ir_sde(in_nc, out_nc, nf, ch_mult.len())
        }
    }

    /// Whether the network takes an image context (it has spatial transformer blocks).
    pub fn uses_image_context(&self) -> bool {
        self.mid_attention == Attention::Transformer
            || self.level_attention.contains(&Attention::Transformer)
    }

    /// Number of levels (`depth`).
    pub fn depth(&self) -> usize {
        self.channel_mults.len()
    }

    /// Channels at level boundaries: `[nf, nf·m₀, nf·m₁, …]`.
    fn dims(&self) -> Vec<usize> {
        std::iter::once(self.nf)
            .chain(self.channel_mults.iter().map(|m| m * self.nf))
            .collect()
    }

    /// Infers the configuration from a checkpoint's tensor names and shapes.
    ///
    /// The input is taken as conditional (`cat(x_t − μ, μ)`) when the stem has twice the
    /// output channels, or an even count with linear attention in the middle (every
    /// conditional upstream module); the head count, invisible in shapes, is upstream's 4.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`] if the checkpoint is not a `ConditionalUNet`;
    /// [`Error::InvalidConfig`] if its shapes are inconsistent.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let unknown = |what: &str| Error::UnknownArchitecture {
            path: ckpt.origin().to_owned(),
            reason: format!("`{what}` not found or not 4-D"),
        };
        let shape4 =
            |name: &str| -> Option<[usize; 4]> { ckpt.shape(name).and_then(|s| s.try_into().ok()) };
        let [nf, cin, stem_kernel, _] =
            shape4("init_conv.weight").ok_or_else(|| unknown("init_conv.weight"))?;
        let [out_channels, ..] =
            shape4("final_conv.weight").ok_or_else(|| unknown("final_conv.weight"))?;
        let depth = (0..)
            .take_while(|i| ckpt.contains(&format!("downs.{i}.0.block1.proj.weight")))
            .count();
        if depth == 0 {
            return Err(unknown("downs.0.0.block1.proj.weight"));
        }
        let mut channel_mults = Vec::with_capacity(depth);
        let mut level_attention = Vec::with_capacity(depth);
        for i in 0..depth {
            let down = format!("downs.{i}.3.weight");
            let [cout, ..] = shape4(&down).ok_or_else(|| unknown(&down))?;
            if cout % nf != 0 {
                return Err(Error::config(format!(
                    "`{down}` has {cout} output channels, not a multiple of nf = {nf}"
                )));
            }
            channel_mults.push(cout / nf);
            level_attention.push(attention_kind(ckpt, &format!("downs.{i}.2.fn.fn"))?);
        }
        let mid_attention = attention_kind(ckpt, "mid_attn.fn.fn")?;
        // The head count is not visible in any shape; upstream fixes it at 4 (and the head
        // width at 32, which is all a network of spatial transformers alone can say).
        let heads = 4;
        let qkv = (0..depth)
            .map(|i| format!("downs.{i}.2.fn.fn.to_qkv.weight"))
            .chain(["mid_attn.fn.fn.to_qkv.weight".to_owned()])
            .find_map(|name| shape4(&name))
            .map_or(3 * heads * 32, |[qkv, ..]| qkv);
        // The context width: the cross-attention's key projection or the prompt path's input.
        let transformer = (0..depth)
            .map(|i| format!("downs.{i}.2.fn.fn"))
            .chain(["mid_attn.fn.fn".to_owned()])
            .find(|p| ckpt.contains(&format!("{p}.proj_in.weight")));
        let cross_dim = transformer.and_then(|p| {
            ckpt.shape(&format!("{p}.transformer_blocks.0.attn2.to_k.weight"))
                .and_then(|s| s.get(1).copied())
        });
        let degradation_prompt = ckpt.contains("prompt");
        let prompt_dim = ckpt
            .shape("text_mlp.0.weight")
            .and_then(|s| s.get(1).copied());
        if let (Some(a), Some(b)) = (cross_dim, prompt_dim)
            && a != b
        {
            return Err(Error::config(format!(
                "the cross-attention takes {a}-wide contexts but the prompt path {b}-wide \
                     ones"
            )));
        }
        // The stem sees `cat(x_t − μ, μ)` (2·in_nc channels) in every conditional module; the
        // unconditional one (denoising-sde) sees `x_t` and has full attention in the middle.
        let conditional =
            cin % 2 == 0 && (cin == 2 * out_channels || mid_attention != Attention::Full);
        let in_channels = if conditional { cin / 2 } else { cin };
        let config = Self {
            in_channels,
            out_channels,
            nf,
            channel_mults,
            conditional,
            stem_kernel,
            level_attention,
            mid_attention,
            heads,
            head_dim: qkv / 3 / heads,
            context_dim: cross_dim.or(prompt_dim),
            degradation_prompt,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration for values upstream cannot build.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.nf < 4 || !self.nf.is_multiple_of(2) {
            return Err(Error::config(format!(
                "nf = {} must be even and at least 4 (the time embedding has nf/2 − 1 > 0 \
                 frequency steps)",
                self.nf
            )));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config("in/out channels must be at least 1"));
        }
        if self.channel_mults.is_empty() || self.channel_mults.contains(&0) {
            return Err(Error::config(format!(
                "channel multipliers {:?} must be non-empty and positive",
                self.channel_mults
            )));
        }
        if self.level_attention.len() != self.channel_mults.len() {
            return Err(Error::config(format!(
                "{} level attention kinds for {} levels",
                self.level_attention.len(),
                self.channel_mults.len()
            )));
        }
        if self.heads == 0 || self.head_dim == 0 || self.stem_kernel.is_multiple_of(2) {
            return Err(Error::config(
                "heads and head_dim must be positive and the stem kernel odd",
            ));
        }
        if self.context_dim == Some(0) {
            return Err(Error::config(
                "context_dim = 0; use None for a network without contexts",
            ));
        }
        if (self.uses_image_context() || self.degradation_prompt) && self.context_dim.is_none() {
            return Err(Error::config(
                "spatial transformer blocks and the degradation prompt need a context_dim",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for UNetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConditionalUNet in_nc={} out_nc={} nf={} ch_mult={:?}{}{}",
            self.in_channels,
            self.out_channels,
            self.nf,
            self.channel_mults,
            if self.conditional {
                ""
            } else {
                " unconditional"
            },
            match self.mid_attention {
                Attention::Full => " mid_attn=full",
                Attention::Transformer => " image_context",
                Attention::Linear => "",
            }
        )?;
        if self.degradation_prompt {
            f.write_str(" degra_context")?;
        }
        match self.context_dim {
            Some(d) => write!(f, " context_dim={d}"),
            None => Ok(()),
        }
    }
}

fn attention_kind(ckpt: &Checkpoint, prefix: &str) -> Result<Attention> {
    if ckpt.contains(&format!("{prefix}.proj_in.weight")) {
        Ok(Attention::Transformer)
    } else if ckpt.contains(&format!("{prefix}.to_out.1.g")) {
        Ok(Attention::Linear)
    } else if ckpt.contains(&format!("{prefix}.to_out.weight")) {
        Ok(Attention::Full)
    } else {
        Err(Error::UnknownArchitecture {
            path: ckpt.origin().to_owned(),
            reason: format!(
                "the attention block `{prefix}` has none of its tensors (`{prefix}.to_out.*` or \
                 `{prefix}.proj_in.*`): the checkpoint is incomplete (export the whole \
                 state_dict again) or is not an IR-SDE / DA-CLIP U-Net"
            ),
        })
    }
}

/// Residual block with a time scale-shift (`ResBlock` upstream).
#[derive(Debug, Clone)]
struct ResBlock {
    mlp: Linear,
    conv1: Conv,
    conv2: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    fn new(w: &Weights, p: &str, cin: usize, cout: usize, time_dim: usize) -> Result<Self> {
        Ok(Self {
            mlp: Linear::new(w, &format!("{p}.mlp.1"), time_dim, 2 * cout)?,
            conv1: Conv::new(
                w,
                &format!("{p}.block1.proj"),
                ConvSpec::same(cin, cout, 3, false),
            )?,
            conv2: Conv::new(
                w,
                &format!("{p}.block2.proj"),
                ConvSpec::same(cout, cout, 3, false),
            )?,
            skip: if cin != cout {
                Some(Conv::new(
                    w,
                    &format!("{p}.res_conv"),
                    ConvSpec::same(cin, cout, 1, false),
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let ss = chunks(&self.mlp.forward(&temb.silu()?)?, 2)?;
        let skip = match &self.skip {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let h = silu_modulated(&self.conv1.forward(x)?, &ss[0], &ss[1])?;
        silu_plus(&self.conv2.forward(&h)?, &skip)
    }
}

/// `x + attention(norm(x))` (`Residual(PreNorm(dim, LinearAttention | Attention |
/// SpatialTransformer))`).
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: ChannelNorm,
    body: AttentionBody,
}

#[derive(Debug, Clone)]
enum AttentionBody {
    /// Linear or full attention over pixels from one packed `q, k, v` projection.
    Pixels {
        kind: Attention,
        to_qkv: Conv,
        to_out: Conv,
        out_norm: Option<ChannelNorm>,
        heads: usize,
        head_dim: usize,
    },
    Transformer(Box<SpatialTransformer>),
}

impl AttentionBlock {
    fn new(w: &Weights, p: &str, dim: usize, kind: Attention, c: &UNetConfig) -> Result<Self> {
        let hidden = c.heads * c.head_dim;
        let norm = ChannelNorm::new(w, &format!("{p}.norm"), dim)?;
        let pixels = |to_out: &str, out_norm: bool| -> Result<AttentionBody> {
            Ok(AttentionBody::Pixels {
                kind,
                to_qkv: Conv::new(
                    w,
                    &format!("{p}.fn.to_qkv"),
                    ConvSpec::same(dim, 3 * hidden, 1, false),
                )?,
                to_out: Conv::new(
                    w,
                    &format!("{p}.fn.{to_out}"),
                    ConvSpec::same(hidden, dim, 1, true),
                )?,
                out_norm: if out_norm {
                    Some(ChannelNorm::new(w, &format!("{p}.fn.to_out.1"), dim)?)
                } else {
                    None
                },
                heads: c.heads,
                head_dim: c.head_dim,
            })
        };
        let body = match kind {
            Attention::Linear => pixels("to_out.0", true)?,
            Attention::Full => pixels("to_out", false)?,
            Attention::Transformer => {
                let context_dim = c.context_dim.ok_or_else(|| {
                    Error::config("a spatial transformer block needs a context_dim")
                })?;
                AttentionBody::Transformer(Box::new(SpatialTransformer::new(
                    w,
                    &format!("{p}.fn"),
                    dim,
                    context_dim,
                )?))
            }
        };
        Ok(Self { norm, body })
    }

    /// The block's constant cross-attention term for one image context per image, if it has
    /// a cross-attention.
    fn cross(&self, image_context: &Tensor) -> Result<Option<Tensor>> {
        match &self.body {
            AttentionBody::Transformer(t) => Ok(Some(t.cross(image_context)?)),
            AttentionBody::Pixels { .. } => Ok(None),
        }
    }

    fn forward(&self, x: &Tensor, cross: Option<&Tensor>, budget: usize) -> Result<Tensor> {
        let normed = self.norm.forward(x)?;
        let out = match &self.body {
            AttentionBody::Transformer(t) => {
                let cross = cross.ok_or_else(|| {
                    Error::input(
                        "this denoiser's spatial transformers need an image context: give one \
                         to ConditionalUNet::condition (or use DaClip, which computes it)",
                    )
                })?;
                t.forward(&normed, cross, budget)?
            }
            AttentionBody::Pixels {
                kind,
                to_qkv,
                to_out,
                out_norm,
                heads,
                head_dim,
            } => {
                let (b, _, h, w) = x.dims4()?;
                let (heads, head_dim) = (*heads, *head_dim);
                let n = h * w;
                let qkv = to_qkv.forward(&normed)?;
                let split = |i: usize| -> Result<Tensor> {
                    let hidden = heads * head_dim;
                    Ok(qkv
                        .narrow(1, i * hidden, hidden)?
                        .reshape((b, heads, head_dim, n))?)
                };
                let (q, k, v) = (split(0)?, split(1)?, split(2)?);
                let scale = (head_dim as f64).powf(-0.5);
                let out = match kind {
                    Attention::Linear => {
                        let q = softmax(&q, 2)?;
                        let k = softmax(&k, 3)?;
                        // context[d, e] = Σₙ k[d, n] v[e, n] / N; out[e, n] = Σ_d context[d, e]
                        // q[d, n] · scale. Both factors scale the small [d, d] context, not the
                        // image-sized q and v (two passes fewer, the same products).
                        let context = (k.matmul(&v.t()?)? * (scale / n as f64))?;
                        context.t()?.matmul(&q)?
                    }
                    _ => {
                        // Pixels as tokens: [B, heads, N, d]; out[d, i] = Σ_j attn[i, j] v[d, j].
                        let tok = |t: &Tensor| -> Result<Tensor> { Ok(t.t()?.contiguous()?) };
                        attention(&tok(&q)?, &tok(&k)?, &tok(&v)?, scale, budget)?.t()?
                    }
                };
                let out = out.reshape((b, heads * head_dim, h, w))?;
                let mut out = to_out.forward(&out)?;
                if let Some(norm) = out_norm {
                    out = norm.forward(&out)?;
                }
                out
            }
        };
        Ok((out + x)?)
    }
}

#[derive(Debug, Clone)]
struct Level {
    block1: ResBlock,
    block2: ResBlock,
    attn: AttentionBlock,
    /// Down: strided 4 × 4 (or 3 × 3 at the last level). Up: nearest ×2 then 3 × 3 (or a
    /// plain 3 × 3 at the first level).
    resample: Conv,
    scale: bool,
}

/// IR-SDE's `ConditionalUNet`; predicts the noise. A [`ScoreModel`](mrsampler::ScoreModel)
/// on `[B, C, H, W]` tensors of any size (through [`Network`](crate::Network) or directly).
#[derive(Debug, Clone)]
pub struct ConditionalUNet {
    config: UNetConfig,
    dtype: DType,
    device: Device,
    params: usize,
    stem: Conv,
    time1: Linear,
    time2: Linear,
    downs: Vec<Level>,
    mid1: ResBlock,
    mid_attn: AttentionBlock,
    mid2: ResBlock,
    ups: Vec<Level>,
    final_block: ResBlock,
    final_conv: Conv,
    prompt: Option<PromptPath>,
    attention_budget: usize,
}

/// DA-CLIP's degradation prompt path: `prompt_mlp(softmax(text_mlp(c)) · prompt)`, added to
/// the time embedding.
#[derive(Debug, Clone)]
struct PromptPath {
    text1: Linear,
    text2: Linear,
    prompt: Tensor,
    prompt_mlp: Linear,
}

impl PromptPath {
    fn new(w: &Weights, context_dim: usize, time_dim: usize) -> Result<Self> {
        Ok(Self {
            text1: Linear::new(w, "text_mlp.0", context_dim, time_dim)?,
            text2: Linear::new(w, "text_mlp.2", time_dim, time_dim)?,
            prompt: w.take("prompt", &[1, time_dim])?,
            prompt_mlp: Linear::new(w, "prompt_mlp", time_dim, time_dim)?,
        })
    }

    fn forward(&self, degradation_context: &Tensor) -> Result<Tensor> {
        let logits = self
            .text2
            .forward(&self.text1.forward(degradation_context)?.silu()?)?;
        let weighted = softmax(&logits, 1)?.broadcast_mul(&self.prompt)?;
        self.prompt_mlp.forward(&weighted)
    }
}

/// What a context-taking U-Net (DA-CLIP's) computes once per image from its contexts: the
/// prompt embedding added to the time embedding and each spatial transformer's
/// cross-attention term. Made by [`ConditionalUNet::condition`], used by
/// [`ConditionalUNet::forward_conditioned`] at every step.
#[derive(Debug, Clone, Default)]
pub struct Conditioning {
    /// `[B, time_dim]`, or `None` without a degradation context.
    prompt: Option<Tensor>,
    /// One entry per attention block (down levels, middle, up levels): `[B, 1, C]` for a
    /// spatial transformer given an image context.
    cross: Vec<Option<Tensor>>,
    /// The batch the contexts were given for.
    batch: usize,
}

impl Conditioning {
    /// No contexts: the prompt path is skipped (as upstream's network skips it without a
    /// degradation context); a network with spatial transformers refuses to run without an
    /// image context.
    pub fn none() -> Self {
        Self::default()
    }

    /// The batch size the contexts were given for (`0` for [`none`](Self::none)).
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn cross(&self, i: usize) -> Option<&Tensor> {
        self.cross.get(i).and_then(Option::as_ref)
    }
}

/// Default bound on the bytes of attention scores alive at once (see
/// [`ConditionalUNet::set_attention_budget`]).
pub const DEFAULT_ATTENTION_BUDGET: usize = 128 << 20;

impl ConditionalUNet {
    /// Builds the network from a checkpoint, checking every tensor's shape against `config`
    /// and that the checkpoint holds nothing else.
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] or [`Error::UnexpectedTensor`]
    /// naming the first tensor that does not fit; [`Error::InvalidConfig`].
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        config: UNetConfig,
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
    pub fn random(config: UNetConfig, device: &Device, dtype: DType) -> Result<Self> {
        config.validate()?;
        let w = Weights::random(device, dtype, config.to_string());
        Self::build(w, config, dtype)
    }

    fn build(w: Weights, c: UNetConfig, dtype: DType) -> Result<Self> {
        let nf = c.nf;
        let time_dim = 4 * nf;
        let cin = if c.conditional {
            2 * c.in_channels
        } else {
            c.in_channels
        };
        let stem = Conv::new(
            &w,
            "init_conv",
            ConvSpec::same(cin, nf, c.stem_kernel, false),
        )?;
        let time1 = Linear::new(&w, "time_mlp.1", nf, time_dim)?;
        let time2 = Linear::new(&w, "time_mlp.3", time_dim, time_dim)?;
        let dims = c.dims();
        let depth = c.depth();
        let mut downs = Vec::with_capacity(depth);
        for i in 0..depth {
            let (din, dout) = (dims[i], dims[i + 1]);
            let p = format!("downs.{i}");
            let last = i + 1 == depth;
            downs.push(Level {
                block1: ResBlock::new(&w, &format!("{p}.0"), din, din, time_dim)?,
                block2: ResBlock::new(&w, &format!("{p}.1"), din, din, time_dim)?,
                attn: AttentionBlock::new(&w, &format!("{p}.2.fn"), din, c.level_attention[i], &c)?,
                resample: if last {
                    Conv::new(&w, &format!("{p}.3"), ConvSpec::same(din, dout, 3, false))?
                } else {
                    Conv::new(
                        &w,
                        &format!("{p}.3"),
                        ConvSpec {
                            cin: din,
                            cout: dout,
                            kernel: 4,
                            stride: 2,
                            padding: 1,
                            groups: 1,
                            bias: true,
                        },
                    )?
                },
                scale: !last,
            });
        }
        let mid = dims[depth];
        let mid1 = ResBlock::new(&w, "mid_block1", mid, mid, time_dim)?;
        let mid_attn = AttentionBlock::new(&w, "mid_attn.fn", mid, c.mid_attention, &c)?;
        let mid2 = ResBlock::new(&w, "mid_block2", mid, mid, time_dim)?;
        let mut ups = Vec::with_capacity(depth);
        for (j, i) in (0..depth).rev().enumerate() {
            let (din, dout) = (dims[i], dims[i + 1]);
            let p = format!("ups.{j}");
            let first = i == 0;
            ups.push(Level {
                block1: ResBlock::new(&w, &format!("{p}.0"), dout + din, dout, time_dim)?,
                block2: ResBlock::new(&w, &format!("{p}.1"), dout + din, dout, time_dim)?,
                attn: AttentionBlock::new(
                    &w,
                    &format!("{p}.2.fn"),
                    dout,
                    c.level_attention[i],
                    &c,
                )?,
                resample: if first {
                    Conv::new(&w, &format!("{p}.3"), ConvSpec::same(dout, din, 3, false))?
                } else {
                    Conv::new(&w, &format!("{p}.3.1"), ConvSpec::same(dout, din, 3, true))?
                },
                scale: !first,
            });
        }
        let final_block = ResBlock::new(&w, "final_res_block", 2 * nf, nf, time_dim)?;
        let final_conv = Conv::new(
            &w,
            "final_conv",
            ConvSpec::same(nf, c.out_channels, 3, true),
        )?;
        let prompt = match (c.degradation_prompt, c.context_dim) {
            (true, Some(d)) => Some(PromptPath::new(&w, d, time_dim)?),
            _ => None,
        };
        let device = w.device().clone();
        let params = w.finish()?;
        Ok(Self {
            prompt,
            attention_budget: DEFAULT_ATTENTION_BUDGET,
            config: c,
            dtype,
            device,
            params,
            stem,
            time1,
            time2,
            downs,
            mid1,
            mid_attn,
            mid2,
            ups,
            final_block,
            final_conv,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
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

    /// Bounds the bytes of attention scores alive at once in the pixel self-attentions
    /// (spatial transformers and full attention), which are quadratic in the pixel count:
    /// they are computed in blocks of queries, exactly. Default
    /// [`DEFAULT_ATTENTION_BUDGET`] (128 MiB). It applies off the CPU and to dtypes other
    /// than f32; the CPU's f32 attention forms no score matrix (each thread holds four
    /// queries' scores at a time) and needs no bound.
    pub fn set_attention_budget(&mut self, bytes: usize) {
        self.attention_budget = bytes.max(1);
    }

    /// The per-image work of the contexts: `image_context` (`[B, context_dim]`, the
    /// spatial transformers' cross-attention) and `degradation_context` (`[B, context_dim]`,
    /// the prompt path). The degradation context may be `None` (the prompt path is then
    /// skipped, as upstream skips it); the image context is needed by a network with spatial
    /// transformers. A network without contexts takes neither.
    ///
    /// # Errors
    /// [`Error::Input`] if a context is given that the network does not take, or has the
    /// wrong shape, or the two batches differ.
    pub fn condition(
        &self,
        image_context: Option<&Tensor>,
        degradation_context: Option<&Tensor>,
    ) -> Result<Conditioning> {
        let width = self.config.context_dim;
        let check = |what: &str, t: &Tensor| -> Result<usize> {
            let Some(d) = width else {
                return Err(Error::input(format!(
                    "this {} takes no contexts but was given a {what} context",
                    self.config
                )));
            };
            match t.dims() {
                [b, n] if *n == d && *b > 0 => Ok(*b),
                other => Err(Error::input(format!(
                    "the {what} context must be [batch, {d}], got {other:?}"
                ))),
            }
        };
        let mut batch = 0;
        for (what, t) in [
            ("image", image_context),
            ("degradation", degradation_context),
        ] {
            if let Some(t) = t {
                let b = check(what, t)?;
                if batch != 0 && b != batch {
                    return Err(Error::input(format!(
                        "the image context has batch {batch} but the degradation context {b}"
                    )));
                }
                batch = b;
            }
        }
        let prompt = match (&self.prompt, degradation_context) {
            (Some(p), Some(d)) => Some(p.forward(&d.to_dtype(self.dtype)?)?),
            _ => None,
        };
        let cross = match image_context {
            Some(ic) => {
                let ic = ic.to_dtype(self.dtype)?;
                self.attention_blocks()
                    .map(|a| a.cross(&ic))
                    .collect::<Result<_>>()?
            }
            None => Vec::new(),
        };
        Ok(Conditioning {
            prompt,
            cross,
            batch,
        })
    }

    fn attention_blocks(&self) -> impl Iterator<Item = &AttentionBlock> {
        self.downs
            .iter()
            .map(|l| &l.attn)
            .chain([&self.mid_attn])
            .chain(self.ups.iter().map(|l| &l.attn))
    }

    /// The noise prediction for states `xt` and means `mu` (`[B, C, H, W]`, any `H, W`) at
    /// one time per sample (`t.len() == B`, or one time for all), without contexts.
    ///
    /// # Errors
    /// [`Error::Input`] for shapes the network cannot take; [`Error::Candle`].
    pub fn forward(&self, xt: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        self.forward_conditioned(xt, mu, t, &Conditioning::none())
    }

    /// [`forward`](Self::forward) with the contexts of [`condition`](Self::condition) (their
    /// batch must be the input's, or 1 for all samples).
    ///
    /// # Errors
    /// As [`forward`](Self::forward); [`Error::Input`] if the batches differ.
    pub fn forward_conditioned(
        &self,
        xt: &Tensor,
        mu: &Tensor,
        t: &[f32],
        cond: &Conditioning,
    ) -> Result<Tensor> {
        crate::layers::on_pool(&self.device, || {
            self.forward_conditioned_here(xt, mu, t, cond)
        })
    }

    /// The body of the public entry point, on the thread that runs it.
    fn forward_conditioned_here(
        &self,
        xt: &Tensor,
        mu: &Tensor,
        t: &[f32],
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let c = &self.config;
        let NetworkInput { x, times, h, w } =
            network_input(xt, mu, c.in_channels, c.conditional, t)?;
        let b = x.dim(0)?;
        if cond.batch > 1 && cond.batch != b {
            return Err(Error::input(format!(
                "contexts were given for a batch of {} but the input has {b} samples",
                cond.batch
            )));
        }
        let m = 1usize << c.depth();
        let x = reflect_pad(&x, pad_to(h, m), pad_to(w, m))?;
        let temb = time_embedding(&times, c.nf, self.dtype, &self.device)?;
        let mut temb = self.time2.forward(&self.time1.forward_gelu(&temb)?)?;
        if let Some(p) = &cond.prompt {
            temb = temb.broadcast_add(p)?;
        }
        let budget = self.attention_budget;
        let depth = self.downs.len();

        let mut x = self.stem.forward(&x)?;
        let stem_out = x.clone();
        let mut skips = Vec::with_capacity(2 * self.downs.len());
        for (i, level) in self.downs.iter().enumerate() {
            x = level.block1.forward(&x, &temb)?;
            skips.push(x.clone());
            x = level.block2.forward(&x, &temb)?;
            x = level.attn.forward(&x, cond.cross(i), budget)?;
            skips.push(x.clone());
            x = level.resample.forward(&x)?;
        }
        x = self.mid1.forward(&x, &temb)?;
        x = self.mid_attn.forward(&x, cond.cross(depth), budget)?;
        x = self.mid2.forward(&x, &temb)?;
        for (j, level) in self.ups.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| Error::config("skip stack"))?;
            x = level
                .block1
                .forward(&Tensor::cat(&[&x, &skip], 1)?, &temb)?;
            let skip = skips.pop().ok_or_else(|| Error::config("skip stack"))?;
            x = level
                .block2
                .forward(&Tensor::cat(&[&x, &skip], 1)?, &temb)?;
            x = level.attn.forward(&x, cond.cross(depth + 1 + j), budget)?;
            if level.scale {
                let (_, _, hh, ww) = x.dims4()?;
                x = x.upsample_nearest2d(2 * hh, 2 * ww)?;
            }
            x = level.resample.forward(&x)?;
        }
        x = self
            .final_block
            .forward(&Tensor::cat(&[&x, &stem_out], 1)?, &temb)?;
        let x = self.final_conv.forward(&x)?;
        Ok(x.narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?)
    }
}
