//! A small conditional U-Net of your own, written once and built twice: with the crate's fast
//! layers (`mrsampler_models::layers`) and with `candle_nn`'s, on the same weights. Prints
//! the two outputs' difference and the time per forward (median of `runs`).
//!
//!     cargo run --release -p mrsampler-models --example custom_network -- [SIZE] [RUNS] [fast]
//!
//! With `fast` only this crate's build is timed (for a profiler).
//! The same network in PyTorch: `tools/custom_network_torch.py` (docs/models.md has both).

use std::time::Instant;

/// The process setup of the `mrsampler` tool (docs/models.md, "Setting up the process for
/// speed"): mimalloc keeping freed memory for reuse, candle's element-wise pool parked at once.
#[path = "support/process.rs"]
mod process;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder, VarMap, linear};
use mrsampler_models::layers::{self, on_pool};

/// The layers the network is written with.
trait Kit {
    type Conv: Module;
    type Norm: Module;
    fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize)
    -> Result<Self::Conv>;
    fn norm(vb: VarBuilder, channels: usize) -> Result<Self::Norm>;
    fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor>;
    fn silu(x: &Tensor) -> Result<Tensor>;
}

fn cfg(k: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    }
}

/// This crate's layers.
struct Fast;

impl Kit for Fast {
    type Conv = layers::Conv2d;
    type Norm = layers::GroupNorm;
    fn conv(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self::Conv> {
        layers::Conv2d::new(vb, cin, cout, k, cfg(k, stride))
    }
    fn norm(vb: VarBuilder, channels: usize) -> Result<Self::Norm> {
        layers::GroupNorm::new(vb, channels, 8, 1e-5)
    }
    fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        layers::attention(q, k, v, scale)
    }
    fn silu(x: &Tensor) -> Result<Tensor> {
        layers::silu(x)
    }
}

/// `candle_nn`'s layers.
struct Plain;

impl Kit for Plain {
    type Conv = candle_nn::Conv2d;
    type Norm = candle_nn::GroupNorm;
    fn conv(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self::Conv> {
        candle_nn::conv2d(cin, cout, k, cfg(k, stride), vb)
    }
    fn norm(vb: VarBuilder, channels: usize) -> Result<Self::Norm> {
        candle_nn::group_norm(8, channels, 1e-5, vb)
    }
    fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let scores = (q.matmul(&k.t()?)? * scale)?;
        candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
    }
    fn silu(x: &Tensor) -> Result<Tensor> {
        x.silu()
    }
}

/// GroupNorm, SiLU, conv; the time added; GroupNorm, SiLU, conv; a residual.
struct ResBlock<K: Kit> {
    norm1: K::Norm,
    conv1: K::Conv,
    time: Linear,
    norm2: K::Norm,
    conv2: K::Conv,
    skip: Option<K::Conv>,
}

