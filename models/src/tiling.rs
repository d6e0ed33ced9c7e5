//! Restoring images larger than a network evaluation should see: the network runs on
//! overlapping tiles, batched, and its outputs are blended back with smooth weights.
//!
//! The samplers' updates are elementwise, so tiling only the network evaluation is exact in
//! structure: the sampler steps the whole image, and at every evaluation [`Tiled`] cuts the
//! state and μ into tiles, evaluates them in batches of at most
//! [`TileSpec::batch`] (one network call per step when every tile fits in one batch) and
//! blends the outputs. Each tile's weight is 1 in its interior and falls to a small positive
//! value with a raised-cosine ramp across the overlap on every side that has a neighbour, so
//! tile borders leave no seam. When one tile covers the image the network sees the image
//! itself, and the result equals the untiled one exactly.

use candle_core::{DType, Device, Tensor};
use mrsampler::{FitTarget, ModelError, ScoreModel};

use crate::error::{Error, Result};

/// How to cut an image into tiles: built by [`TileSpec::new`], which checks it, so every
/// value of the type is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileSpec {
    size: usize,
    overlap: usize,
    batch: usize,
}

/// Refuses a tiling that cannot cover an image (`size > overlap >= 0`).
fn check_tiling(size: usize, overlap: usize) -> Result<()> {
    if size == 0 || overlap >= size {
        return Err(Error::Input {
            reason: format!(
                "tiling needs a tile size larger than the overlap (got size {size}, overlap \
                 {overlap}); e.g. size 256 with overlap 32"
            ),
        });
    }
    Ok(())
}

impl TileSpec {
    /// Tiles of `size` pixels overlapping by `overlap`, evaluated `batch` at a time.
    ///
    /// # Errors
    /// [`Error::Input`] unless `size > overlap >= 0` and `batch >= 1`.
    pub fn new(size: usize, overlap: usize, batch: usize) -> Result<Self> {
        check_tiling(size, overlap)?;
        if batch == 0 {
            return Err(Error::Input {
                reason: "tiling needs at least one tile per network call (batch 0 given)".into(),
            });
        }
        Ok(Self {
            size,
            overlap,
            batch,
        })
    }

    /// Tile side in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Overlap between neighbouring tiles in pixels (less than the size).
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Most tiles per network call (bounds the activation memory).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The tiles' start offsets along an axis of `len` pixels (see [`tile_origins`]).
    pub fn origins(&self, len: usize) -> Vec<usize> {
        origins(len, self.size, self.overlap)
    }
}

/// Start offsets of tiles of `size` with at least `overlap` pixels of overlap covering
/// `len` pixels; the last tile ends at `len`. One tile at 0 when `size >= len`.
///
/// # Errors
/// [`Error::Input`] unless `size > overlap >= 0`.
pub fn tile_origins(len: usize, size: usize, overlap: usize) -> Result<Vec<usize>> {
    check_tiling(size, overlap)?;
    Ok(origins(len, size, overlap))
}

/// [`tile_origins`] for a checked `size > overlap`.
fn origins(len: usize, size: usize, overlap: usize) -> Vec<usize> {
    if size >= len {
        return vec![0];
    }
    let stride = size - overlap;
    // The fewest tiles whose uniform spacing keeps the overlap.
    let n = (len - overlap).div_ceil(stride);
    let span = len - size;
    (0..n)
        .map(|i| {
            if n == 1 {
                0
            } else {
                (i * span + (n - 1) / 2) / (n - 1)
            }
        })
        .collect()
}

/// One axis of a tile's blending weight: 1 inside, a raised-cosine ramp over `ramp` pixels
/// towards each side that has a neighbour (`before`, `after`), never below a small floor.
fn window(len: usize, ramp: usize, before: bool, after: bool) -> Vec<f32> {
    let floor = 1e-3f32;
    (0..len)
        .map(|i| {
            let rise = |d: usize| {
                if ramp == 0 || d >= ramp {
                    1.0
                } else {
                    let u = (d as f32 + 0.5) / ramp as f32;
                    (0.5 - 0.5 * (std::f32::consts::PI * u).cos()).max(floor)
                }
            };
            let a = if before { rise(i) } else { 1.0 };
            let b = if after { rise(len - 1 - i) } else { 1.0 };
            a.min(b)
        })
        .collect()
}

/// A network evaluated on tiles.
#[derive(Debug)]
pub struct Tiled<M> {
    inner: M,
    spec: TileSpec,
}

impl<M> Tiled<M> {
    /// Evaluates `inner` on tiles of `spec`.
    pub fn new(inner: M, spec: TileSpec) -> Self {
        Self { inner, spec }
    }

    /// The wrapped network.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped network, to change it (e.g. to give it a whole image's contexts before
    /// a tiled restore).
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// The tiling.
    pub fn spec(&self) -> TileSpec {
        self.spec
    }

    /// The number of tiles an `height × width` image is cut into.
    pub fn tile_count(&self, height: usize, width: usize) -> usize {
        let s = self.spec;
        s.origins(height).len() * s.origins(width).len()
    }
}

