//! Philox blocks to standard normals (Box–Muller), in bulk.
//!
//! `f64` output uses the standard library's `ln`, `sqrt` and `sin_cos`. `f32` output runs
//! eight Philox blocks side by side and evaluates the transform in `f32` with polynomial
//! `ln`, `sin` and `cos` (absolute error below 2e-6 on the normals), so the whole
//! pipeline vectorizes inside `pulp`'s runtime-dispatched SIMD context.

use super::philox::philox4x32_10;

const SCALE_F64: f64 = 1.0 / 4_294_967_296.0;

/// The four normals of one block, in `f64`.
#[inline(always)]
pub(crate) fn block_f64(counter: [u32; 4], key: [u32; 2]) -> [f64; 4] {
    let w = philox4x32_10(counter, key);
    let pair = |a: u32, b: u32| {
        let u1 = (a as f64 + 0.5) * SCALE_F64;
        let u2 = b as f64 * SCALE_F64;
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    };
    let (z0, z1) = pair(w[0], w[1]);
    let (z2, z3) = pair(w[2], w[3]);
    [z0, z1, z2, z3]
}

pub(crate) fn fill_f64(out: &mut [f64], first_block: u32, stream: u32, draw: u32, key: [u32; 2]) {
    for (blk, chunk) in out.chunks_mut(4).enumerate() {
        let z = block_f64([first_block.wrapping_add(blk as u32), stream, draw, 0], key);
        chunk.copy_from_slice(&z[..chunk.len()]);
    }
}

const LANES: usize = 8;
const M0: u64 = 0xD251_1F53;
const M1: u64 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 on `LANES` counters at once (word `k` of lane `l` in `c[k][l]`).
#[inline(always)]
fn philox_lanes(c: &mut [[u32; LANES]; 4], key: [u32; 2]) {
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        #[allow(clippy::needless_range_loop)] // lanes of four word arrays, vectorized together
        for l in 0..LANES {
            let p0 = M0 * c[0][l] as u64;
            let p1 = M1 * c[2][l] as u64;
            let n0 = (p1 >> 32) as u32 ^ c[1][l] ^ k0;
            let n2 = (p0 >> 32) as u32 ^ c[3][l] ^ k1;
            c[0][l] = n0;
            c[1][l] = p1 as u32;
            c[2][l] = n2;
            c[3][l] = p0 as u32;
        }
    }
}

/// `ln(u)` for `u > 0` (normal floats): exponent plus an odd series in `(m−1)/(m+1)`, with the
/// mantissa centred on 1. Branch-free, so it vectorizes.
#[inline(always)]
fn ln_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // m ∈ [1, 2) → [0.707, 1.414): halve it above √2 and bump the exponent.
    let big = (m > std::f32::consts::SQRT_2) as i32;
    let m = m * (1.0 - 0.5 * big as f32);
    let e = (e + big) as f32;
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = t * (2.0 + t2 * (2.0 / 3.0 + t2 * (0.4 + t2 * (2.0 / 7.0 + t2 * (2.0 / 9.0)))));
    e * std::f32::consts::LN_2 + series
}

/// `(sin, cos)` of `2π·u` for `u ∈ [0, 1)`: quadrant reduction, Taylor polynomials on
/// `[−π/4, π/4]`, branch-free quadrant fix-up.
#[inline(always)]
fn sincos_turn_f32(u: f32) -> (f32, f32) {
    let v = u * 4.0;
    let vi = v as i32;
    let q = vi & 3; // quadrant
    let f = v - vi as f32; // [0, 1)
    let p = (f - 0.5) * std::f32::consts::FRAC_PI_2; // [−π/4, π/4)
    let p2 = p * p;
    let s = p
        * (1.0
            + p2 * (-1.0 / 6.0
                + p2 * (1.0 / 120.0 + p2 * (-1.0 / 5040.0 + p2 * (1.0 / 362_880.0)))));
    let c = 1.0 + p2 * (-0.5 + p2 * (1.0 / 24.0 + p2 * (-1.0 / 720.0 + p2 * (1.0 / 40_320.0))));
    // Angle within the quadrant is p + π/4.
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let (sq, cq) = ((s + c) * h, (c - s) * h);
    // Quadrant q rotates by q·π/2: 0: (s, c), 1: (c, −s), 2: (−s, −c), 3: (−c, s).
    let swap = (q & 1) as f32;
    let sign_s = 1.0 - 2.0 * ((q >> 1) & 1) as f32;
    let sign_c = 1.0 - 2.0 * (((q >> 1) ^ q) & 1) as f32;
    let so = sq + (cq - sq) * swap;
    let co = cq + (sq - cq) * swap;
    (sign_s * so, sign_c * co)
}

