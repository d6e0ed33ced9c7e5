//! The shipped restoration network (trained by `tools/train_restore.py`), in candle.
//!
//! A two-level U-Net on `concat(x_t − μ, μ)` with a sinusoidal embedding of the raw index time,
//! predicting the noise `ε`. Layer names match the PyTorch `state_dict`, so the weights load
//! from `assets/restore/model.safetensors` unchanged.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, conv2d, linear};
use mrsampler::{FitTarget, ModelError, ScoreModel};

fn conv(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(
        cin,
        cout,
        3,
        Conv2dConfig {
            padding: 1,
            stride,
            ..Default::default()
        },
        vb,
    )
}

struct ResBlock {
    conv1: Conv2d,
    temb: Linear,
    conv2: Conv2d,
}

impl ResBlock {
    fn new(ch: usize, temb: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(ch, ch, 1, vb.pp("conv1"))?,
            temb: linear(temb, ch, vb.pp("temb"))?,
            conv2: conv(ch, ch, 1, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let bias = self.temb.forward(emb)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = self.conv1.forward(&x.silu()?)?.broadcast_add(&bias)?;
        let h = self.conv2.forward(&h.silu()?)?;
        x + h
    }
}

/// The restoration network; a [`ScoreModel`] on `candle_core::Tensor` images `[B, 3, H, W]`
/// (H and W even).
pub struct RestoreNet {
    t1: Linear,
    t2: Linear,
    inc: Conv2d,
    res1: ResBlock,
    down: Conv2d,
    res2: ResBlock,
    res3: ResBlock,
    up: Conv2d,
    merge: Conv2d,
    res4: ResBlock,
    outc: Conv2d,
}

/// Sinusoidal embedding of the raw index time (32 features).
fn timestep_embedding(t: &Tensor) -> Result<Tensor> {
    let half = 16;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::new(freqs.as_slice(), t.device())?.unsqueeze(0)?;
    let args = t.unsqueeze(1)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.sin()?, args.cos()?], D::Minus1)
}

impl RestoreNet {
    /// Builds the network from a var builder (weights named as in the PyTorch module).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let (ch, temb) = (32, 64);
        Ok(Self {
            t1: linear(32, temb, vb.pp("t1"))?,
            t2: linear(temb, temb, vb.pp("t2"))?,
            inc: conv(6, ch, 1, vb.pp("inc"))?,
            res1: ResBlock::new(ch, temb, vb.pp("res1"))?,
            down: conv(ch, 2 * ch, 2, vb.pp("down"))?,
            res2: ResBlock::new(2 * ch, temb, vb.pp("res2"))?,
            res3: ResBlock::new(2 * ch, temb, vb.pp("res3"))?,
            up: conv(2 * ch, ch, 1, vb.pp("up"))?,
            merge: conv(2 * ch, ch, 1, vb.pp("merge"))?,
            res4: ResBlock::new(ch, temb, vb.pp("res4"))?,
            outc: conv(ch, 3, 1, vb.pp("outc"))?,
        })
    }

    /// Loads the weights from a safetensors file onto `device` (f32).
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        // SAFETY-free loading: read the file into memory (it is ~1 MB).
        let vb = VarBuilder::from_buffered_safetensors(std::fs::read(path)?, DType::F32, device)?;
        Self::new(vb)
    }

    /// The noise prediction for states `x`, means `mu` and one index time per sample.
    pub fn forward(&self, x: &Tensor, mu: &Tensor, t: &Tensor) -> Result<Tensor> {
        let emb = self
            .t2
            .forward(&self.t1.forward(&timestep_embedding(t)?)?.silu()?)?;
        let input = Tensor::cat(&[(x - mu)?, mu.clone()], 1)?;
        let h0 = self.res1.forward(&self.inc.forward(&input)?, &emb)?;
        let h = self
            .res3
            .forward(&self.res2.forward(&self.down.forward(&h0)?, &emb)?, &emb)?;
        let (_, _, hh, ww) = h.dims4()?;
        let h = self.up.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
        let h = self
            .res4
            .forward(&self.merge.forward(&Tensor::cat(&[h, h0], 1)?)?, &emb)?;
        self.outc.forward(&h.silu()?)
    }
}

impl ScoreModel<Tensor> for RestoreNet {
    fn fit_target(&self) -> FitTarget {
        FitTarget::Noise
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, ModelError> {
        let b = x.dims()[0];
        let tt = Tensor::full(t as f32, b, x.device())?;
        Ok(self.forward(x, mu, &tt)?)
    }
}
