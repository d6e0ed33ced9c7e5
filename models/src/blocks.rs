//! Layers shared by the networks: convolution, linear, the normalisations (channel
//! LayerNorm, LayerNorm, GroupNorm), memory-bounded attention, the sinusoidal time
//! embedding, padding, pixel shuffle, softmax and the gates.
//!
//! Each layer is built from [`Weights`] under its upstream state-dict prefix, so the names in
//! this file are the names in the released checkpoints.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::checkpoint::Weights;
use crate::error::{Error, Result};
use crate::kernels::{self, RowEpilogue};

/// A 2-D convolution (`torch.nn.Conv2d`, square kernel, dilation 1).
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
}

/// Shape of a convolution, for [`Conv::new`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A `k × k` convolution with stride 1 and "same" padding `k / 2`.
    pub(crate) fn same(cin: usize, cout: usize, kernel: usize, bias: bool) -> Self {
        Self {
            cin,
            cout,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            bias,
        }
    }
}

impl Conv {
    /// From its tensors (`weight` `[cout, cin / groups, k, k]`).
    pub(crate) fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Self {
        Self {
            weight,
            bias,
            stride,
            padding,
            groups,
        }
    }

    pub(crate) fn new(w: &Weights, prefix: &str, s: ConvSpec) -> Result<Self> {
        let weight = w.take(
            &format!("{prefix}.weight"),
            &[s.cout, s.cin / s.groups, s.kernel, s.kernel],
        )?;
        let bias = if s.bias {
            Some(w.take(&format!("{prefix}.bias"), &[s.cout])?)
        } else {
            None
        };
        Ok(Self::from_parts(
            weight, bias, s.stride, s.padding, s.groups,
        ))
    }

    /// The product of a 1 × 1 convolution without its bias, where the fused epilogues apply
    /// to it (CPU f32, a bias to fuse); else `None`.
    fn pointwise_unbiased(&self, x: &Tensor) -> Result<Option<(Tensor, &Tensor)>> {
        let (_, _, k, _) = self.weight.dims4()?;
        let Some(bias) = &self.bias else {
            return Ok(None);
        };
        if (k, self.stride, self.groups) != (1, 1, 1) || !kernels::fused_applies(x) {
            return Ok(None);
        }
        Ok(Some((pointwise(x, &self.weight)?, bias)))
    }

    /// `residual + scale · self.forward(x)` (`scale` one value per output channel), with the
    /// bias, the scale and the sum in one pass after a 1 × 1 product on the CPU in f32.
    pub(crate) fn forward_scaled_residual(
        &self,
        x: &Tensor,
        scale: &Tensor,
        residual: &Tensor,
    ) -> Result<Tensor> {
        match self.pointwise_unbiased(x)? {
            Some((m, bias)) => kernels::fused_bias_scale_residual(&m, bias, scale, residual),
            None => Ok((residual + self.forward(x)?.broadcast_mul(scale)?)?),
        }
    }

    /// `simple_gate(self.forward(x))`, with the bias and the gate in one pass after a 1 × 1
    /// product on the CPU in f32.
    pub(crate) fn forward_gated(&self, x: &Tensor) -> Result<Tensor> {
        match self.pointwise_unbiased(x)? {
            Some((m, bias)) => kernels::fused_bias_gate(&m, bias),
            None => simple_gate(&self.forward(x)?),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (cout, _, k, _) = self.weight.dims4()?;
        if self.groups > 1 && self.groups == cout && k == 3 && self.stride == 1 {
            return kernels::depthwise_conv3x3(x, &self.weight, self.bias.as_ref());
        }
        if self.groups == 1 && kernels::winograd_applies(x, &self.weight, self.stride, self.padding)
        {
            let u = kernels::winograd_weight(&self.weight)?;
            return kernels::winograd_conv3x3(x, &u, self.padding, self.bias.as_ref());
        }
        let y = if k == 1 && self.stride == 1 && self.groups == 1 {
            pointwise(x, &self.weight)?
        } else if self.groups == 1 {
            kernels::conv2d(x, &self.weight, self.stride, self.padding)?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?
        };
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(&b.reshape((1, cout, 1, 1))?)?),
            None => Ok(y),
        }
    }
}

/// SiLU, `x·σ(x)`: the vectorised kernel on the CPU in f32, else candle's.
pub(crate) fn silu(x: &Tensor) -> Result<Tensor> {
    match kernels::silu(x)? {
        Some(y) => Ok(y),
        None => Ok(x.silu()?),
    }
}

