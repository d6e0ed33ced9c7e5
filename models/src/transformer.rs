//! The spatial transformer block of DA-CLIP's U-Net (`SpatialTransformer` upstream): a
//! GroupNorm, a 1 × 1 projection to tokens, one transformer block (self-attention,
//! cross-attention to the image context, a GEGLU feed-forward with exact GELU, each behind a
//! LayerNorm and a residual), the 1 × 1 projection back and a residual.
//!
//! The image context is one token per image, and softmax over a single key is exactly 1, so
//! the cross-attention's output is `to_out(to_v(context))` whatever the queries are: it does
//! not depend on the state and is computed once per image ([`SpatialTransformer::cross`]).

use candle_core::Tensor;

use crate::blocks::{Conv, ConvSpec, GroupNorm, LayerNorm, Linear, attention};
use crate::checkpoint::Weights;
use crate::error::{Error, Result};

/// Width of one attention head (upstream's `num_head_channels`).
pub(crate) const HEAD_DIM: usize = 32;

/// Groups of the block's GroupNorm (upstream's `Normalize`).
const GROUPS: usize = 32;

/// Multi-head attention with bias-free `q`, `k`, `v` projections (`CrossAttention`).
#[derive(Debug, Clone)]
struct MultiHead {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl MultiHead {
    fn new(w: &Weights, p: &str, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let inner = heads * HEAD_DIM;
        Ok(Self {
            to_q: Linear::without_bias(w, &format!("{p}.to_q"), dim, inner)?,
            to_k: Linear::without_bias(w, &format!("{p}.to_k"), context_dim, inner)?,
            to_v: Linear::without_bias(w, &format!("{p}.to_v"), context_dim, inner)?,
            to_out: Linear::new(w, &format!("{p}.to_out.0"), inner, dim)?,
            heads,
        })
    }

    /// `[B, N, C] → [B, heads, N, HEAD_DIM]`.
    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        Ok(x.reshape((b, n, self.heads, HEAD_DIM))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Attention of the tokens `x` (`[B, N, dim]`) to `context` (`[B, M, context_dim]`).
    fn forward(&self, x: &Tensor, context: &Tensor, budget: usize) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let q = self.split(&self.to_q.forward(x)?)?;
        let k = self.split(&self.to_k.forward(context)?)?;
        let v = self.split(&self.to_v.forward(context)?)?;
        let scale = (HEAD_DIM as f64).powf(-0.5);
        let out = attention(&q, &k, &v, scale, budget)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, self.heads * HEAD_DIM))?;
        self.to_out.forward(&out)
    }

    /// The attention output when the context is one token `[B, context_dim]`: `[B, 1, dim]`.
    fn single_token(&self, context: &Tensor) -> Result<Tensor> {
        Ok(self
            .to_out
            .forward(&self.to_v.forward(context)?)?
            .unsqueeze(1)?)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn1: MultiHead,
    /// Normalises the cross-attention's queries, which a one-token context ignores.
    #[cfg_attr(not(test), allow(dead_code))]
    norm2: LayerNorm,
    attn2: MultiHead,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl Block {
    fn new(w: &Weights, p: &str, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let ln = |name: &str| LayerNorm::new(w, &format!("{p}.{name}"), dim, 1e-5);
        Ok(Self {
            norm1: ln("norm1")?,
            attn1: MultiHead::new(w, &format!("{p}.attn1"), dim, dim, heads)?,
            norm2: ln("norm2")?,
            attn2: MultiHead::new(w, &format!("{p}.attn2"), dim, context_dim, heads)?,
            norm3: ln("norm3")?,
            ff_in: Linear::new(w, &format!("{p}.ff.net.0.proj"), dim, 8 * dim)?,
            ff_out: Linear::new(w, &format!("{p}.ff.net.2"), 4 * dim, dim)?,
        })
    }

    fn forward(&self, x: &Tensor, cross: &Tensor, budget: usize) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (self.attn1.forward(&h, &h, budget)? + x)?;
        let x = x.broadcast_add(cross)?;
        let gated = self.ff_in.forward_geglu(&self.norm3.forward(&x)?)?;
        Ok((self.ff_out.forward(&gated)? + x)?)
    }
}

/// DA-CLIP's `SpatialTransformer` (depth 1) on `[B, C, H, W]` feature maps.
#[derive(Debug, Clone)]
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Conv,
    block: Block,
    proj_out: Conv,
    inner: usize,
}