impl<M: ScoreModel<Tensor>> Tiled<M> {
    /// The blended prediction; the inner network's errors pass through unchanged (with their
    /// sources), the tiling's own are this crate's.
    ///
    /// `t` holds one time, or one per image of the batch (each image's tiles are evaluated at
    /// its time, so tiles of several images share the inner network's calls).
    fn evaluate(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, ModelError> {
        let (b, c, h, w) = x.dims4().map_err(|e| Error::Input {
            reason: format!("tiling takes (batch, channels, height, width) tensors: {e}"),
        })?;
        if t.len() != 1 && t.len() != b {
            return Err(ModelError::msg(format!(
                "{} times for a batch of {b}: give one time per sample",
                t.len()
            )));
        }
        let s = self.spec;
        let (ys, xs) = (s.origins(h), s.origins(w));
        // The inner network on `n` tiles of the whole batch (tile-major, image-minor).
        let mut inner = |x: &Tensor, mu: &Tensor, n: usize| match t {
            [one] => self.inner.predict(x, mu, *one),
            per_image => {
                let times: Vec<f64> = (0..n).flat_map(|_| per_image.iter().copied()).collect();
                self.inner.predict_per_sample(x, mu, &times)
            }
        };
        if ys.len() == 1 && xs.len() == 1 {
            // One tile covers the image: the network sees the image itself.
            return inner(x, mu, 1);
        }
        let (th, tw) = (s.size.min(h), s.size.min(w));
        // Blended on the host: one copy of each tile's output, whatever the device.
        let mut acc = vec![0f32; b * c * h * w];
        let mut weight_sum = vec![0f32; h * w];
        let tiles: Vec<(usize, usize)> = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x0| (y, x0)))
            .collect();
        for chunk in tiles.chunks(s.batch.max(1)) {
            let cut = |t: &Tensor| -> Result<Tensor> {
                let parts: Vec<Tensor> = chunk
                    .iter()
                    .map(|&(y, x0)| t.narrow(2, y, th)?.narrow(3, x0, tw))
                    .collect::<candle_core::Result<_>>()?;
                Ok(Tensor::cat(&parts, 0)?)
            };
            let out = inner(&cut(x)?, &cut(mu)?, chunk.len())?;
            let out: Vec<f32> = out
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1()?;
            for (k, &(y, x0)) in chunk.iter().enumerate() {
                let wy = window(th, s.overlap, y > 0, y + th < h);
                let wx = window(tw, s.overlap, x0 > 0, x0 + tw < w);
                for (i, &a) in wy.iter().enumerate() {
                    for (j, &bw) in wx.iter().enumerate() {
                        weight_sum[(y + i) * w + x0 + j] += a * bw;
                    }
                }
                for bc in 0..b * c {
                    let src = &out[(k * b * c + bc) * th * tw..][..th * tw];
                    let dst = &mut acc[bc * h * w..][..h * w];
                    for (i, &a) in wy.iter().enumerate() {
                        let row = &mut dst[(y + i) * w + x0..][..tw];
                        for ((d, &v), &bw) in row.iter_mut().zip(&src[i * tw..][..tw]).zip(&wx) {
                            *d += a * bw * v;
                        }
                    }
                }
            }
        }
        for plane in acc.chunks_mut(h * w) {
            for (v, &ws) in plane.iter_mut().zip(&weight_sum) {
                *v /= ws;
            }
        }
        let device = x.device();
        Ok(Tensor::from_vec(acc, (b, c, h, w), device)?.to_dtype(x.dtype())?)
    }
}

impl<M: ScoreModel<Tensor>> ScoreModel<Tensor> for Tiled<M> {
    fn fit_target(&self) -> FitTarget {
        self.inner.fit_target()
    }

    fn predict(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: f64,
    ) -> std::result::Result<Tensor, ModelError> {
        self.evaluate(x, mu, &[t])
    }

    fn predict_per_sample(
        &mut self,
        x: &Tensor,
        mu: &Tensor,
        t: &[f64],
    ) -> std::result::Result<Tensor, ModelError> {
        self.evaluate(x, mu, t)
    }

    fn input_rank(&self) -> Option<usize> {
        Some(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_with_the_overlap() {
        for (len, size, overlap) in [(100, 32, 8), (1000, 256, 32), (257, 256, 32), (64, 64, 0)] {
            let o = tile_origins(len, size, overlap).unwrap();
            assert_eq!(o[0], 0);
            assert_eq!(o.last().copied().unwrap() + size.min(len), len, "{o:?}");
            for w in o.windows(2) {
                assert!(w[1] > w[0] && w[0] + size >= w[1] + overlap, "{len} {o:?}");
            }
        }
        assert_eq!(tile_origins(50, 64, 8).unwrap(), vec![0]);
        // An overlap as large as the tile would never advance: refused, not an underflow.
        assert!(tile_origins(100, 32, 32).is_err());
        assert!(tile_origins(100, 0, 0).is_err());
    }

    #[test]
    fn windows_are_one_inside_and_ramp_where_there_are_neighbours() {
        let w = window(16, 4, true, false);
        assert!(
            w[0] < 0.2 && w[3] > 0.8 && w[4..].iter().all(|&v| v == 1.0),
            "{w:?}"
        );
        assert!(window(8, 4, false, false).iter().all(|&v| v == 1.0));
        assert!(window(8, 4, true, true).iter().all(|&v| v > 0.0));
    }
}