/// `silu(modulate(x, scale, shift))` (`[B, C]` modulations): one fused pass on the CPU in f32,
/// else candle's operations.
pub(crate) fn silu_modulated(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if kernels::fused_applies(x) {
        return kernels::fused_affine_silu(x, Some(&(scale + 1.0)?), Some(shift), None);
    }
    silu(&modulate(x, scale, shift)?)
}

/// `silu(x) + residual`: one fused pass on the CPU in f32, else candle's operations.
pub(crate) fn silu_plus(x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if kernels::fused_applies(x) {
        return kernels::fused_affine_silu(x, None, None, Some(residual));
    }
    Ok((silu(x)? + residual)?)
}

/// A 1 × 1 convolution as one matrix product `[Cout, Cin] · [B, Cin, H·W]`.
fn pointwise(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (b, cin, h, wd) = x.dims4()?;
    let cout = weight.dim(0)?;
    let w = weight.reshape((cout, cin))?;
    let x = x.contiguous()?;
    let images = (0..b)
        .map(|i| kernels::matmul(&w, &x.get(i)?.reshape((cin, h * wd))?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&images, 0)?.reshape((b, cout, h, wd))?)
}

/// A fully connected layer (`torch.nn.Linear`) on `[…, in]` (any leading dimensions).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

/// How a [`Linear`] holds its weight.
#[derive(Debug, Clone)]
enum LinearWeight {
    /// Transposed, `[in, out]`, contiguous: the product then reads it row by row (as
    /// `[out, in]` seen through a transpose, packing it for every product took more time than
    /// the products of DA-CLIP's encoder, whose 50 tokens reuse it little).
    Transposed(Tensor),
    /// Packed once for products of a few rows (CPU, f32; [`Linear::packed`]).
    Packed(Arc<kernels::PackedWeight>),
}

impl Linear {
    pub(crate) fn new(w: &Weights, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        let weight = w.take(&format!("{prefix}.weight"), &[cout, cin])?;
        let bias = w.take(&format!("{prefix}.bias"), &[cout])?;
        Self::from_parts(weight, Some(bias))
    }

    /// A layer built with `bias=False`.
    pub(crate) fn without_bias(w: &Weights, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Self::from_parts(w.take(&format!("{prefix}.weight"), &[cout, cin])?, None)
    }

    /// A layer from a weight `[out, in]` and bias `[out]` taken apart by the caller (packed
    /// projections).
    pub(crate) fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight: LinearWeight::Transposed(weight.t()?.contiguous()?),
            bias,
        })
    }

    /// The layer with its weight packed once for products of a few rows (the encoder's 50
    /// tokens: `kernels::PackedWeight`), where it is a CPU f32 weight; otherwise unchanged.
    pub(crate) fn packed(self) -> Result<Self> {
        let LinearWeight::Transposed(w) = &self.weight else {
            return Ok(self);
        };
        if !(w.device().is_cpu() && w.dtype() == DType::F32) {
            return Ok(self);
        }
        let (cin, cout) = w.dims2()?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let packed = kernels::with_f32(w, |w| {
            kernels::PackedWeight::new(w, cin, cout, bias.as_deref())
        })?;
        Ok(Self {
            weight: LinearWeight::Packed(Arc::new(packed)),
            bias: self.bias,
        })
    }

    /// Each sample of the leading (batch) axis is multiplied on its own, so that a sample's
    /// result does not depend on what shares its batch (the matrix product picks its kernels
    /// and summation order by the matrix sizes): `mrsampler serve` batches requests and must
    /// give each the bytes of a call of its own.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, RowEpilogue::Bias)
    }

    /// `gelu(linear(x))`, the exact (`erf`) GELU, in the product's output pass on the CPU.
    pub(crate) fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, RowEpilogue::BiasGelu)
    }

    /// GEGLU: `h[.., :n/2] · gelu(h[.., n/2:])` of `h = linear(x)` (`n` outputs, `n/2` out), in
    /// the product's output pass on the CPU.
    pub(crate) fn forward_geglu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, RowEpilogue::BiasGeglu)
    }

    fn forward_with(&self, x: &Tensor, epilogue: RowEpilogue) -> Result<Tensor> {
        let batch = x.dims().first().copied().unwrap_or(1);
        if x.rank() >= 2 && batch > 1 {
            let rows = (0..batch)
                .map(|i| self.forward_one(&x.narrow(0, i, 1)?, epilogue))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&rows, 0)?);
        }
        self.forward_one(x, epilogue)
    }

    fn forward_one(&self, x: &Tensor, epilogue: RowEpilogue) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = match &self.weight {
            LinearWeight::Packed(w) => {
                // The bias, and a GELU, in the pass that gathers the product's rows.
                let (cin, cout) = w.dims();
                let x = x.contiguous()?.to_dtype(DType::F32)?.reshape((rows, cin))?;
                let gelu = epilogue == RowEpilogue::BiasGelu;
                let y = kernels::with_f32(&x, |x| w.product(x, rows, gelu))?;
                let y = Tensor::from_vec(y, (rows, cout), x.device())?;
                match epilogue {
                    RowEpilogue::BiasGeglu => kernels::fused_rows(&y, None, epilogue)?,
                    RowEpilogue::Bias | RowEpilogue::BiasGelu => y,
                }
            }
            LinearWeight::Transposed(w) => {
                let (cin, cout) = w.dims2()?;
                let y = x.contiguous()?.reshape((rows, cin))?.matmul(w)?;
                self.epilogue(y, epilogue, cout)?
            }
        };
        let mut out = dims;
        *out.last_mut().expect("rank ≥ 1") = y.dim(1)?;
        Ok(y.reshape(out)?)
    }

    /// The bias and `epilogue` of a product `y` (`[rows, cout]`) from the transposed weight.
    fn epilogue(&self, y: Tensor, epilogue: RowEpilogue, cout: usize) -> Result<Tensor> {
        Ok(if epilogue == RowEpilogue::Bias && self.bias.is_none() {
            y
        } else if y.device().is_cpu() && y.dtype() == DType::F32 {
            kernels::fused_rows(&y, self.bias.as_ref(), epilogue)?
        } else {
            let y = match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            match epilogue {
                RowEpilogue::Bias => y,
                RowEpilogue::BiasGelu => y.gelu_erf()?,
                RowEpilogue::BiasGeglu => {
                    let half = cout / 2;
                    (y.narrow(1, 0, half)? * y.narrow(1, half, half)?.gelu_erf()?)?
                }
            }
        })
    }
}

