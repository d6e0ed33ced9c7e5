//! Image quality measures on one image, `[C, H, W]` planes of values in `[0, 1]`.

/// Peak signal-to-noise ratio for data range 1, in dB (`+∞` for identical images).
pub fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    -10.0 * mse.log10()
}

/// Structural similarity (Wang et al. 2004) for data range 1, averaged over channels.
///
/// The convention, stated exactly because implementations differ: local statistics with an
/// 11 × 11 Gaussian window of σ = 1.5 (separable, truncated at 3.5σ, borders mirrored as
/// `d c b a | a b c d`), *population* (biased) variances and covariance, `K₁ = 0.01`,
/// `K₂ = 0.03`, and the mean over pixels at least 5 from the border. This equals
/// `skimage.metrics.structural_similarity(a, b, data_range=1, channel_axis=0,
/// gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`; scikit-image's default
/// `use_sample_covariance=True` scales the variances by `N/(N − 1)` (`N = 121`) instead.
pub fn ssim(a: &[f64], b: &[f64], channels: usize, h: usize, w: usize) -> f64 {
    let r = 5usize;
    let g: Vec<f64> = (0..=2 * r)
        .map(|i| (-((i as f64 - r as f64).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mirror = |i: isize, n: usize| -> usize {
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
    let blur = |img: &[f64]| -> Vec<f64> {
        let mut tmp = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                tmp[y * w + x] = (0..=2 * r)
                    .map(|k| g[k] * img[y * w + mirror(x as isize + k as isize - r as isize, w)])
                    .sum();
            }
        }
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = (0..=2 * r)
                    .map(|k| g[k] * tmp[mirror(y as isize + k as isize - r as isize, h) * w + x])
                    .sum();
            }
        }
        out
    };
    let prod = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
    let mut total = 0.0;
    for c in 0..channels {
        let xs = &a[c * h * w..(c + 1) * h * w];
        let ys = &b[c * h * w..(c + 1) * h * w];
        let (mx, my) = (blur(xs), blur(ys));
        let (sxx, syy, sxy) = (
            blur(&prod(xs, xs)),
            blur(&prod(ys, ys)),
            blur(&prod(xs, ys)),
        );
        let mut sum = 0.0;
        let mut count = 0usize;
        for y in r..h.saturating_sub(r) {
            for x in r..w.saturating_sub(r) {
                let i = y * w + x;
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
    total / channels.max(1) as f64
}

/// Sharpness relative to the ground truth: the ratio of gradient energies
/// `Σ |∇a|² / Σ |∇gt|²` (forward differences in x and y, all channels). 1 is as sharp as the
/// ground truth; below 1 blurrier (detail lost), above 1 noisier (residual noise or invented
/// texture). PSNR alone rewards blur; this shows it.
pub fn gradient_energy_ratio(a: &[f64], gt: &[f64], channels: usize, h: usize, w: usize) -> f64 {
    let energy = |p: &[f64]| -> f64 {
        let mut e = 0.0;
        for c in 0..channels {
            let q = &p[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let v = q[y * w + x];
                    if x + 1 < w {
                        e += (q[y * w + x + 1] - v).powi(2);
                    }
                    if y + 1 < h {
                        e += (q[(y + 1) * w + x] - v).powi(2);
                    }
                }
            }
        }
        e
    };
    energy(a) / energy(gt)
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values computed by scikit-image 0.26 (`tools/ssim_reference.py`) for the
    /// shipped test crops against their degraded versions: an independent implementation.
    #[test]
    fn ssim_matches_scikit_image_population_convention() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ssim_reference.txt"
        ))
        .unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (name, population, sample, psnr_ref) = (
                f[0],
                f[1].parse::<f64>().unwrap(),
                f[2].parse::<f64>().unwrap(),
                f[3].parse::<f64>().unwrap(),
            );
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/eval/test");
            let load = |kind: &str| {
                let p =
                    crate::images::read(std::path::Path::new(&format!("{root}/{kind}/{name}.png")))
                        .unwrap();
                let v: Vec<f64> = p.pixels.iter().map(|&x| x as f64).collect();
                (v, p.channels, p.height, p.width)
            };
            let ((a, c, h, w), (b, ..)) = (load("gt"), load("degraded"));
            let s = ssim(&a, &b, c, h, w);
            assert!(
                (s - population).abs() < 1e-6,
                "{name}: {s} vs skimage {population}"
            );
            assert!(
                (s - sample).abs() > 1e-4,
                "{name}: the two conventions differ here"
            );
            assert!((psnr(&a, &b) - psnr_ref).abs() < 1e-6, "{name}: PSNR");
            checked += 1;
        }
        assert_eq!(checked, 6);
    }

    #[test]
    fn gradient_energy_ratio_of_a_blurred_image_is_below_one() {
        let (h, w) = (16, 16);
        let gt: Vec<f64> = (0..h * w)
            .map(|i| ((i * 7919) % 13) as f64 / 13.0)
            .collect();
        assert!((gradient_energy_ratio(&gt, &gt, 1, h, w) - 1.0).abs() < 1e-12);
        let mut blur = gt.clone();
        for y in 0..h {
            for x in 1..w - 1 {
                blur[y * w + x] = (gt[y * w + x - 1] + gt[y * w + x] + gt[y * w + x + 1]) / 3.0;
            }
        }
        assert!(gradient_energy_ratio(&blur, &gt, 1, h, w) < 0.8);
    }

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-15);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }
}
