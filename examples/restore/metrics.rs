//! Image quality metrics on `[1, 3, H, W]` tensors in `[0, 1]`.

use candle_core::{DType, Result, Tensor};

fn host(t: &Tensor) -> Result<(Vec<f64>, usize, usize)> {
    let (_, _, h, w) = t.dims4()?;
    Ok((
        t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        h,
        w,
    ))
}

/// Peak signal-to-noise ratio for data range 1 (∞ for identical images).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (x, _, _) = host(a)?;
    let (y, _, _) = host(b)?;
    let mse = x.iter().zip(&y).map(|(u, v)| (u - v).powi(2)).sum::<f64>() / x.len() as f64;
    Ok(-10.0 * mse.log10())
}

/// Structural similarity (Wang et al. 2004) for data range 1: Gaussian window σ = 1.5
/// (11 × 11), K₁ = 0.01, K₂ = 0.03, averaged over the three channels and over pixels at least
/// 5 from the border (as `skimage.metrics.structural_similarity` with `gaussian_weights=True`).
pub fn ssim(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (x, h, w) = host(a)?;
    let (y, _, _) = host(b)?;
    let r = 5usize;
    let g: Vec<f64> = (0..=2 * r)
        .map(|i| (-((i as f64 - r as f64).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    // Separable Gaussian filter with reflected borders.
    let blur = |img: &[f64]| -> Vec<f64> {
        let idx = |i: isize, n: usize| -> usize {
            let n = n as isize;
            let j = if i < 0 {
                -i - 1
            } else if i >= n {
                2 * n - i - 1
            } else {
                i
            };
            j.clamp(0, n - 1) as usize
        };
        let mut tmp = vec![0.0; h * w];
        for yy in 0..h {
            for xx in 0..w {
                tmp[yy * w + xx] = (0..=2 * r)
                    .map(|k| g[k] * img[yy * w + idx(xx as isize + k as isize - r as isize, w)])
                    .sum();
            }
        }
        let mut out = vec![0.0; h * w];
        for yy in 0..h {
            for xx in 0..w {
                out[yy * w + xx] = (0..=2 * r)
                    .map(|k| g[k] * tmp[idx(yy as isize + k as isize - r as isize, h) * w + xx])
                    .sum();
            }
        }
        out
    };
    let mut total = 0.0;
    for c in 0..3 {
        let xs = &x[c * h * w..(c + 1) * h * w];
        let ys = &y[c * h * w..(c + 1) * h * w];
        let prod =
            |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
        let (mx, my) = (blur(xs), blur(ys));
        let (sxx, syy, sxy) = (
            blur(&prod(xs, xs)),
            blur(&prod(ys, ys)),
            blur(&prod(xs, ys)),
        );
        let mut sum = 0.0;
        let mut count = 0usize;
        for yy in r..h.saturating_sub(r) {
            for xx in r..w.saturating_sub(r) {
                let i = yy * w + xx;
                let (vx, vy, cxy) = (
                    sxx[i] - mx[i] * mx[i],
                    syy[i] - my[i] * my[i],
                    sxy[i] - mx[i] * my[i],
                );
                sum += ((2.0 * mx[i] * my[i] + c1) * (2.0 * cxy + c2))
                    / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
                count += 1;
            }
        }
        total += sum / count.max(1) as f64;
    }
    Ok(total / 3.0)
}
