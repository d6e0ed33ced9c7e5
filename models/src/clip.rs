//! DA-CLIP's image encoder: a CLIP vision transformer (open_clip's `VisionTransformer`, ViT-B/32
//! in the release) and its controller, a second copy of the tower whose per-layer outputs
//! pass through linear layers (zero-initialised in training) and are added into the main
//! tower, the controller's last layer into the main tower's first.
//!
//! [`DaClipEncoder::encode`] returns `(image_context, degradation_context)`: the main tower's
//! pooled, projected output and the controller's, each `[B, output_dim]` and not normalised,
//! as upstream's restoration code passes them to the denoiser.
//!
//! Checkpoints are DA-CLIP training checkpoints as released (an open_clip state dict, wrapped
//! in `state_dict`, `module.`-prefixed): the main tower is read from `clip.visual.*` (or its
//! alias `visual.*`), the controller from `visual_control.*`; the text tower and the training
//! state are ignored. Written here rather than taken from `candle-transformers`: its CLIP
//! vision model reads Hugging Face's split `q/k/v` names and runs its layers as one stack,
//! with no way to add a controller's output after each layer.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::blocks::{Conv, ConvSpec, LayerNorm, Linear};
use crate::checkpoint::{Checkpoint, Weights};
use crate::error::{Error, Result};
use crate::kernels;

/// CLIP's image normalisation: per-channel mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's image normalisation: per-channel standard deviation (RGB).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Width of one attention head in open_clip's vision towers (`head_width`).
const HEAD_WIDTH: usize = 64;

/// The shape of a CLIP vision tower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipVisionConfig {
    /// Input side in pixels (224).
    pub image_size: usize,
    /// Patch side in pixels (32).
    pub patch_size: usize,
    /// Token width (768).
    pub width: usize,
    /// Transformer layers (12).
    pub layers: usize,
    /// Attention heads (12: `width / 64`).
    pub heads: usize,
    /// Hidden width of each layer's MLP (3072).
    pub mlp_width: usize,
    /// Width of the projected output, the context width of the denoiser (512).
    pub output_dim: usize,
}

impl ClipVisionConfig {
    /// DA-CLIP's released tower, `daclip_ViT-B-32`.
    pub fn vit_b_32() -> Self {
        Self {
            image_size: 224,
            patch_size: 32,
            width: 768,
            layers: 12,
            heads: 12,
            mlp_width: 3072,
            output_dim: 512,
        }
    }

    /// Tokens per image: one per patch plus the class token.
    pub fn tokens(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g + 1
    }

