//! Classical denoisers: the baselines a restoration network must beat, printed by `eval` beside
//! the samplers. Each works on planar `[C, H, W]` images in `[0, 1]` (f64) and has one
//! parameter, chosen on a validation set ([`Classical::choose`]), never on the images it is
//! reported on.
//!
//! * Gaussian blur (separable, σ in pixels, kernel truncated at 4σ, mirrored borders);
//! * total variation, Chambolle's projection algorithm (A. Chambolle, *An algorithm for total
//!   variation minimization and applications*, JMIV 2004) on each channel, with the stopping
//!   rule of scikit-image's `denoise_tv_chambolle` (relative energy change below 2·10⁻⁴, at
//!   most 200 iterations);
//! * non-local means (Buades, Coll and Morel, CVPR 2005): 5×5 patches averaged over channels,
//!   a 13×13 search window, weights `exp(−max(d² − 2σ², 0) / h²)` with the noise σ known.

use std::fmt;

/// A classical denoiser with its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Classical {
    /// Gaussian blur of standard deviation `sigma` pixels.
    GaussianBlur { sigma: f64 },
    /// Total-variation denoising with data-term weight `weight` (larger: smoother).
    TotalVariation { weight: f64 },
    /// Non-local means with filtering parameter `h` and the noise level `sigma` (both in
    /// `[0, 1]` units).
    NonLocalMeans { h: f64, sigma: f64 },
}

/// Patch side of non-local means.
const NLM_PATCH: usize = 5;
/// Search-window radius of non-local means (13 × 13 window).
const NLM_SEARCH: usize = 6;

impl Classical {
    /// The candidates of each family searched on the validation set: blur σ 0.4–2.5 px, TV
    /// weight 0.02–0.30, NLM `h` 0.3–1.5 × the noise σ.
    pub fn families(noise_sigma: f64) -> Vec<Vec<Classical>> {
        let blur = (4..=25)
            .map(|k| Classical::GaussianBlur {
                sigma: f64::from(k) * 0.1,
            })
            .collect();
        let tv = (1..=15)
            .map(|k| Classical::TotalVariation {
                weight: f64::from(k) * 0.02,
            })
            .collect();
        let nlm = (3..=15)
            .map(|k| Classical::NonLocalMeans {
                h: f64::from(k) * 0.1 * noise_sigma,
                sigma: noise_sigma,
            })
            .collect();
        vec![blur, tv, nlm]
    }

    /// The candidate of `family` with the highest mean PSNR on the validation pairs
    /// `(degraded, clean)`, and that PSNR.
    pub fn choose(
        family: &[Classical],
        pairs: &[(Vec<f64>, Vec<f64>)],
        dims: &[(usize, usize, usize)],
    ) -> Option<(Classical, f64)> {
        family
            .iter()
            .map(|f| {
                let mean = pairs
                    .iter()
                    .zip(dims)
                    .map(|((d, g), &dims)| crate::metrics::psnr(&f.apply(d, dims), g))
                    .sum::<f64>()
                    / pairs.len() as f64;
                (*f, mean)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Denoises `img` (`[C, H, W]`, row-major).
    pub fn apply(&self, img: &[f64], (c, h, w): (usize, usize, usize)) -> Vec<f64> {
        let plane = h * w;
        match *self {
            Classical::GaussianBlur { sigma } => img
                .chunks(plane)
                .flat_map(|p| gaussian_blur(p, h, w, sigma))
                .collect(),
            Classical::TotalVariation { weight } => img
                .chunks(plane)
                .flat_map(|p| tv_chambolle(p, h, w, weight))
                .collect(),
            Classical::NonLocalMeans { h: hh, sigma } => non_local_means(img, c, h, w, hh, sigma),
        }
    }

    /// The family's name (`gaussian-blur`, `total-variation`, `non-local-means`).
    pub fn family(&self) -> &'static str {
        match self {
            Classical::GaussianBlur { .. } => "gaussian-blur",
            Classical::TotalVariation { .. } => "total-variation",
            Classical::NonLocalMeans { .. } => "non-local-means",
        }
    }
}

impl fmt::Display for Classical {
    /// `FAMILY(PARAM=VALUE)`, e.g. `gaussian-blur(sigma=1.1)`, `non-local-means(h=0.7sigma)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Classical::GaussianBlur { sigma } => write!(f, "gaussian-blur(sigma={sigma:.1}px)"),
            Classical::TotalVariation { weight } => {
                write!(f, "total-variation(weight={weight:.2})")
            }
            Classical::NonLocalMeans { h, sigma } => {
                write!(f, "non-local-means(h={:.1}sigma)", h / sigma)
            }
        }
    }
}