/// `torch.nn.LayerNorm` over the last dimension, with weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// From its tensors.
    pub(crate) fn from_parts(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    pub(crate) fn new(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[dim])?,
            bias: w.take(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = kernels::layer_norm_last(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        let last = x.rank() - 1;
        let mean = x.mean_keepdim(last)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(last)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        Ok(centred
            .broadcast_mul(&inv)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// `torch.nn.GroupNorm` on `[B, C, H, W]`, with weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// From its tensors (`groups` divides the channels: checked by the caller).
    pub(crate) fn from_parts(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Self {
        Self {
            weight,
            bias,
            groups,
            eps,
        }
    }

    pub(crate) fn new(
        w: &Weights,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::config(format!(
                "GroupNorm `{prefix}`: {channels} channels cannot form {groups} groups"
            )));
        }
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[channels])?,
            bias: w.take(&format!("{prefix}.bias"), &[channels])?,
            groups,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = kernels::group_norm(x, &self.weight, &self.bias, self.groups, self.eps)? {
            return Ok(y);
        }
        let (b, c, h, w) = x.dims4()?;
        let g = x
            .contiguous()?
            .reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = g.mean_keepdim(2)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        let normed = centred.broadcast_mul(&inv)?.reshape((b, c, h, w))?;
        Ok(normed
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?)
    }
}

/// Scaled dot-product attention `softmax(q kᵀ · scale) v` on `[B, heads, N, d]` queries and
/// `[B, heads, M, d]` keys and values. On the CPU in f32 no score matrix is formed (each
/// thread holds four queries' scores at a time; `kernels::attention`); elsewhere it is
/// computed in blocks of queries so that no more than about `budget` bytes of scores exist
/// at once (each query row is independent, so the blocks give exactly the full result; memory
/// grows with `N`, not `N · M`).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    budget: usize,
) -> Result<Tensor> {
    if kernels::attention_applies(q, k, v) {
        return kernels::attention(q, k, v, scale);
    }
    composed_attention(q, k, v, scale, budget)
}