    /// Infers the configuration from the main tower under `prefix` (e.g. `clip.visual`);
    /// heads are `width / 64` (open_clip's head width, not visible in shapes).
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`] if a tensor the tower needs is missing.
    pub fn infer(ckpt: &Checkpoint, prefix: &str) -> Result<Self> {
        let shape = |name: &str| -> Result<Vec<usize>> {
            ckpt.shape(&format!("{prefix}.{name}"))
                .map(<[usize]>::to_vec)
                .ok_or_else(|| Error::UnknownArchitecture {
                    path: ckpt.origin().to_owned(),
                    reason: format!("`{prefix}.{name}` not found (not a CLIP vision tower)"),
                })
        };
        let rank = |name: &str, r: usize| -> Result<Vec<usize>> {
            let s = shape(name)?;
            if s.len() == r {
                Ok(s)
            } else {
                Err(Error::config(format!(
                    "`{prefix}.{name}` has shape {s:?}; a CLIP vision tower's is {r}-D"
                )))
            }
        };
        let conv = rank("conv1.weight", 4)?;
        let pos = rank("positional_embedding", 2)?;
        let proj = rank("proj", 2)?;
        let fc = rank("transformer.resblocks.0.mlp.c_fc.weight", 2)?;
        let (width, patch_size) = (conv[0], conv[2]);
        let grid = ((pos[0].saturating_sub(1)) as f64).sqrt().round() as usize;
        let layers = (0..)
            .take_while(|i| {
                ckpt.contains(&format!("{prefix}.transformer.resblocks.{i}.ln_1.weight"))
            })
            .count();
        let config = Self {
            image_size: grid * patch_size,
            patch_size,
            width,
            layers,
            heads: (width / HEAD_WIDTH).max(1),
            mlp_width: fc[0],
            output_dim: proj[1],
        };
        config.validate()?;
        if config.tokens() != pos[0] {
            return Err(Error::config(format!(
                "`{prefix}.positional_embedding` has {} rows, not a square grid plus one",
                pos[0]
            )));
        }
        Ok(config)
    }

    /// Checks for shapes the tower cannot have.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0
            || self.image_size < self.patch_size
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return Err(Error::config(format!(
                "image size {} must be a positive multiple of the patch size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.layers == 0 || self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return Err(Error::config(format!(
                "{} layers of width {} in {} heads: need at least one layer and heads that \
                 divide the width",
                self.layers, self.width, self.heads
            )));
        }
        Ok(())
    }
}

/// One pre-norm transformer layer (`ResidualAttentionBlock`, packed `in_proj`).
#[derive(Debug, Clone)]
struct Layer {
    ln_1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    proj: Linear,
    heads: usize,
}

impl Layer {
    fn new(w: &Weights, p: &str, c: &ClipVisionConfig) -> Result<Self> {
        let d = c.width;
        Ok(Self {
            ln_1: LayerNorm::new(w, &format!("{p}.ln_1"), d, 1e-5)?,
            qkv: Linear::from_parts(
                w.take(&format!("{p}.attn.in_proj_weight"), &[3 * d, d])?,
                Some(w.take(&format!("{p}.attn.in_proj_bias"), &[3 * d])?),
            )?
            .packed()?,
            out: Linear::new(w, &format!("{p}.attn.out_proj"), d, d)?.packed()?,
            ln_2: LayerNorm::new(w, &format!("{p}.ln_2"), d, 1e-5)?,
            fc: Linear::new(w, &format!("{p}.mlp.c_fc"), d, c.mlp_width)?.packed()?,
            proj: Linear::new(w, &format!("{p}.mlp.c_proj"), c.mlp_width, d)?.packed()?,
            heads: c.heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_first(x, x.dim(1)?)
    }

    /// The layer's output for the first `rows` tokens, `[B, rows, width]`, the keys and values
    /// still from every token. A tower's last layer is needed for its class token only (the
    /// pooling reads no other), which spares 49 of 50 rows of its attention output and MLP
    /// products: about 3 % of the encoder's multiplications.
    fn forward_first(&self, x: &Tensor, rows: usize) -> Result<Tensor> {
        let hd = x.dim(2)? / self.heads;
        let qkv = self.qkv.forward(&self.ln_1.forward(x)?)?;
        let scale = (hd as f64).powf(-0.5);
        let a = kernels::packed_qkv_attention(&qkv, self.heads, rows, scale)?;
        let x = (self.out.forward(&a)? + x.narrow(1, 0, rows)?)?;
        let h = self.fc.forward_gelu(&self.ln_2.forward(&x)?)?;
        Ok((self.proj.forward(&h)? + x)?)
    }
}

/// One vision tower: patch embedding, class token, positions, `ln_pre`, the layers, and the
/// pooled class token through `ln_post` and `proj`.
#[derive(Debug, Clone)]
struct Tower {
    conv1: Conv,
    class_embedding: Tensor,
    positional: Tensor,
    ln_pre: LayerNorm,
    layers: Vec<Layer>,
    ln_post: LayerNorm,
    proj: Tensor,
}

impl Tower {
    /// The tower at `p`, its layers at `layers_at` (`{p}.transformer` in a plain tower,
    /// `{p}.transformer.transformer` in the controller).
    fn new(w: &Weights, p: &str, layers_at: &str, c: &ClipVisionConfig) -> Result<Self> {
        Ok(Self {
            conv1: Conv::new(
                w,
                &format!("{p}.conv1"),
                ConvSpec {
                    cin: 3,
                    cout: c.width,
                    kernel: c.patch_size,
                    stride: c.patch_size,
                    padding: 0,
                    groups: 1,
                    bias: false,
                },
            )?,
            class_embedding: w.take(&format!("{p}.class_embedding"), &[c.width])?,
            positional: w.take(&format!("{p}.positional_embedding"), &[c.tokens(), c.width])?,
            ln_pre: LayerNorm::new(w, &format!("{p}.ln_pre"), c.width, 1e-5)?,
            layers: (0..c.layers)
                .map(|i| Layer::new(w, &format!("{layers_at}.resblocks.{i}"), c))
                .collect::<Result<_>>()?,
            ln_post: LayerNorm::new(w, &format!("{p}.ln_post"), c.width, 1e-5)?,
            proj: w.take(&format!("{p}.proj"), &[c.width, c.output_dim])?,
        })
    }

    /// Tokens after `ln_pre`: `[B, tokens, width]`.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = self.conv1.forward(pixels)?;
        let (b, width, gh, gw) = patches.dims4()?;
        let patches = patches
            .reshape((b, width, gh * gw))?
            .transpose(1, 2)?
            .contiguous()?;
        let class = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?
            .contiguous()?;
        let x = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.positional)?;
        self.ln_pre.forward(&x)
    }

    /// `ln_post(x[:, 0]) · proj`.
    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        let class = x.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.ln_post.forward(&class)?.matmul(&self.proj)?)
    }
}

/// The contexts DA-CLIP's encoder gives the denoiser, `[B, output_dim]` each.
#[derive(Debug, Clone)]
pub struct Contexts {
    /// The main tower's embedding (the spatial transformers' cross-attention context).
    pub image: Tensor,
    /// The controller's embedding (the prompt path's degradation context).
    pub degradation: Tensor,
}

/// DA-CLIP's image encoder: the CLIP vision tower with its controller.
#[derive(Debug, Clone)]
pub struct DaClipEncoder {
    config: ClipVisionConfig,
    main: Tower,
    control: Tower,
    zero: Vec<Linear>,
    device: Device,
    dtype: DType,
    params: usize,
}

/// Prefixes of the parts of a DA-CLIP checkpoint the encoder reads; everything else (the
/// text tower, `logit_scale`) is not needed for inference.
const MAIN: [&str; 2] = ["clip.visual", "visual"];

/// The prefix the checkpoint's main tower is stored under, if it has one.
fn main_tower(ckpt: &Checkpoint) -> Option<&'static str> {
    MAIN.into_iter()
        .find(|p| ckpt.contains(&format!("{p}.conv1.weight")))
}
const CONTROL: &str = "visual_control";

/// Whether `name` belongs to the main tower under the prefix `main` or to the controller.
fn is_part(main: &str, name: &str) -> bool {
    [main, CONTROL]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

impl DaClipEncoder {
    /// Reads a DA-CLIP checkpoint (`.pth` as released, or converted safetensors).
    ///
    /// # Errors
    /// The errors of [`Checkpoint::load`] and [`from_checkpoint`](Self::from_checkpoint).
    pub fn load(path: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Self> {
        // Only the towers: a training checkpoint's text tower is a quarter of its bytes.
        let ckpt = Checkpoint::load_matching(path, |name| MAIN.iter().any(|m| is_part(m, name)))?;
        let (main, config) = Self::identify(&ckpt)?;
        // One name per tensor: the main tower's alias shares its storages and would keep
        // them alive after the builder has dropped the other name.
        let part = ckpt.retain(|name| is_part(main, name));
        drop(ckpt);
        let w = Weights::owned(part, device, dtype, format!("DA-CLIP encoder {config:?}"));
        Self::build(w, config, main, |name| is_part(main, name))
    }

    /// Builds the encoder from a checkpoint, the configuration inferred from the shapes.
    ///
    /// # Errors
    /// [`Error::UnknownArchitecture`] if the checkpoint has no vision tower and controller;
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`], [`Error::UnexpectedTensor`] (a
    /// tensor under the towers' prefixes that the encoder does not use).
    pub fn from_checkpoint(ckpt: &Checkpoint, device: &Device, dtype: DType) -> Result<Self> {
        let (_, config) = Self::identify(ckpt)?;
        Self::from_checkpoint_with(ckpt, config, device, dtype)
    }

    /// The main tower's prefix and the configuration its shapes give, for a checkpoint that
    /// holds a vision tower and DA-CLIP's controller.
    fn identify(ckpt: &Checkpoint) -> Result<(&'static str, ClipVisionConfig)> {
        let main = main_tower(ckpt).ok_or_else(|| Error::UnknownArchitecture {
            path: ckpt.origin().to_owned(),
            reason: "no `clip.visual.conv1.weight` or `visual.conv1.weight`: not a DA-CLIP \
                         checkpoint"
                .into(),
        })?;
        if !ckpt.contains(&format!("{CONTROL}.conv1.weight")) {
            return Err(Error::UnknownArchitecture {
                path: ckpt.origin().to_owned(),
                reason: "no `visual_control.*` tensors: a CLIP checkpoint without DA-CLIP's \
                         controller"
                    .into(),
            });
        }
        Ok((main, ClipVisionConfig::infer(ckpt, main)?))
    }

    /// Builds the encoder from a checkpoint with a stated configuration (for towers whose
    /// head count is not open_clip's `width / 64`, which shapes cannot tell).
    ///
    /// # Errors
    /// As [`from_checkpoint`](Self::from_checkpoint); [`Error::InvalidConfig`].
    pub fn from_checkpoint_with(
        ckpt: &Checkpoint,
        config: ClipVisionConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let main = main_tower(ckpt).unwrap_or(MAIN[0]);
        let w = Weights::new(ckpt, device, dtype, format!("DA-CLIP encoder {config:?}"));
        Self::build(w, config, main, |name| is_part(main, name))
    }

    /// The part of a DA-CLIP checkpoint the encoder reads (the main tower under one name,
    /// the controller), checked by building the encoder from it: what the conversion command
    /// stores, without the text tower, the aliases and the training state.
    ///
    /// # Errors
    /// As [`from_checkpoint`](Self::from_checkpoint).
    pub fn compact(ckpt: &Checkpoint) -> Result<Checkpoint> {
        let main = main_tower(ckpt).unwrap_or(MAIN[0]);
        let part = ckpt.retain(|name| is_part(main, name));
        Self::from_checkpoint(&part, &Device::Cpu, DType::F32)?;
        Ok(part)
    }

    /// The encoder with random weights (parameter counts, benchmarks).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Candle`].
    pub fn random(config: ClipVisionConfig, device: &Device, dtype: DType) -> Result<Self> {
        config.validate()?;
        let w = Weights::random(device, dtype, format!("DA-CLIP encoder {config:?}"));
        Self::build(w, config, MAIN[0], |_| true)
    }

    fn build(
        w: Weights,
        config: ClipVisionConfig,
        main: &str,
        owned: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let main_tower = Tower::new(&w, main, &format!("{main}.transformer"), &config)?;
        let control = Tower::new(
            &w,
            CONTROL,
            &format!("{CONTROL}.transformer.transformer"),
            &config,
        )?;
        let zero = (0..config.layers)
            .map(|i| {
                Linear::new(
                    &w,
                    &format!("{CONTROL}.transformer.zero_modules.{i}"),
                    config.width,
                    config.width,
                )?
                .packed()
            })
            .collect::<Result<_>>()?;
        let (device, dtype) = (w.device().clone(), w.dtype());
        let params = w.finish_where(owned)?;
        Ok(Self {
            config,
            main: main_tower,
            control,
            zero,
            device,
            dtype,
            params,
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// Parameters of the two towers and the controller's linear layers.
    pub fn parameter_count(&self) -> usize {
        self.params
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs both towers on CLIP-normalised pixels `[B, 3, S, S]` (`S` the configured image
    /// size; see [`preprocess`](Self::preprocess)).
    ///
    /// # Errors
    /// [`Error::Input`] for another shape; [`Error::Candle`].
    pub fn encode(&self, pixels: &Tensor) -> Result<Contexts> {
        let s = self.config.image_size;
        match pixels.dims() {
            [b, 3, h, w] if *b > 0 && *h == s && *w == s => {}
            other => {
                return Err(Error::input(format!(
                    "the encoder takes [batch, 3, {s}, {s}] pixels, got {other:?}; preprocess \
                     the image first"
                )));
            }
        }
        crate::layers::on_pool(&self.device, || self.encode_here(pixels))
    }

    fn encode_here(&self, pixels: &Tensor) -> Result<Contexts> {
        let pixels = pixels.to_dtype(self.dtype)?.to_device(&self.device)?;
        let mut c = self.control.embed(&pixels)?;
        let mut hidden = Vec::with_capacity(self.zero.len());
        for (i, (layer, zero)) in self.control.layers.iter().zip(&self.zero).enumerate() {
            c = layer.forward(&c)?;
            // The first is added to the main tower's last layer: its class token alone.
            let rows = if i == 0 { 1 } else { c.dim(1)? };
            hidden.push(zero.forward(&c.narrow(1, 0, rows)?)?);
        }
        let degradation = self.control.pool(&c)?;
        let mut x = self.main.embed(&pixels)?;
        let last = self.main.layers.len().saturating_sub(1);
        for (i, layer) in self.main.layers.iter().enumerate() {
            // The last layer for the class token alone (`Layer::forward_first`).
            x = if i == last {
                layer.forward_first(&x, 1)?
            } else {
                layer.forward(&x)?
            };
            // The controller's layers are added last-first (upstream pops its list).
            let h = hidden
                .pop()
                .ok_or_else(|| Error::config("controller and tower depths differ"))?;
            x = (x + h)?;
        }
        let image = self.main.pool(&x)?;
        Ok(Contexts {
            image: image.to_dtype(DType::F32)?,
            degradation: degradation.to_dtype(DType::F32)?,
        })
    }

    /// Upstream's preprocessing of a restoration input `[B, 3, H, W]` with values in
    /// `[0, 1]`: quantised to 8 bits (truncating, as upstream's `astype(uint8)`), the short
    /// side resized to `S` with PIL's bicubic resampling (the same 8-bit pixels), the long side
    /// to `⌊S · long / short⌋`, centre-cropped to `S × S`, scaled to `[0, 1]` and normalised
    /// with CLIP's mean and standard deviation. Returns `[B, 3, S, S]` f32.
    ///
    /// # Errors
    /// [`Error::Input`] for a shape that is not RGB images.
    pub fn preprocess(&self, image: &Tensor) -> Result<Tensor> {
        preprocess(image, self.config.image_size)
    }

    /// [`preprocess`](Self::preprocess) then [`encode`](Self::encode).
    ///
    /// # Errors
    /// As those two.
    pub fn contexts(&self, image: &Tensor) -> Result<Contexts> {
        self.encode(&self.preprocess(image)?)
    }
}

/// See [`DaClipEncoder::preprocess`].
fn preprocess(image: &Tensor, size: usize) -> Result<Tensor> {
    let (b, c, h, w) = image.dims4().map_err(|_| {
        Error::input(format!(
            "expected RGB images [batch, 3, height, width], got {:?}",
            image.dims()
        ))
    })?;
    if c != 3 || b == 0 || h == 0 || w == 0 {
        return Err(Error::input(format!(
            "expected RGB images [batch, 3, height, width], got {:?}",
            image.dims()
        )));
    }
    let (nw, nh) = if w <= h {
        (size, size * h / w)
    } else {
        (size * w / h, size)
    };
    let (nw, nh) = (nw.max(size), nh.max(size));
    let top = ((nh - size) as f64 / 2.0).round_ties_even() as u32;
    let left = ((nw - size) as f64 / 2.0).round_ties_even() as u32;
    let values = image
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .permute((0, 2, 3, 1))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w * 3;
    let mut out = Vec::with_capacity(b * 3 * size * size);
    for sample in values.chunks_exact(plane) {
        let bytes: Vec<u8> = sample
            .iter()
            .map(|v| {
                let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                (v * 255.0) as u8
            })
            .collect();
        let resized = resize_bicubic_u8(&bytes, (w, h), (nw, nh));
        let (left, top) = (left as usize, top as usize);
        for ch in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let v = f32::from(resized[((top + y) * nw + left + x) * 3 + ch]) / 255.0;
                    out.push((v - CLIP_MEAN[ch]) / CLIP_STD[ch]);
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, 3, size, size), image.device())?)
}

/// Bits of the fixed-point filter weights of the 8-bit resampler (so that a sum of 8-bit
/// values times weights fits an `i32` with room for the rounding term).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The bicubic kernel with `a = -0.5` (support 2).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position along an axis of `in_len` pixels resampled to `out_len`: the
/// first input pixel and the fixed-point weights. The kernel is widened by the reduction
/// factor when shrinking (antialiasing), each window's weights are normalised to sum to 1 in
/// `f64`, then rounded half away from zero to `PRECISION_BITS` bits.
fn resample_weights(in_len: usize, out_len: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_len as f64 / out_len as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_len)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // Truncation toward zero of the rounded bounds, clamped to the axis.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
            let w: Vec<f64> = (lo..hi)
                .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = w.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (lo, fixed)
        })
        .collect()
}