/// Mirrored index (`… 2 1 0 | 0 1 2 … n−1 | n−1 n−2 …`), for any offset.
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// Separable Gaussian blur of one `h × w` plane.
fn gaussian_blur(p: &[f64], h: usize, w: usize, sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma).ceil() as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    // Along the rows (step 1, length w), then along the columns (step w, length h).
    let along = |src: &[f64], step: usize, len: usize| -> Vec<f64> {
        (0..h * w)
            .map(|i| {
                let (pos, base) = ((i / step) % len, i - (i / step) % len * step);
                k.iter()
                    .enumerate()
                    .map(|(j, kv)| {
                        kv * src[base + mirror(pos as isize + j as isize - r, len) * step]
                    })
                    .sum()
            })
            .collect()
    };
    let rows = along(p, 1, w);
    along(&rows, w, h)
}

/// Chambolle's projection algorithm on one `h × w` plane (forward differences, zero at the
/// last row/column; step τ = 1/4).
fn tv_chambolle(img: &[f64], h: usize, w: usize, weight: f64) -> Vec<f64> {
    const EPS: f64 = 2e-4;
    const MAX_ITER: usize = 200;
    let n = h * w;
    let (mut py, mut px) = (vec![0.0; n], vec![0.0; n]);
    let mut out = img.to_vec();
    let tau = 0.25;
    let (mut e_init, mut e_prev) = (0.0, 0.0);
    for i in 0..MAX_ITER {
        let mut energy = 0.0;
        if i > 0 {
            // d = −div(p) with the adjoint of the forward difference; out = img + d.
            for y in 0..h {
                for x in 0..w {
                    let k = y * w + x;
                    let mut d = -py[k] - px[k];
                    if y > 0 {
                        d += py[k - w];
                    }
                    if x > 0 {
                        d += px[k - 1];
                    }
                    energy += d * d;
                    out[k] = img[k] + d;
                }
            }
        }
        let mut tv = 0.0;
        for y in 0..h {
            for x in 0..w {
                let k = y * w + x;
                let gy = if y + 1 < h { out[k + w] - out[k] } else { 0.0 };
                let gx = if x + 1 < w { out[k + 1] - out[k] } else { 0.0 };
                let norm = (gy * gy + gx * gx).sqrt();
                tv += norm;
                let scale = 1.0 + norm * tau / weight;
                py[k] = (py[k] - tau * gy) / scale;
                px[k] = (px[k] - tau * gx) / scale;
            }
        }
        energy = (energy + weight * tv) / n as f64;
        if i == 0 {
            (e_init, e_prev) = (energy, energy);
        } else if (e_prev - energy).abs() < EPS * e_init {
            break;
        } else {
            e_prev = energy;
        }
    }
    out
}