/// [`attention`] from candle's products and the softmax, in blocks of queries within `budget`
/// bytes of scores.
pub(crate) fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    budget: usize,
) -> Result<Tensor> {
    let (b, heads, n, _) = q.dims4()?;
    let m = k.dim(2)?;
    let row_bytes = b * heads * m * q.dtype().size_in_bytes();
    let block = (budget / row_bytes.max(1)).clamp(1, n.max(1));
    let kt = k.t()?.contiguous()?;
    if block >= n {
        // One block: no copies of the queries' rows, no concatenation.
        let weights = kernels::scaled_softmax_last(&q.contiguous()?.matmul(&kt)?, scale)?;
        return Ok(weights.matmul(v)?);
    }
    let mut outs = Vec::with_capacity(n.div_ceil(block));
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let qc = q.narrow(2, start, len)?.contiguous()?;
        let weights = kernels::scaled_softmax_last(&qc.matmul(&kt)?, scale)?;
        outs.push(weights.matmul(v)?);
        start += len;
    }
    Ok(Tensor::cat(&outs, 2)?)
}

/// The channel LayerNorm of IR-SDE: normalise over channels with the biased variance, scale
/// by a gain `g` (no bias). Its epsilon depends on the dtype as upstream's does: `1e-5` in
/// f32, `1e-3` in every other dtype.
#[derive(Debug, Clone)]
pub(crate) struct ChannelNorm {
    g: Tensor,
}

impl ChannelNorm {
    /// From its gain `g` `[1, C, 1, 1]`.
    pub(crate) fn from_gain(g: Tensor) -> Self {
        Self { g }
    }

    pub(crate) fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            g: w.take(&format!("{prefix}.g"), &[1, dim, 1, 1])?,
        })
    }

    /// `modulate(self.forward(x), scale, shift)` (`[B, C]` modulations), in one pass on the
    /// CPU in f32: the modulation folds into the norm's gain and shift.
    pub(crate) fn forward_modulated(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
    ) -> Result<Tensor> {
        let c = self.g.elem_count();
        let gain = self.g.reshape((1, c))?.broadcast_mul(&(scale + 1.0)?)?;
        let eps = if x.dtype() == DType::F32 { 1e-5 } else { 1e-3 };
        match kernels::channel_layer_norm(x, &gain, Some(shift), eps)? {
            Some(y) => Ok(y),
            None => modulate(&self.forward(x)?, scale, shift),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let eps = if x.dtype() == DType::F32 { 1e-5 } else { 1e-3 };
        if let Some(y) = kernels::channel_layer_norm(x, &self.g, None, eps)? {
            return Ok(y);
        }
        let mean = x.mean_keepdim(1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let inv = (var + eps)?.sqrt()?.recip()?;
        Ok(centred.broadcast_mul(&inv)?.broadcast_mul(&self.g)?)
    }
}

/// The sinusoidal embedding of the raw (fractional) time index, `[B, dim]`: `sin(t·f_i)`
/// then `cos(t·f_i)` with `f_i = exp(−i·ln(10⁴)/(dim/2 − 1))`, computed in f32 as upstream
/// computes it, then cast to `dtype`.
pub(crate) fn time_embedding(
    t: &[f32],
    dim: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let step = -((10000f64.ln() / (half as f64 - 1.0)) as f32);
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * step).exp()).collect();
    let mut out = Vec::with_capacity(t.len() * 2 * half);
    for &ti in t {
        out.extend(freqs.iter().map(|f| (ti * f).sin()));
        out.extend(freqs.iter().map(|f| (ti * f).cos()));
    }
    Ok(Tensor::from_vec(out, (t.len(), 2 * half), device)?.to_dtype(dtype)?)
}

/// Pads the bottom and right of `[B, C, H, W]` by reflection (PyTorch's `'reflect'` mode:
/// the edge row is not repeated).
pub(crate) fn reflect_pad(x: &Tensor, bottom: usize, right: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if bottom >= h.max(1) || right >= w.max(1) {
        return Err(Error::input(format!(
            "an image of {w}×{h} pixels (width × height) is too small for the network, which \
             pads it by reflection to a multiple of its down-sampling factor ({right} columns, \
             {bottom} rows); each side must be longer than its padding"
        )));
    }
    let x = mirror_extend(x, 2, 0, bottom)?;
    mirror_extend(&x, 3, 0, right)
}

/// `x` extended along `dim` by `before` and `after` mirrored entries (the edge entry not
/// repeated; past the far edge the mirroring goes back and forth).
pub(crate) fn mirror_extend(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)? as i64;
    let idx: Vec<u32> = (-(before as i64)..n + after as i64)
        .map(|i| mirror_index(i, n) as u32)
        .collect();
    let idx = Tensor::new(idx.as_slice(), x.device())?;
    Ok(x.index_select(&idx, dim)?)
}