const PAIRS: usize = 2 * LANES;

#[inline(always)]
fn eight_blocks(
    first_block: u32,
    stream: u32,
    draw: u32,
    key: [u32; 2],
    out: &mut [f32; 4 * LANES],
) {
    let mut c = [[0u32; LANES]; 4];
    for (l, w) in c[0].iter_mut().enumerate() {
        *w = first_block.wrapping_add(l as u32);
    }
    c[1] = [stream; LANES];
    c[2] = [draw; LANES];
    philox_lanes(&mut c, key);
    // Pair p = 2·lane + j uses words (2j, 2j+1) of its lane.
    let mut a = [0u32; PAIRS];
    let mut b = [0u32; PAIRS];
    for l in 0..LANES {
        a[2 * l] = c[0][l];
        b[2 * l] = c[1][l];
        a[2 * l + 1] = c[2][l];
        b[2 * l + 1] = c[3][l];
    }
    const SCALE24: f32 = 1.0 / 16_777_216.0;
    let mut zc = [0f32; PAIRS];
    let mut zs = [0f32; PAIRS];
    for p in 0..PAIRS {
        // Top 24 bits: exact in f32; u₁ ∈ (0, 1), u₂ ∈ [0, 1).
        let u1 = ((a[p] >> 8) as i32 as f32 + 0.5) * SCALE24;
        let u2 = (b[p] >> 8) as i32 as f32 * SCALE24;
        let r = (-2.0 * ln_f32(u1)).sqrt();
        let (s, co) = sincos_turn_f32(u2);
        zc[p] = r * co;
        zs[p] = r * s;
    }
    for p in 0..PAIRS {
        out[2 * p] = zc[p];
        out[2 * p + 1] = zs[p];
    }
}

/// The bulk f32 fill as a `pulp` operation, so its body is compiled for the detected SIMD
/// level.
struct FillF32<'a> {
    out: &'a mut [f32],
    first_block: u32,
    stream: u32,
    draw: u32,
    key: [u32; 2],
}

impl pulp::WithSimd for FillF32<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let mut buf = [0f32; 4 * LANES];
        for (g, chunk) in self.out.chunks_mut(4 * LANES).enumerate() {
            let first = self.first_block.wrapping_add((g * LANES) as u32);
            eight_blocks(first, self.stream, self.draw, self.key, &mut buf);
            chunk.copy_from_slice(&buf[..chunk.len()]);
        }
    }
}

pub(crate) fn fill_f32(out: &mut [f32], first_block: u32, stream: u32, draw: u32, key: [u32; 2]) {
    pulp::Arch::new().dispatch(FillF32 {
        out,
        first_block,
        stream,
        draw,
        key,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_ln_and_sincos_are_accurate() {
        for i in 1..20_000 {
            let u = i as f32 / 20_000.0;
            assert!(
                (ln_f32(u) as f64 - (u as f64).ln()).abs() < 2e-7 * (1.0 + (u as f64).ln().abs()),
                "ln {u}"
            );
            let (s, c) = sincos_turn_f32(u);
            let (ws, wc) = (std::f64::consts::TAU * u as f64).sin_cos();
            assert!(
                (s as f64 - ws).abs() < 3e-7 && (c as f64 - wc).abs() < 3e-7,
                "sincos {u}"
            );
        }
        assert!(
            (ln_f32(f32::MIN_POSITIVE * 4.0) as f64 - ((f32::MIN_POSITIVE * 4.0) as f64).ln())
                .abs()
                < 1e-4
        );
    }

    /// The f32 path computes the same normals as the f64 path up to f32 rounding of the
    /// uniforms (24 of 32 bits) and the polynomial transforms.
    #[test]
    fn f32_path_matches_f64_path() {
        let key = [0xdead_beef, 7];
        let mut a = vec![0f32; 4 * 1000 + 3];
        fill_f32(&mut a, 5, 2, 9, key);
        let mut b = vec![0f64; a.len()];
        fill_f64(&mut b, 5, 2, 9, key);
        for (x, y) in a.iter().zip(&b) {
            // The uniforms differ by at most 2⁻²⁴ relative (u₁) / 2⁻²⁴ absolute (u₂).
            let tol = 1e-5 * (1.0 + y.abs()) + 4e-6 * y.abs().max(1.0).powi(2);
            assert!((*x as f64 - y).abs() < tol.max(2e-5), "{x} vs {y}");
        }
    }
}