impl SpatialTransformer {
    /// The block at `p` for `dim` channels: `dim / 32` heads of 32.
    pub(crate) fn new(w: &Weights, p: &str, dim: usize, context_dim: usize) -> Result<Self> {
        if dim < HEAD_DIM || !dim.is_multiple_of(GROUPS) {
            return Err(Error::config(format!(
                "a spatial transformer at `{p}` needs a multiple of {GROUPS} channels (its \
                 GroupNorm has {GROUPS} groups and its heads are {HEAD_DIM} wide); it has {dim}"
            )));
        }
        let heads = dim / HEAD_DIM;
        let inner = heads * HEAD_DIM;
        Ok(Self {
            norm: GroupNorm::new(w, &format!("{p}.norm"), dim, GROUPS, 1e-6)?,
            proj_in: Conv::new(
                w,
                &format!("{p}.proj_in"),
                ConvSpec::same(dim, inner, 1, true),
            )?,
            block: Block::new(
                w,
                &format!("{p}.transformer_blocks.0"),
                inner,
                context_dim,
                heads,
            )?,
            proj_out: Conv::new(
                w,
                &format!("{p}.proj_out"),
                ConvSpec::same(inner, dim, 1, true),
            )?,
            inner,
        })
    }

    /// The cross-attention's output for one context token per image, `[B, context_dim]` →
    /// `[B, 1, inner]`: what [`forward`](Self::forward) adds to every token.
    pub(crate) fn cross(&self, context: &Tensor) -> Result<Tensor> {
        self.block.attn2.single_token(context)
    }

    /// The general cross-attention of `tokens` (`[B, N, inner]`, after `norm2`) to a context
    /// of any length; equal to [`cross`](Self::cross) broadcast when the context is one token.
    #[cfg(test)]
    pub(crate) fn cross_general(&self, tokens: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.block.norm2.forward(tokens)?;
        self.block.attn2.forward(&h, context, usize::MAX)
    }

    /// `x + proj_out(block(proj_in(norm(x))))`, with `cross` from [`cross`](Self::cross).
    /// At most about `budget` bytes of attention scores exist at once.
    pub(crate) fn forward(&self, x: &Tensor, cross: &Tensor, budget: usize) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let tokens = self
            .proj_in
            .forward(&self.norm.forward(x)?)?
            .reshape((b, self.inner, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let tokens = self.block.forward(&tokens, cross, budget)?;
        let maps = tokens
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, self.inner, h, w))?;
        Ok((self.proj_out.forward(&maps)? + x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        crate::kernels::max_abs_diff(a, b) / crate::kernels::max_abs(b)
    }

    #[test]
    fn chunked_attention_equals_the_direct_form() {
        use crate::blocks::composed_attention;
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (2, 3, 37, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (2, 3, 37, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (2, 3, 37, 8), &dev).unwrap();
        let direct = composed_attention(&q, &k, &v, 0.3, usize::MAX).unwrap();
        // One query row costs 2·3·37·4 bytes: a budget of 3 rows gives 13 blocks, the last short.
        let chunked = composed_attention(&q, &k, &v, 0.3, 3 * 2 * 3 * 37 * 4).unwrap();
        assert_eq!(chunked.dims(), &[2, 3, 37, 8]);
        assert!(rel(&chunked, &direct) < 1e-6);
        // The CPU kernel that `attention` dispatches to, on the same input.
        assert!(rel(&attention(&q, &k, &v, 0.3, 1).unwrap(), &direct) < 1e-6);
        // Against the textbook formula on one head.
        let s = (q
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .matmul(&k.get(1).unwrap().get(2).unwrap().t().unwrap()))
        .unwrap();
        let s = (s * 0.3).unwrap();
        let e = s.exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap();
        let want = p.matmul(&v.get(1).unwrap().get(2).unwrap()).unwrap();
        assert!(rel(&chunked.get(1).unwrap().get(2).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn single_token_cross_attention_is_the_context_value() {
        let dev = Device::Cpu;
        let w = Weights::random(&dev, DType::F32, "test".into());
        let st = SpatialTransformer::new(&w, "t", 64, 24).unwrap();
        let tokens = Tensor::randn(0f32, 1., (2, 10, 64), &dev).unwrap();
        let context = Tensor::randn(0f32, 1., (2, 24), &dev).unwrap();
        let general = st
            .cross_general(&tokens, &context.unsqueeze(1).unwrap())
            .unwrap();
        let once = st
            .cross(&context)
            .unwrap()
            .broadcast_as((2, 10, 64))
            .unwrap();
        assert!(rel(&general, &once) < 1e-6);
    }
}