/// The source index of position `i` of a side of `n` entries mirrored without repeating the
/// edge (`… 2 1 | 0 1 2 … n−1 | n−2 n−3 …`).
pub(crate) fn mirror_index(i: i64, n: i64) -> i64 {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let r = i.rem_euclid(period);
    if r < n { r } else { period - r }
}

/// Pads the bottom and right of `[B, C, H, W]` with zeros.
pub(crate) fn zero_pad(x: &Tensor, bottom: usize, right: usize) -> Result<Tensor> {
    let x = if bottom > 0 {
        x.pad_with_zeros(2, 0, bottom)?
    } else {
        x.clone()
    };
    Ok(if right > 0 {
        x.pad_with_zeros(3, 0, right)?
    } else {
        x
    })
}

/// The amount to add to `n` to reach a multiple of `m`.
pub(crate) fn pad_to(n: usize, m: usize) -> usize {
    (m - n % m) % m
}

/// `torch.nn.PixelShuffle(r)`: `[B, C·r², H, W] → [B, C, H·r, W·r]`.
pub(crate) fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let c_out = c / (r * r);
    Ok(x.reshape((b, c_out, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, c_out, h * r, w * r))?)
}

/// Softmax along `dim`, with the maximum subtracted first (fused kernels on the CPU in f32).
pub(crate) fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    if dim + 1 == x.rank() {
        return kernels::scaled_softmax_last(x, 1.0);
    }
    match kernels::softmax_across(x, dim)? {
        Some(y) => Ok(y),
        None => composed_softmax(x, dim),
    }
}

/// [`softmax`] from candle's tensor operations (any device and dtype).
pub(crate) fn composed_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    Ok(e.broadcast_div(&s)?)
}

/// NAFNet's SimpleGate: split the channels (dim 1) in halves and multiply them.
pub(crate) fn simple_gate(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    Ok((x.narrow(1, 0, c / 2)? * x.narrow(1, c / 2, c / 2)?)?)
}

/// `x · (scale + 1) + shift` with `[B, C]` modulations broadcast over the image.
pub(crate) fn modulate(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (b, c) = scale.dims2()?;
    let scale = (scale.reshape((b, c, 1, 1))? + 1.0)?;
    let shift = shift.reshape((b, c, 1, 1))?;
    Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?)
}

/// Splits `[B, n·C]` into `n` chunks `[B, C]` along the feature axis.
pub(crate) fn chunks(x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let c = x.dim(1)? / n;
    (0..n)
        .map(|i| Ok(x.narrow(1, i * c, c)?.contiguous()?))
        .collect()
}

/// A network's input after the common checks: the image the first layer sees
/// (`cat(x_t − μ, μ)` or `x_t`), one time per sample and the original height and width.
pub(crate) struct NetworkInput {
    pub x: Tensor,
    pub times: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

/// Checks `xt` and `mu` against each other and the network (`channels`), and builds the
/// first layer's input.
pub(crate) fn network_input(
    xt: &Tensor,
    mu: &Tensor,
    channels: usize,
    conditional: bool,
    t: &[f32],
) -> Result<NetworkInput> {
    if xt.dims() != mu.dims() {
        return Err(Error::input(format!(
            "x_t has shape {:?} but μ has shape {:?}; they must be equal",
            xt.dims(),
            mu.dims()
        )));
    }
    let (b, c, h, w) = xt.dims4().map_err(|_| {
        Error::input(format!(
            "expected [batch, channels, height, width], got shape {:?}",
            xt.dims()
        ))
    })?;
    if c != channels {
        return Err(Error::input(format!(
            "the network takes {channels}-channel images but got {c} channels"
        )));
    }
    if b == 0 || h == 0 || w == 0 {
        return Err(Error::input(format!(
            "empty input of shape {:?}",
            xt.dims()
        )));
    }
    if t.len() != b && t.len() != 1 {
        return Err(Error::input(format!(
            "{} times for a batch of {b}; give one time per sample or one for all",
            t.len()
        )));
    }
    if let Some(bad) = t.iter().find(|v| !v.is_finite()) {
        return Err(Error::input(format!("time {bad} is not finite")));
    }
    let x = if conditional {
        Tensor::cat(&[(xt - mu)?, mu.clone()], 1)?
    } else {
        xt.clone()
    };
    let times = if t.len() == b {
        t.to_vec()
    } else {
        vec![t[0]; b]
    };
    Ok(NetworkInput { x, times, h, w })
}
