//! The networks' fast layers as building blocks for your own candle network: each loads its
//! tensors from a [`VarBuilder`] under PyTorch's names (`weight`, `bias`) and implements
//! [`candle_nn::Module`], so it replaces the `candle_nn` layer of the same name in a network
//! written with `candle-nn`.
//!
//! | layer | replaces | what is faster |
//! |---|---|---|
//! | [`Conv2d`] | `candle_nn::Conv2d` | dense convolutions as chunked im2col + one matrix product per image (candle's CPU convolution converts to NHWC with a scalar loop and multiplies 512-pixel tiles); 1 × 1 as one product; 3 × 3 depthwise with a direct SIMD kernel |
//! | [`ChannelNorm`] | a LayerNorm over channels written with `candle_nn` ops | one pass per pixel over the channels (`[B, C, H, W]`, no transposes) |
//! | [`attention`] | `softmax(q kᵀ·scale) v` from `candle_nn::ops::softmax_last_dim` | a fused scaled softmax, queries in blocks so the scores stay within a memory budget |
//! | [`GroupNorm`], [`LayerNorm`] | `candle_nn::GroupNorm`, `candle_nn::LayerNorm` | the same arithmetic as the networks' (for parity with their checkpoints) |
//! | [`TimeEmbedding`] | a sinusoidal embedding | per-sample times, as the networks' |
//! | [`silu`] | `Tensor::silu` | an exponential that vectorises (candle calls `expf` per element) |
//!
//! On other devices and dtypes each layer falls back to candle's own operations. Run your
//! network's whole forward through [`on_pool`]: the layers' kernels then run on the thread
//! pool's threads without a hand-over per kernel.
//! `docs/models.md` builds a small conditional network from them and measures it against the
//! same network in `candle_nn` and in PyTorch (`models/examples/custom_network.rs`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Conv2dConfig, Module, VarBuilder, VarMap};
//! use mrsampler_models::layers::{Conv2d, GroupNorm};
//! # fn main() -> candle_core::Result<()> {
//! let map = VarMap::new();
//! let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
//! let conv = Conv2d::new(vb.pp("conv"), 3, 16, 3, Conv2dConfig { padding: 1, ..Default::default() })?;
//! let norm = GroupNorm::new(vb.pp("norm"), 16, 4, 1e-5)?;
//! let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! let y = norm.forward(&conv.forward(&x)?)?;
//! assert_eq!(y.dims(), &[1, 16, 32, 32]);
//! # Ok(()) }
//! ```

use candle_core::{Device, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use crate::blocks;
use crate::error::Error;

/// Runs `f` (typically a network's whole forward) on one of the threads of rayon's global
/// pool when `device` is the CPU and the calling thread belongs to no rayon pool; on the
/// calling thread otherwise (another device, or already a pool thread, e.g. inside
/// [`rayon::ThreadPool::install`]).
///
/// A forward runs hundreds of parallel kernels and matrix products. Started from a thread
/// outside the pool, each of them hands its work to the pool and puts the caller to sleep
/// until the pool is done: a wake-up and a sleep per kernel, with the caller's core idle in
/// between. Started on a pool thread, that thread takes its own share of every kernel and
/// nothing is handed over: DA-CLIP's denoiser forward at 256² took 11 % less time on two
/// threads (`docs/benchmarks.md`, issue 29). This crate's convolutional networks do this in
/// their `forward`; a network built from these layers gains it by calling its forward
/// through `on_pool`:
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{Conv2dConfig, Module, VarBuilder, VarMap};
/// use mrsampler_models::layers::{Conv2d, on_pool};
/// # fn main() -> candle_core::Result<()> {
/// let map = VarMap::new();
/// let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
/// let conv = Conv2d::new(vb.pp("conv"), 3, 8, 3, Conv2dConfig { padding: 1, ..Default::default() })?;
/// let x = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu)?;
/// let y = on_pool(x.device(), || conv.forward(&x))?;
/// assert_eq!(y.dims(), &[1, 8, 16, 16]);
/// # Ok(()) }
/// ```
pub fn on_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// This crate's error as candle's (the layers implement candle's `Module`).
fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    }
}

/// A 2-D convolution (`torch.nn.Conv2d` with a square kernel, dilation 1, any stride, padding
/// and groups), loaded from `weight` `[cout, cin / groups, k, k]` and, with a bias, `bias`
/// `[cout]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: blocks::Conv,
}

