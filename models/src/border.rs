//! Mirrored borders: the network sees each image (or tile) extended by mirrored pixels on every
//! side, and its output is cropped back to the image.
//!
//! A convolutional network's output near an image edge depends on what its convolutions see
//! beyond the edge (zeros), which it may have learned badly: a network trained on crops whose
//! bottom and right edges were mostly followed by its own zero padding (to a multiple of its
//! down-sampling factor) predicts worse at edges that are not, and every network sees only
//! zeros past the top and left edges. With a mirrored margin the edge pixels sit inside
//! mirrored content, as interior pixels do, and the zeros move `margin` pixels away. The
//! samplers' updates are elementwise, so only the network evaluation changes.

use candle_core::Tensor;
use mrsampler::{FitTarget, ModelError, ScoreModel};

use crate::blocks::mirror_extend;
use crate::error::Result;

/// A network evaluated on its input extended by `margin` mirrored pixels on every side.
#[derive(Debug, Clone)]
pub struct Mirrored<M> {
    inner: M,
    margin: usize,
}

impl<M> Mirrored<M> {
    /// `inner` with a mirrored margin of `margin` pixels (0: `inner` unchanged).
    pub fn new(inner: M, margin: usize) -> Self {
        Self { inner, margin }
    }

    /// The wrapped network.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped network, to change it.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// The margin in pixels.
    pub fn margin(&self) -> usize {
        self.margin
    }
}

/// `x` (`[B, C, H, W]`) extended by `margin` mirrored pixels on every side: the edge pixel is
/// not repeated (PyTorch's `'reflect'`), and a margin longer than a side keeps mirroring back
/// and forth.
pub fn mirror_pad(x: &Tensor, margin: usize) -> Result<Tensor> {
    let x = mirror_extend(x, 2, margin, margin)?;
    mirror_extend(&x, 3, margin, margin)
}

impl<M> Mirrored<M> {
    /// `evaluate` on the mirror-padded `x` and `μ`, its output cropped back.
    fn padded(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        evaluate: impl FnOnce(&mut M, &Tensor, &Tensor) -> std::result::Result<Tensor, ModelError>,
    ) -> std::result::Result<Tensor, ModelError> {
        let (_, _, h, w) = x.dims4()?;
        let out = evaluate(
            &mut self.inner,
            &mirror_pad(x, self.margin)?,
            &mirror_pad(mu, self.margin)?,
        )?;
        Ok(out.narrow(2, self.margin, h)?.narrow(3, self.margin, w)?)
    }
}

impl<M: ScoreModel<Tensor>> ScoreModel<Tensor> for Mirrored<M> {
    fn fit_target(&self) -> FitTarget {
        self.inner.fit_target()
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, ModelError> {
        if self.margin == 0 {
            return self.inner.predict(x, mu, t);
        }
        self.padded(x, mu, |inner, x, mu| inner.predict(x, mu, t))
    }

    fn predict_per_sample(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, ModelError> {
        if self.margin == 0 {
            return self.inner.predict_per_sample(x, mu, t);
        }
        self.padded(x, mu, |inner, x, mu| inner.predict_per_sample(x, mu, t))
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::mirror_index;
    use candle_core::Device;

    #[test]
    fn mirror_indices_reflect_without_repeating_the_edge() {
        let got: Vec<i64> = (-3..7).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert!((-5..6).all(|i| mirror_index(i, 1) == 0));
    }

    #[test]
    fn mirror_pad_extends_every_side() {
        let x = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 3))
            .unwrap();
        let y = mirror_pad(&x, 1).unwrap();
        assert_eq!(y.dims(), &[1, 1, 4, 5]);
        let rows: Vec<Vec<f32>> = y.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        // Rows mirror 1 0 1 0 (of 2 rows), columns 1 0 1 2 1.
        assert_eq!(rows[0], vec![4.0, 3.0, 4.0, 5.0, 4.0]);
        assert_eq!(rows[1], vec![1.0, 0.0, 1.0, 2.0, 1.0]);
        assert_eq!(rows[2], rows[0]);
        assert_eq!(rows[3], rows[1]);
    }

    /// A pointwise network is unchanged by the margin; a 3-point average along the rows is
    /// unchanged inside and sees mirrored neighbours at the edges instead of zeros.
    #[test]
    fn the_output_is_cropped_back_to_the_image() {
        struct Blur;
        impl ScoreModel<Tensor> for Blur {
            fn fit_target(&self) -> FitTarget {
                FitTarget::Noise
            }
            fn predict(
                &mut self,
                x: &Tensor,
                _: &Tensor,
                _: f64,
            ) -> std::result::Result<Tensor, ModelError> {
                // Zero-padded 3-tap mean along the width.
                let w = x.dim(3)?;
                let p = x.pad_with_zeros(3, 1, 1)?;
                let sum = (p.narrow(3, 0, w)? + p.narrow(3, 1, w)?)?;
                Ok(((sum + p.narrow(3, 2, w)?)? / 3.0)?)
            }
        }
        let x = Tensor::new(&[[[[3f32, 6.0, 9.0, 12.0]]]], &Device::Cpu).unwrap();
        let plain: Vec<f32> = Blur
            .predict(&x, &x, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut m = Mirrored::new(Blur, 2);
        let out = m.predict(&x, &x, 1.0).unwrap();
        assert_eq!(out.dims(), x.dims());
        let got: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got[1..3], plain[1..3]);
        // Edges: (6 + 3 + 6) / 3 and (9 + 12 + 9) / 3, where zeros gave 3 and 7.
        assert_eq!((got[0], got[3]), (5.0, 10.0));
        assert_eq!((plain[0], plain[3]), (3.0, 7.0));
    }
}