/// Rounds a fixed-point sum back to 8 bits, clamped.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved 8-bit RGB `(w, h)` to `(nw, nh)` with a bicubic (`a = -0.5`) filter,
/// antialiased when shrinking, in two separable passes (horizontal, then vertical) with 8-bit
/// rounding after each, in fixed point: the arithmetic of PIL's `Image.resize(…, BICUBIC)`,
/// which DA-CLIP's preprocessing calls, so the pixels (and the contexts) match upstream's.
fn resize_bicubic_u8(src: &[u8], (w, h): (usize, usize), (nw, nh): (usize, usize)) -> Vec<u8> {
    let wide = if nw == w {
        src.to_vec()
    } else {
        resample_axis(src, (w, h), nw, true)
    };
    if nh == h {
        wide
    } else {
        resample_axis(&wide, (nw, h), nh, false)
    }
}

/// One pass of [`resize_bicubic_u8`]: `(w, h)` interleaved RGB resampled to `out_len` along
/// the rows (`horizontal`) or the columns, rounded to 8 bits.
fn resample_axis(src: &[u8], (w, h): (usize, usize), out_len: usize, horizontal: bool) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let (in_len, other) = if horizontal { (w, h) } else { (h, w) };
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    // The index of pixel `along` of line `across` in `src`.
    let at = |across: usize, along: usize| {
        if horizontal {
            across * w + along
        } else {
            along * w + across
        }
    };
    let weights = resample_weights(in_len, out_len);
    let mut out = vec![0u8; ow * oh * 3];
    for across in 0..other {
        for (i, (lo, k)) in weights.iter().enumerate() {
            let o = if horizontal {
                across * ow + i
            } else {
                i * ow + across
            };
            for c in 0..3 {
                let sum = k.iter().enumerate().fold(half, |acc, (j, &kj)| {
                    acc + i64::from(src[at(across, lo + j) * 3 + c]) * i64::from(kj)
                });
                out[o * 3 + c] = clip8(sum);
            }
        }
    }
    out
}