/// Non-local means of a `[C, H, W]` image: for every offset of the search window, the patch
/// distances of all pixels at once by a box sum of the squared differences.
fn non_local_means(img: &[f64], c: usize, h: usize, w: usize, hh: f64, sigma: f64) -> Vec<f64> {
    let half = (NLM_PATCH / 2) as isize;
    let s = NLM_SEARCH as isize;
    let pad = (half + s) as usize;
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let plane = h * w;
    // Mirrored padding, so border pixels have full patches and windows.
    let padded: Vec<Vec<f64>> = (0..c)
        .map(|ch| {
            let src = &img[ch * plane..(ch + 1) * plane];
            let mut v = vec![0.0; ph * pw];
            for y in 0..ph {
                for x in 0..pw {
                    let sy = mirror(y as isize - pad as isize, h);
                    let sx = mirror(x as isize - pad as isize, w);
                    v[y * pw + x] = src[sy * w + sx];
                }
            }
            v
        })
        .collect();
    let patch_area = (NLM_PATCH * NLM_PATCH * c) as f64;
    let (h2, two_s2) = (hh * hh, 2.0 * sigma * sigma);
    let mut num = vec![0.0; c * plane];
    let mut den = vec![0.0; plane];
    // Region over which squared differences are needed: the image plus the patch half-width.
    let (rh, rw) = (h + 2 * half as usize, w + 2 * half as usize);
    let mut diff = vec![0.0; rh * rw];
    let mut integral = vec![0.0; (rh + 1) * (rw + 1)];
    for dy in -s..=s {
        for dx in -s..=s {
            for y in 0..rh {
                for x in 0..rw {
                    let (py0, px0) = (y + s as usize, x + s as usize);
                    let a = py0 * pw + px0;
                    let b = (py0 as isize + dy) as usize * pw + (px0 as isize + dx) as usize;
                    diff[y * rw + x] = padded.iter().map(|p| (p[a] - p[b]).powi(2)).sum();
                }
            }
            for y in 0..rh {
                let mut row = 0.0;
                for x in 0..rw {
                    row += diff[y * rw + x];
                    integral[(y + 1) * (rw + 1) + x + 1] = integral[y * (rw + 1) + x + 1] + row;
                }
            }
            let p = NLM_PATCH;
            for y in 0..h {
                for x in 0..w {
                    let at = |yy: usize, xx: usize| integral[yy * (rw + 1) + xx];
                    let box_sum = at(y + p, x + p) - at(y, x + p) - at(y + p, x) + at(y, x);
                    let d2 = box_sum / patch_area;
                    let weight = (-(d2 - two_s2).max(0.0) / h2).exp();
                    den[y * w + x] += weight;
                    let q = (y as isize + pad as isize + dy) as usize * pw
                        + (x as isize + pad as isize + dx) as usize;
                    for ch in 0..c {
                        num[ch * plane + y * w + x] += weight * padded[ch][q];
                    }
                }
            }
        }
    }
    (0..c * plane).map(|k| num[k] / den[k % plane]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth 3-channel test image and a noisy copy (fixed pseudo-random noise).
    fn noisy(h: usize, w: usize, sigma: f64) -> (Vec<f64>, Vec<f64>) {
        let clean: Vec<f64> = (0..3 * h * w)
            .map(|k| {
                let (ch, y, x) = (k / (h * w), (k / w) % h, k % w);
                0.5 + 0.3 * ((x as f64 * 0.2 + ch as f64).sin() * (y as f64 * 0.15).cos())
            })
            .collect();
        let mut state = 12345u64;
        let noisy = clean
            .iter()
            .map(|v| {
                // Sum of 12 uniforms: approximately normal, unit variance.
                let g: f64 = (0..12)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (state >> 11) as f64 / (1u64 << 53) as f64
                    })
                    .sum::<f64>()
                    - 6.0;
                v + sigma * g
            })
            .collect();
        (clean, noisy)
    }

    #[test]
    fn mirror_reflects_at_both_ends() {
        let got: Vec<usize> = (-3..8).map(|i| mirror(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn every_denoiser_keeps_a_constant_image() {
        let img = vec![0.3; 3 * 9 * 7];
        for f in [
            Classical::GaussianBlur { sigma: 1.3 },
            Classical::TotalVariation { weight: 0.1 },
            Classical::NonLocalMeans { h: 0.1, sigma: 0.1 },
        ] {
            let out = f.apply(&img, (3, 9, 7));
            assert!(out.iter().all(|v| (v - 0.3).abs() < 1e-12), "{f}");
        }
    }

    #[test]
    fn gaussian_blur_of_an_impulse_is_the_normalised_kernel() {
        let (h, w) = (21, 21);
        let mut p = vec![0.0; h * w];
        p[10 * w + 10] = 1.0;
        let sigma = 1.5;
        let out = gaussian_blur(&p, h, w, sigma);
        let total: f64 = out.iter().sum();
        assert!((total - 1.0).abs() < 1e-12);
        // Ratio of neighbouring taps: exp(−(1² − 0²) / 2σ²) in each direction.
        let ratio = out[10 * w + 11] / out[10 * w + 10];
        assert!((ratio - (-1.0 / (2.0 * sigma * sigma)).exp()).abs() < 1e-12);
        assert!((out[9 * w + 10] - out[10 * w + 11]).abs() < 1e-15);
    }

    #[test]
    fn tv_reduces_total_variation_and_stays_close_to_the_data() {
        let (clean, noisy) = noisy(24, 24, 0.1);
        let plane = &noisy[..24 * 24];
        let tv = |p: &[f64]| -> f64 { (0..23 * 24).map(|k| (p[k + 24] - p[k]).abs()).sum::<f64>() };
        let out = tv_chambolle(plane, 24, 24, 0.1);
        assert!(tv(&out) < 0.5 * tv(plane));
        let err = |a: &[f64]| -> f64 {
            a.iter()
                .zip(&clean[..24 * 24])
                .map(|(x, y)| (x - y).powi(2))
                .sum()
        };
        assert!(err(&out) < err(plane));
    }

    #[test]
    fn each_family_denoises_a_smooth_image() {
        let (clean, noisy) = noisy(32, 32, 0.1);
        let before = crate::metrics::psnr(&noisy, &clean);
        for family in Classical::families(0.1) {
            let (best, psnr) =
                Classical::choose(&family, &[(noisy.clone(), clean.clone())], &[(3, 32, 32)])
                    .unwrap();
            assert!(psnr > before + 3.0, "{best}: {psnr:.2} dB from {before:.2}");
        }
    }
}
