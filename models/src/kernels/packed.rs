//! Products `x [M, K] · W [K, N]` of a few rows against a weight packed once, when its layer
//! is built: DA-CLIP's encoder multiplies 50 tokens by 704 MB of weights per image, each
//! weight used by those 50 rows only, and a general product (`gemm`) packs its operand again
//! at every call, which cost about as much as the arithmetic (`docs/benchmarks.md`). Here the
//! weight is stored as panels of `NR` columns (one vector of the CPU's widest level), `K` rows
//! each, contiguous, so a product streams it once, one task per panel. A tile is many rows by
//! one vector: up to 28 accumulators with AVX-512 (12 with AVX2), so each weight vector loaded
//! serves that many rows, and the weight streams from memory at a steady rate (one 64-byte
//! line per 25 multiply-adds), asked for 32 lines ahead, while the multiplications run. The
//! rows of `x` are read transposed, a tile's rows at one depth side by side.

use pulp::Simd;
use rayon::prelude::*;
use seq_macro::seq;

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

/// One vector of the widest level this CPU has.
fn panel_width() -> usize {
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    pulp::Arch::new().dispatch(Lanes)
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
        // `x` transposed, `[K, M]`: a tile's rows at one depth are then neighbours in memory.
        // Read in place, the rows of one depth lie `K` floats apart, and with `K` a multiple
        // of 1024 (3072 in the encoder) all of them fall in one set of the L1 cache, which
        // holds 8: the tile reloaded its `x` from L2 at every depth and ran at half speed.
        let mut xt = super::zeroed(k * m);
        xt.par_chunks_mut((BLOCK * m).max(1))
            .enumerate()
            .for_each(|(b, dst)| {
                let i0 = b * BLOCK;
                let width = dst.len() / m.max(1);
                for r in 0..m {
                    for (j, &v) in x[r * k + i0..][..width].iter().enumerate() {
                        dst[j * m + r] = v;
                    }
                }
            });
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
                    xt: &xt,
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

/// How many vectors ahead of its use a tile asks for the panel's next vector.
const AHEAD: usize = 32;

/// Software prefetch where the CPU has it (every x86-64 one).
#[derive(Clone, Copy)]
struct Prefetch {
    #[cfg(target_arch = "x86_64")]
    sse: Option<pulp::core_arch::x86::Sse>,
}

impl Prefetch {
    fn new() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            sse: pulp::core_arch::x86::Sse::try_new(),
        }
    }

    /// Asks for the cache line at `p` (any address: a hint, which never faults).
    #[inline(always)]
    fn line<T>(self, p: *const T) {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse) = self.sse {
            sse._mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }
}

/// Depths of `x` transposed by one task (a block of `[BLOCK, M]` stays in L1).
const BLOCK: usize = 64;

/// One panel times every row of `x` (given transposed, `xt` `[K, M]`): `out` `[M, nr]`.
struct Panel<'a> {
    panel: &'a [f32],
    k: usize,
    nr: usize,
    xt: &'a [f32],
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
            xt,
            out,
        } = self;
        let m = out.len() / nr;
        if nr != S::F32_LANES || k == 0 {
            // Packed for another level (never within one process) or empty: plain sums.
            for (r, row) in out.chunks_exact_mut(nr).enumerate() {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = (0..k).map(|i| xt[i * m + r] * panel[i * nr + j]).sum();
                }
            }
            return;
        }
        let (panel, _) = S::as_simd_f32s(panel);
        let fetch = Prefetch::new();
        // Accumulators, the weight vector and a broadcast in the vector registers: 32 of them
        // with AVX-512 and NEON, 16 with AVX2 (8 lanes).
        let most = if S::F32_LANES == 8 { 12 } else { 28 };
        // Tiles as even as possible: 50 rows are two tiles of 25 (five of 10 with AVX2).
        let tiles = m.div_ceil(most);
        let mut r0 = 0;
        for t in 0..tiles {
            let rows = m / tiles + usize::from(t < m % tiles);
            let x = Rows { xt, m, r0 };
            tile_of(s, fetch, rows, panel, x, &mut out[r0 * nr..][..rows * nr]);
            r0 += rows;
        }
    }
}

/// Rows `r0 .. r0 + R` of `x`, given transposed (`xt` `[K, m]`).
#[derive(Clone, Copy)]
struct Rows<'a> {
    xt: &'a [f32],
    m: usize,
    r0: usize,
}

/// `count` (1 to 28) rows of `x` times one panel (`K` vectors): `out` `[count, lanes]`.
#[inline(always)]
fn tile_of<S: Simd>(
    s: S,
    fetch: Prefetch,
    count: usize,
    panel: &[S::f32s],
    x: Rows<'_>,
    out: &mut [f32],
) {
    seq!(R in 1..=28 {
        match count {
            #(R => tile~R(s, fetch, panel, x, out),)*
            _ => unreachable!("tiles have 1 to 28 rows"),
        }
    })
}

// One function per row count, its accumulators named variables (an array of 25 vectors is not
// unrolled into registers by the compiler).
seq!(R in 1..=28 {
    #[inline(always)]
    #[allow(clippy::identity_op, clippy::erasing_op)] // `N · lanes` for N = 0, `R · lanes` for R = 1
    fn tile~R<S: Simd>(s: S, fetch: Prefetch, panel: &[S::f32s], x: Rows<'_>, out: &mut [f32]) {
        let lanes = S::F32_LANES;
        let out = &mut out[..R * lanes];
        seq!(N in 0..R {
            let mut a~N = s.splat_f32s(0.0);
        });
        for (i, (&w, depth)) in panel.iter().zip(x.xt.chunks_exact(x.m)).enumerate() {
            fetch.line(panel.as_ptr().wrapping_add(i + AHEAD));
            let x = &depth[x.r0..][..R];
            seq!(N in 0..R {
                a~N = s.mul_add_f32s(s.splat_f32s(x[N]), w, a~N);
            });
        }
        seq!(N in 0..R {
            s.partial_store_f32s(&mut out[N * lanes..][..lanes], a~N);
        });
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the sums in f64, for row counts of one to three uneven tiles and column counts
    /// around the panel width (the zero padding of the last panel).
    #[test]
    fn equals_the_product() {
        for (m, k, n) in [
            (50, 64, 96),
            (57, 20, 40),
            (29, 9, 17),
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