impl Conv2d {
    /// With a bias (as `candle_nn::conv2d`).
    ///
    /// # Errors
    /// A missing or misshapen tensor, or `dilation ≠ 1`.
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        cfg: Conv2dConfig,
    ) -> candle_core::Result<Self> {
        Self::load(vb, cin, cout, kernel, cfg, true)
    }

    /// Without a bias (as `candle_nn::conv2d_no_bias`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn no_bias(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        cfg: Conv2dConfig,
    ) -> candle_core::Result<Self> {
        Self::load(vb, cin, cout, kernel, cfg, false)
    }

    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        cfg: Conv2dConfig,
        bias: bool,
    ) -> candle_core::Result<Self> {
        if cfg.dilation != 1 {
            candle_core::bail!("Conv2d: dilation {} (only 1 is supported)", cfg.dilation);
        }
        if cfg.groups == 0 || !cin.is_multiple_of(cfg.groups) || !cout.is_multiple_of(cfg.groups) {
            candle_core::bail!(
                "Conv2d: {cin} → {cout} channels cannot form {} groups",
                cfg.groups
            );
        }
        let weight = vb.get((cout, cin / cfg.groups, kernel, kernel), "weight")?;
        let bias = if bias {
            Some(vb.get(cout, "bias")?)
        } else {
            None
        };
        Ok(Self {
            inner: blocks::Conv::from_parts(weight, bias, cfg.stride, cfg.padding, cfg.groups),
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(x).map_err(to_candle)
    }
}

/// `torch.nn.GroupNorm` on `[B, C, H, W]` (`weight`, `bias` `[C]`).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: blocks::GroupNorm,
}

impl GroupNorm {
    /// # Errors
    /// A missing tensor, or `channels` not a multiple of `groups`.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> candle_core::Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("GroupNorm: {channels} channels cannot form {groups} groups");
        }
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        Ok(Self {
            inner: blocks::GroupNorm::from_parts(weight, bias, groups, eps),
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(x).map_err(to_candle)
    }
}

/// `torch.nn.LayerNorm` over the last dimension (`weight`, `bias` `[dim]`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: blocks::LayerNorm,
}

impl LayerNorm {
    /// # Errors
    /// A missing tensor.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        let weight = vb.get(dim, "weight")?;
        let bias = vb.get(dim, "bias")?;
        Ok(Self {
            inner: blocks::LayerNorm::from_parts(weight, bias, eps),
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(x).map_err(to_candle)
    }
}

/// A LayerNorm over the channels of `[B, C, H, W]` (each pixel normalised across its channels,
/// biased variance), scaled by `weight` `[C]`, no bias: IR-SDE's and NAFNet's `LayerNorm`.
/// Epsilon `1e-5` in f32 and `1e-3` in other dtypes, as those networks use.
#[derive(Debug, Clone)]
pub struct ChannelNorm {
    inner: blocks::ChannelNorm,
}

impl ChannelNorm {
    /// # Errors
    /// A missing tensor.
    pub fn new(vb: VarBuilder, channels: usize) -> candle_core::Result<Self> {
        let weight = vb.get(channels, "weight")?;
        Ok(Self {
            inner: blocks::ChannelNorm::from_gain(weight.reshape((1, channels, 1, 1))?),
        })
    }
}

impl Module for ChannelNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(x).map_err(to_candle)
    }
}

/// SiLU, `x·σ(x)` (`candle_nn::ops::silu`, `Tensor::silu`), with an exponential that
/// vectorises on the CPU in f32 (relative error below 4e-7).
///
/// # Errors
/// A candle failure.
pub fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    blocks::silu(x).map_err(to_candle)
}

/// Scaled dot-product attention `softmax(q kᵀ · scale) v` on `[B, heads, N, d]` queries and
/// `[B, heads, M, d]` keys and values. On the CPU in f32 no score matrix is formed: each
/// thread holds the scores of four queries at a time. Elsewhere the queries go in blocks so
/// that at most [`DEFAULT_ATTENTION_BUDGET`](crate::DEFAULT_ATTENTION_BUDGET) bytes of scores
/// exist at once (each block is exact: the result is the full attention).
///
/// # Errors
/// Mismatched shapes.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    blocks::attention(q, k, v, scale, crate::DEFAULT_ATTENTION_BUDGET).map_err(to_candle)
}

/// The sinusoidal embedding of per-sample times, `[B] → [B, dim]`: `sin(t·f_i)` then
/// `cos(t·f_i)` with `f_i = exp(−i·ln(10⁴)/(dim/2 − 1))` (the IR-SDE, NAFNet and DA-CLIP
/// networks' embedding of the raw time index), in the input's dtype.
#[derive(Debug, Clone, Copy)]
pub struct TimeEmbedding {
    dim: usize,
}

impl TimeEmbedding {
    /// An embedding of width `dim` (even, ≥ 4).
    ///
    /// # Errors
    /// An odd or too small `dim`.
    pub fn new(dim: usize) -> candle_core::Result<Self> {
        if dim < 4 || !dim.is_multiple_of(2) {
            candle_core::bail!("TimeEmbedding: dim {dim} (an even number ≥ 4)");
        }
        Ok(Self { dim })
    }

    /// The embedding of `t` (one time per sample) on `device`.
    ///
    /// # Errors
    /// A candle failure.
    pub fn embed(&self, t: &[f32], device: &Device) -> candle_core::Result<Tensor> {
        blocks::time_embedding(t, self.dim, candle_core::DType::F32, device).map_err(to_candle)
    }
}

impl Module for TimeEmbedding {
    /// `t`: `[B]` times.
    fn forward(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let times: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        self.embed(&times, t.device())?.to_dtype(t.dtype())
    }
}
