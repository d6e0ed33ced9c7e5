//! Products `x [M, K] · W [K, N]` of a few rows against a weight packed once, when its layer
//! is built: DA-CLIP's encoder multiplies 50 tokens by 704 MB of weights per image, each
//! weight used by those 50 rows only, and a general product (`gemm`) packs its operand again
//! at every call, which cost about as much as the arithmetic (`docs/benchmarks.md`). Here the
//! weight is stored as panels of `NR` columns, `K` rows each, contiguous, so a product streams
//! it once; `MR` rows of `x` are multiplied by one panel at a time with `MR × 2` vector
//! accumulators (`NR` = two vectors of the CPU's widest level), one task per panel.

use pulp::Simd;
use rayon::prelude::*;

/// Rows of one register tile.
const MR: usize = 5;

/// A weight `[K, N]` as panels of `nr` columns: panel `p` holds rows `0..K` of columns
/// `p·nr .. p·nr + nr`, row after row, zero past column `N`.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeight {
    k: usize,
    n: usize,
    nr: usize,
    panels: Vec<f32>,
    /// Added to every output row (zeros for a layer without one).
    bias: Vec<f32>,
}

/// Two vectors of the widest level this CPU has.
fn panel_width() -> usize {
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    2 * pulp::Arch::new().dispatch(Lanes)
}

impl PackedWeight {
    /// Packs `w` (`[K, N]`, row-major), with the layer's `bias` (`[N]`).
    pub(crate) fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        debug_assert_eq!(w.len(), k * n);
        let nr = panel_width();
        let np = n.div_ceil(nr);
        let mut panels = vec![0f32; np * k * nr];
        for (p, panel) in panels.chunks_exact_mut((k * nr).max(1)).enumerate() {
            let c0 = p * nr;
            let width = (n - c0).min(nr);
            for (row, dst) in panel.chunks_exact_mut(nr).enumerate() {
                dst[..width].copy_from_slice(&w[row * n + c0..][..width]);
            }
        }
        let bias = bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
        Self {
            k,
            n,
            nr,
            panels,
            bias,
        }
    }

    /// `(K, N)`.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `x · W + bias` for `x` `[M, K]` row-major, then the exact (`erf`) GELU where `gelu`:
    /// `[M, N]` row-major.
    pub(crate) fn product(&self, x: &[f32], m: usize, gelu: bool) -> Vec<f32> {
        let (k, n, nr) = (self.k, self.n, self.nr);
        debug_assert_eq!(x.len(), m * k);
        // One task per panel, so that each thread streams its share of the weight once: the
        // products of a panel for every row, `[M, nr]`; then each output row gathered from
        // the panels, with the bias and the activation, in one pass.
        let mut blocks = super::zeroed(n.div_ceil(nr) * m * nr);
        blocks
            .par_chunks_mut((m * nr).max(1))
            .zip(self.panels.par_chunks((k * nr).max(1)))
            .for_each(|(out, panel)| {
                pulp::Arch::new().dispatch(Panel {
                    panel,
                    k,
                    nr,
                    x,
                    out,
                })
            });
        let mut y = super::zeroed(m * n);
        y.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, row)| {
            super::vectorized(
                #[inline(always)]
                || {
                    for (c, (dst, b)) in row.chunks_mut(nr).zip(self.bias.chunks(nr)).enumerate() {
                        let src = &blocks[(c * m + r) * nr..][..dst.len()];
                        if gelu {
                            for ((d, &v), &b) in dst.iter_mut().zip(src).zip(b) {
                                *d = super::activation::gelu(v + b);
                            }
                        } else {
                            for ((d, &v), &b) in dst.iter_mut().zip(src).zip(b) {
                                *d = v + b;
                            }
                        }
                    }
                },
            )
        });
        y
    }
}