impl<K: Kit> ResBlock<K> {
    fn new(vb: VarBuilder, cin: usize, cout: usize, tdim: usize) -> Result<Self> {
        Ok(Self {
            norm1: K::norm(vb.pp("norm1"), cin)?,
            conv1: K::conv(vb.pp("conv1"), cin, cout, 3, 1)?,
            time: linear(tdim, cout, vb.pp("time"))?,
            norm2: K::norm(vb.pp("norm2"), cout)?,
            conv2: K::conv(vb.pp("conv2"), cout, cout, 3, 1)?,
            skip: if cin == cout {
                None
            } else {
                Some(K::conv(vb.pp("skip"), cin, cout, 1, 1)?)
            },
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&K::silu(&self.norm1.forward(x)?)?)?;
        let t = self.time.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&K::silu(&self.norm2.forward(&h)?)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        h + skip
    }
}

/// Single-head self-attention over the pixels.
struct SelfAttention<K: Kit> {
    norm: K::Norm,
    qkv: K::Conv,
    out: K::Conv,
}

impl<K: Kit> SelfAttention<K> {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            norm: K::norm(vb.pp("norm"), c)?,
            qkv: K::conv(vb.pp("qkv"), c, 3 * c, 1, 1)?,
            out: K::conv(vb.pp("out"), c, c, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let part = |i: usize| -> Result<Tensor> {
            qkv.narrow(1, i * c, c)?
                .reshape((b, 1, c, h * w))?
                .transpose(2, 3)?
                .contiguous()
        };
        let a = K::attention(&part(0)?, &part(1)?, &part(2)?, 1.0 / (c as f64).sqrt())?;
        let a = a.transpose(2, 3)?.reshape((b, c, h, w))?;
        x + self.out.forward(&a)?
    }
}

/// `[x, μ]` → noise: 32 → 64 → 96 channels at 1, 1/2, 1/4 resolution, attention at 1/4.
struct Net<K: Kit> {
    time1: Linear,
    time2: Linear,
    input: K::Conv,
    down1: ResBlock<K>,
    pool1: K::Conv,
    down2: ResBlock<K>,
    pool2: K::Conv,
    mid: ResBlock<K>,
    attn: SelfAttention<K>,
    up2: ResBlock<K>,
    up1: ResBlock<K>,
    out: K::Conv,
}

const TDIM: usize = 128;

impl<K: Kit> Net<K> {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            time1: linear(32, TDIM, vb.pp("time1"))?,
            time2: linear(TDIM, TDIM, vb.pp("time2"))?,
            input: K::conv(vb.pp("input"), 6, 32, 3, 1)?,
            down1: ResBlock::new(vb.pp("down1"), 32, 32, TDIM)?,
            pool1: K::conv(vb.pp("pool1"), 32, 64, 3, 2)?,
            down2: ResBlock::new(vb.pp("down2"), 64, 64, TDIM)?,
            pool2: K::conv(vb.pp("pool2"), 64, 96, 3, 2)?,
            mid: ResBlock::new(vb.pp("mid"), 96, 96, TDIM)?,
            attn: SelfAttention::new(vb.pp("attn"), 96)?,
            up2: ResBlock::new(vb.pp("up2"), 96 + 64, 64, TDIM)?,
            up1: ResBlock::new(vb.pp("up1"), 64 + 32, 32, TDIM)?,
            out: K::conv(vb.pp("out"), 32, 3, 3, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, mu: &Tensor, t: &[f32]) -> Result<Tensor> {
        let temb = layers::TimeEmbedding::new(32)?.embed(t, x.device())?;
        let temb = self.time2.forward(&self.time1.forward(&temb)?.silu()?)?;
        let h0 = self.input.forward(&Tensor::cat(&[x, mu], 1)?)?;
        let h1 = self.down1.forward(&h0, &temb)?;
        let h2 = self.down2.forward(&self.pool1.forward(&h1)?, &temb)?;
        let m = self.mid.forward(&self.pool2.forward(&h2)?, &temb)?;
        let m = self.attn.forward(&m)?;
        let (_, _, h, w) = h2.dims4()?;
        let u2 = self.up2.forward(
            &Tensor::cat(&[&m.upsample_nearest2d(h, w)?, &h2], 1)?,
            &temb,
        )?;
        let (_, _, h, w) = h1.dims4()?;
        let u1 = self.up1.forward(
            &Tensor::cat(&[&u2.upsample_nearest2d(h, w)?, &h1], 1)?,
            &temb,
        )?;
        self.out.forward(&u1)
    }
}

fn median_seconds(runs: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<(f64, Tensor)> {
    let mut times = Vec::with_capacity(runs);
    let mut out = f()?; // warm-up
    for _ in 0..runs {
        let start = Instant::now();
        out = f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], out))
}

fn main() -> Result<()> {
    process::configure_process();
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    // Built on the same variables: the second build reads what the first created.
    let plain = Net::<Plain>::new(vb.clone())?;
    let fast = Net::<Fast>::new(vb)?;
    let params: usize = map.all_vars().iter().map(|v| v.elem_count()).sum();
    let x = Tensor::randn(0f32, 1.0, (1, 3, size, size), &device)?;
    let mu = Tensor::randn(0f32, 1.0, (1, 3, size, size), &device)?.affine(0.2, 0.5)?;
    let (t_fast, y_fast) =
        median_seconds(runs, || on_pool(&device, || fast.forward(&x, &mu, &[37.0])))?;
    if args.get(3).map(String::as_str) == Some("fast") {
        println!("mrsampler_models::layers: {t_fast:.3} s per forward ({size}², median of {runs})");
        return Ok(());
    }
    let (t_plain, y_plain) = median_seconds(runs, || {
        on_pool(&device, || plain.forward(&x, &mu, &[37.0]))
    })?;
    let diff = (&y_fast - &y_plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = y_plain.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "custom conditional U-Net, {params} parameters, {size}², batch 1, {} threads, median of {runs}",
        candle_core::utils::get_num_threads()
    );
    println!("| layers | seconds per forward |");
    println!("|---|---|");
    println!("| mrsampler_models::layers | {t_fast:.3} |");
    println!("| candle_nn | {t_plain:.3} |");
    println!("outputs differ by {:.2e} of their magnitude", diff / scale);
    Ok(())
}