/// One panel times every row of `x`: `out` `[M, nr]`.
struct Panel<'a> {
    panel: &'a [f32],
    k: usize,
    nr: usize,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for Panel<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Panel {
            panel,
            k,
            nr,
            x,
            out,
        } = self;
        let lanes = S::F32_LANES;
        if nr != 2 * lanes || k == 0 {
            // Packed for another level (never within one process) or empty: plain sums.
            for (r, row) in out.chunks_exact_mut(nr).enumerate() {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = (0..k).map(|i| x[r * k + i] * panel[i * nr + j]).sum();
                }
            }
            return;
        }
        let (panel, _) = S::as_simd_f32s(panel);
        for (x, out) in x.chunks(MR * k).zip(out.chunks_mut(MR * nr)) {
            match x.len() / k {
                MR => tile::<S, MR>(s, panel, x, k, out),
                1 => tile::<S, 1>(s, panel, x, k, out),
                2 => tile::<S, 2>(s, panel, x, k, out),
                3 => tile::<S, 3>(s, panel, x, k, out),
                _ => tile::<S, 4>(s, panel, x, k, out),
            }
        }
    }
}

/// `R` rows of `x` (`[R, k]`) times one panel (`k` rows of two vectors): `out` `[R, 2·lanes]`.
/// The accumulators stay in registers; every index below is provably in bounds.
#[inline(always)]
fn tile<S: Simd, const R: usize>(s: S, panel: &[S::f32s], x: &[f32], k: usize, out: &mut [f32]) {
    let lanes = S::F32_LANES;
    let panel = &panel[..2 * k];
    let xr: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..][..k]);
    let zero = s.splat_f32s(0.0);
    let mut acc = [[zero; 2]; R];
    for i in 0..k {
        let (w0, w1) = (panel[2 * i], panel[2 * i + 1]);
        for r in 0..R {
            let xv = s.splat_f32s(xr[r][i]);
            acc[r][0] = s.mul_add_f32s(xv, w0, acc[r][0]);
            acc[r][1] = s.mul_add_f32s(xv, w1, acc[r][1]);
        }
    }
    for (acc, row) in acc.iter().zip(out.chunks_exact_mut(2 * lanes)) {
        let (first, second) = row.split_at_mut(lanes);
        s.partial_store_f32s(first, acc[0]);
        s.partial_store_f32s(second, acc[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the sums in f64, for row counts around the tile and column counts around the
    /// panel width (the zero padding of the last panel).
    #[test]
    fn equals_the_product() {
        for (m, k, n) in [
            (50, 64, 96),
            (7, 33, 45),
            (1, 5, 3),
            (11, 128, 200),
            (3, 0, 4),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.03)
                .collect();
            let y = PackedWeight::new(&w, k, n, None).product(&x, m, false);
            // The bias lands on its column in every panel, the GELU after it.
            let b: Vec<f32> = (0..n).map(|c| c as f32 * 0.25 - 3.0).collect();
            let packed = PackedWeight::new(&w, k, n, Some(&b));
            let (yb, yg) = (packed.product(&x, m, false), packed.product(&x, m, true));
            for (i, ((&v, &vb), &vg)) in y.iter().zip(&yb).zip(&yg).enumerate() {
                assert_eq!(vb, v + b[i % n], "bias at {i}");
                assert_eq!(vg, crate::kernels::activation::gelu(vb), "GELU at {i}");
            }
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| f64::from(x[r * k + i]) * f64::from(w[i * n + c]))
                        .sum();
                    let got = f64::from(y[r * n + c]);
                    // k f32 products and sums: within k·ε of the sum of magnitudes.
                    let mag: f64 = (0..k)
                        .map(|i| (f64::from(x[r * k + i]) * f64::from(w[i * n + c])).abs())
                        .sum();
                    assert!(
                        (got - want).abs() <= k as f64 * f64::from(f32::EPSILON) * mag + 1e-12,
                        "{m}×{k}·{k}×{n} at ({r}, {c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
