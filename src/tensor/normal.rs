//! Philox blocks to standard normals (Box–Muller), in bulk.
//!
//! `f64` output uses the standard library's `ln`, `sqrt` and `sin_cos`. `f32` output evaluates
//! the transform in `f32` with polynomial `ln`, `sin` and `cos` (absolute error below 2e-6 on
//! the normals), written once as explicit SIMD over `pulp`'s portable vector types: one
//! Philox block per vector lane (8 with AVX2, 16 with AVX-512, 1 on the scalar fallback), the
//! words of the block's two Box–Muller pairs in four vectors. The two things the portable set
//! cannot express, integer-to-float conversion and the final transposition into block order,
//! come from a [`Level`]: native instructions on x86-64 (AVX2, AVX-512), portable emulations
//! elsewhere, all exact. Every lane computes exactly the IEEE operations of the per-block
//! reference in the tests (`reference`), so the stream's bits do not depend on the SIMD width
//! or level.

use pulp::Simd;

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

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;
/// 2⁻²⁴: uniforms from the top 24 bits of a word (exact in `f32`).
const SCALE24: f32 = 1.0 / 16_777_216.0;

/// Philox4x32-10 on one block per lane: word `k` of every lane's block in `c[k]`.
#[inline(always)]
fn philox<S: Simd>(s: S, mut c: [S::u32s; 4], key: [u32; 2]) -> [S::u32s; 4] {
    let (m0, m1) = (s.splat_u32s(M0), s.splat_u32s(M1));
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (lo0, hi0) = s.widening_mul_u32s(m0, c[0]);
        let (lo1, hi1) = s.widening_mul_u32s(m1, c[2]);
        c = [
            s.xor_u32s(s.xor_u32s(hi1, c[1]), s.splat_u32s(k0)),
            lo1,
            s.xor_u32s(s.xor_u32s(hi0, c[3]), s.splat_u32s(k1)),
            lo0,
        ];
    }
    c
}

/// What one SIMD level does natively and `pulp`'s portable vector set cannot express: the
/// exact conversion of small integers to `f32`, and storing the four vectors of normals in
/// block order. Every implementation gives the same bits (exact conversions, pure data
/// movement), so the stream does not depend on which one runs.
trait Level<S: Simd>: Copy {
    /// `n < 2²⁴` as `f32`, exactly.
    fn u24_to_f32(self, s: S, n: S::u32s) -> S::f32s;
    /// Stores normal `k` of lane `l`'s block (`z[k]`'s lane `l`) at `out[4·l + k]`
    /// (`out` is `4·lanes` long).
    fn store_blocks(self, s: S, z: [S::f32s; 4], out: &mut [f32]);
}

/// Any level through `pulp`'s portable operations (the fallback everywhere but x86-64).
#[derive(Clone, Copy)]
struct Portable;

impl<S: Simd> Level<S> for Portable {
    /// Two halves below 2²³, each exact through the bits of `2²³ + n` (`pulp`'s portable set
    /// has no integer-to-float conversion), recombined exactly.
    #[inline(always)]
    fn u24_to_f32(self, s: S, n: S::u32s) -> S::f32s {
        let below_2_23 = |n: S::u32s| {
            let biased = s.transmute_f32s_u32s(s.or_u32s(n, s.splat_u32s(0x4b00_0000)));
            s.sub_f32s(biased, s.splat_f32s(8_388_608.0))
        };
        let half = below_2_23(s.wrapping_dyn_shr_u32s(n, s.splat_u32s(1)));
        let odd = below_2_23(s.and_u32s(n, s.splat_u32s(1)));
        s.add_f32s(s.add_f32s(half, half), odd)
    }

    /// Through a stack buffer, lane by lane.
    #[inline(always)]
    fn store_blocks(self, s: S, z: [S::f32s; 4], out: &mut [f32]) {
        let lanes = S::F32_LANES;
        let mut rows = [[0f32; MAX_LANES]; 4];
        for (row, z) in rows.iter_mut().zip(z) {
            s.partial_store_f32s(&mut row[..lanes], z);
        }
        for (l, block) in out.chunks_exact_mut(4).enumerate() {
            block.copy_from_slice(&[rows[0][l], rows[1][l], rows[2][l], rows[3][l]]);
        }
    }
}

/// AVX2: the native conversion and a 4 × 8 transposition in registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Level<pulp::x86::V3> for Avx2 {
    #[inline(always)]
    fn u24_to_f32(self, s: pulp::x86::V3, n: pulp::u32x8) -> pulp::f32x8 {
        s.convert_i32x8_to_f32x8(s.transmute_i32s_u32s(n))
    }

    #[inline(always)]
    fn store_blocks(self, s: pulp::x86::V3, z: [pulp::f32x8; 4], out: &mut [f32]) {
        use pulp::bytemuck::cast;
        let avx = s.avx;
        let [z0, z1, z2, z3] = z.map(cast);
        // Within each 128-bit half: pairs, then whole blocks (b_l = lane l's four normals).
        let (t0, t1) = (
            avx._mm256_unpacklo_ps(z0, z1),
            avx._mm256_unpackhi_ps(z0, z1),
        );
        let (t2, t3) = (
            avx._mm256_unpacklo_ps(z2, z3),
            avx._mm256_unpackhi_ps(z2, z3),
        );
        let b04 = avx._mm256_shuffle_ps::<0b01_00_01_00>(t0, t2);
        let b15 = avx._mm256_shuffle_ps::<0b11_10_11_10>(t0, t2);
        let b26 = avx._mm256_shuffle_ps::<0b01_00_01_00>(t1, t3);
        let b37 = avx._mm256_shuffle_ps::<0b11_10_11_10>(t1, t3);
        let rows = [
            avx._mm256_permute2f128_ps::<0x20>(b04, b15),
            avx._mm256_permute2f128_ps::<0x20>(b26, b37),
            avx._mm256_permute2f128_ps::<0x31>(b04, b15),
            avx._mm256_permute2f128_ps::<0x31>(b26, b37),
        ];
        for (chunk, row) in out.chunks_exact_mut(8).zip(rows) {
            chunk.copy_from_slice(&cast::<_, [f32; 8]>(row));
        }
    }
}

/// AVX-512: the native conversion and a 4 × 16 transposition in registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Level<pulp::x86::V4> for Avx512 {
    #[inline(always)]
    fn u24_to_f32(self, s: pulp::x86::V4, n: pulp::u32x16) -> pulp::f32x16 {
        s.convert_i32x16_to_f32x16(s.transmute_i32s_u32s(n))
    }

    #[inline(always)]
    fn store_blocks(self, s: pulp::x86::V4, z: [pulp::f32x16; 4], out: &mut [f32]) {
        use pulp::bytemuck::cast;
        let f = s.avx512f;
        let [z0, z1, z2, z3] = z.map(cast);
        // Within each 128-bit quarter as for AVX2: quarter q of `bj` holds block 4q + j.
        let (t0, t1) = (f._mm512_unpacklo_ps(z0, z1), f._mm512_unpackhi_ps(z0, z1));
        let (t2, t3) = (f._mm512_unpacklo_ps(z2, z3), f._mm512_unpackhi_ps(z2, z3));
        let b0 = f._mm512_shuffle_ps::<0b01_00_01_00>(t0, t2);
        let b1 = f._mm512_shuffle_ps::<0b11_10_11_10>(t0, t2);
        let b2 = f._mm512_shuffle_ps::<0b01_00_01_00>(t1, t3);
        let b3 = f._mm512_shuffle_ps::<0b11_10_11_10>(t1, t3);
        // Then a 4 × 4 transposition of the quarters.
        let lo01 = f._mm512_shuffle_f32x4::<0b01_00_01_00>(b0, b1); // blocks 0 4 1 5
        let lo23 = f._mm512_shuffle_f32x4::<0b01_00_01_00>(b2, b3); // blocks 2 6 3 7
        let hi01 = f._mm512_shuffle_f32x4::<0b11_10_11_10>(b0, b1); // blocks 8 12 9 13
        let hi23 = f._mm512_shuffle_f32x4::<0b11_10_11_10>(b2, b3); // blocks 10 14 11 15
        let rows = [
            f._mm512_shuffle_f32x4::<0b10_00_10_00>(lo01, lo23),
            f._mm512_shuffle_f32x4::<0b11_01_11_01>(lo01, lo23),
            f._mm512_shuffle_f32x4::<0b10_00_10_00>(hi01, hi23),
            f._mm512_shuffle_f32x4::<0b11_01_11_01>(hi01, hi23),
        ];
        for (chunk, row) in out.chunks_exact_mut(16).zip(rows) {
            chunk.copy_from_slice(&cast::<_, [f32; 16]>(row));
        }
    }
}

/// 1.0 where `mask`, else 0.0.
#[inline(always)]
fn indicator<S: Simd>(s: S, mask: S::m32s) -> S::f32s {
    s.select_f32s(mask, s.splat_f32s(1.0), s.splat_f32s(0.0))
}

/// `ln(u)` for normal `u > 0`: the reference's `ln_f32`, operation for operation.
#[inline(always)]
fn ln<S: Simd>(s: S, level: impl Level<S>, u: S::f32s) -> S::f32s {
    let bits = s.transmute_u32s_f32s(u);
    let exponent = s.and_u32s(
        s.wrapping_dyn_shr_u32s(bits, s.splat_u32s(23)),
        s.splat_u32s(0xff),
    );
    let m = s.transmute_f32s_u32s(s.or_u32s(
        s.and_u32s(bits, s.splat_u32s(0x007f_ffff)),
        s.splat_u32s(0x3f80_0000),
    ));
    let big = s.greater_than_f32s(m, s.splat_f32s(std::f32::consts::SQRT_2));
    // m·(1 − ½·big): m·0.5 or m·1.0, both exact.
    let m = s.mul_f32s(m, s.select_f32s(big, s.splat_f32s(0.5), s.splat_f32s(1.0)));
    // (exponent − 127 + big) as f32, exactly.
    let big_u = s.select_u32s(big, s.splat_u32s(1), s.splat_u32s(0));
    let e = s.sub_f32s(
        level.u24_to_f32(s, s.add_u32s(exponent, big_u)),
        s.splat_f32s(127.0),
    );
    let one = s.splat_f32s(1.0);
    let t = s.div_f32s(s.sub_f32s(m, one), s.add_f32s(m, one));
    let t2 = s.mul_f32s(t, t);
    let c = |v: f32| s.splat_f32s(v);
    let series = s.add_f32s(c(2.0 / 7.0), s.mul_f32s(t2, c(2.0 / 9.0)));
    let series = s.add_f32s(c(0.4), s.mul_f32s(t2, series));
    let series = s.add_f32s(c(2.0 / 3.0), s.mul_f32s(t2, series));
    let series = s.add_f32s(c(2.0), s.mul_f32s(t2, series));
    let series = s.mul_f32s(t, series);
    s.add_f32s(s.mul_f32s(e, c(std::f32::consts::LN_2)), series)
}

/// `(sin, cos)` of `2π·u` for `u ∈ [0, 1)`: the reference's `sincos_turn_f32`, operation for
/// operation (the quadrant from three compares instead of a truncating conversion).
#[inline(always)]
fn sincos_turn<S: Simd>(s: S, u: S::f32s) -> (S::f32s, S::f32s) {
    let c = |v: f32| s.splat_f32s(v);
    let v = s.mul_f32s(u, c(4.0));
    let ge = |k: f32| s.greater_than_or_equal_f32s(v, c(k));
    let (q1, q2, q3) = (ge(1.0), ge(2.0), ge(3.0));
    let quadrant = s.add_f32s(
        s.add_f32s(indicator(s, q1), indicator(s, q2)),
        indicator(s, q3),
    );
    let f = s.sub_f32s(v, quadrant);
    let p = s.mul_f32s(s.sub_f32s(f, c(0.5)), c(std::f32::consts::FRAC_PI_2));
    let p2 = s.mul_f32s(p, p);
    let poly = |coeffs: [f32; 5]| {
        let mut acc = c(coeffs[4]);
        for &k in coeffs[..4].iter().rev() {
            acc = s.add_f32s(c(k), s.mul_f32s(p2, acc));
        }
        acc
    };
    let sin = s.mul_f32s(
        p,
        poly([1.0, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0]),
    );
    let cos = poly([1.0, -0.5, 1.0 / 24.0, -1.0 / 720.0, 1.0 / 40_320.0]);
    let h = c(std::f32::consts::FRAC_1_SQRT_2);
    let (sq, cq) = (
        s.mul_f32s(s.add_f32s(sin, cos), h),
        s.mul_f32s(s.sub_f32s(cos, sin), h),
    );
    // q = 0: (s, c), 1: (c, −s), 2: (−s, −c), 3: (−c, s); swap when q is odd, sin negative
    // when q ≥ 2, cos negative when q ∈ {1, 2}.
    let swap = s.sub_f32s(
        indicator(s, q1),
        s.sub_f32s(indicator(s, q2), indicator(s, q3)),
    );
    let sign_s = s.sub_f32s(c(1.0), s.mul_f32s(c(2.0), indicator(s, q2)));
    let sign_c = s.sub_f32s(
        c(1.0),
        s.mul_f32s(c(2.0), s.sub_f32s(indicator(s, q1), indicator(s, q3))),
    );
    let so = s.add_f32s(sq, s.mul_f32s(s.sub_f32s(cq, sq), swap));
    let co = s.add_f32s(cq, s.mul_f32s(s.sub_f32s(sq, cq), swap));
    (s.mul_f32s(sign_s, so), s.mul_f32s(sign_c, co))
}

/// The Box–Muller pair of words `(a, b)` in every lane: `(r cos 2πu₂, r sin 2πu₂)`.
#[inline(always)]
fn pair<S: Simd>(s: S, level: impl Level<S>, a: S::u32s, b: S::u32s) -> (S::f32s, S::f32s) {
    let top24 = |w| level.u24_to_f32(s, s.wrapping_dyn_shr_u32s(w, s.splat_u32s(8)));
    let u1 = s.mul_f32s(
        s.add_f32s(top24(a), s.splat_f32s(0.5)),
        s.splat_f32s(SCALE24),
    );
    let u2 = s.mul_f32s(top24(b), s.splat_f32s(SCALE24));
    let r = s.sqrt_f32s(s.mul_f32s(s.splat_f32s(-2.0), ln(s, level, u1)));
    let (sin, cos) = sincos_turn(s, u2);
    (s.mul_f32s(r, cos), s.mul_f32s(r, sin))
}

/// Lanes of the widest vector any dispatch level uses (AVX-512: 16 `f32`).
const MAX_LANES: usize = 16;

/// The normals of blocks `first, first + 1, …, first + lanes − 1` (`lanes` = the vector's
/// width), block by block into `out` (`4·lanes` long).
#[allow(clippy::too_many_arguments)] // the draw's four coordinates, the level and the output
#[inline(always)]
fn group<S: Simd>(
    s: S,
    level: impl Level<S>,
    iota: S::u32s,
    first: u32,
    stream: u32,
    draw: u32,
    key: [u32; 2],
    out: &mut [f32],
) {
    let counters = [
        s.add_u32s(s.splat_u32s(first), iota),
        s.splat_u32s(stream),
        s.splat_u32s(draw),
        s.splat_u32s(0),
    ];
    let w = philox(s, counters, key);
    let (z0, z1) = pair(s, level, w[0], w[1]);
    let (z2, z3) = pair(s, level, w[2], w[3]);
    level.store_blocks(s, [z0, z1, z2, z3], out);
}

/// One bulk `f32` fill: blocks `first_block ..` of `(stream, draw)` under `key` into `out`.
struct FillF32<'a> {
    out: &'a mut [f32],
    first_block: u32,
    stream: u32,
    draw: u32,
    key: [u32; 2],
}

impl FillF32<'_> {
    /// The fill on `s`'s vectors with `level`'s native operations.
    #[inline(always)]
    fn run<S: Simd>(self, s: S, level: impl Level<S>) {
        let lanes = S::F32_LANES;
        debug_assert!(lanes <= MAX_LANES);
        let mut iota = [0u32; MAX_LANES];
        for (l, v) in iota.iter_mut().enumerate() {
            *v = l as u32;
        }
        let iota = s.partial_load_u32s(&iota[..lanes]);
        let mut chunks = self.out.chunks_exact_mut(4 * lanes);
        let mut block = self.first_block;
        for chunk in &mut chunks {
            group(
                s,
                level,
                iota,
                block,
                self.stream,
                self.draw,
                self.key,
                chunk,
            );
            block = block.wrapping_add(lanes as u32);
        }
        // The last blocks one at a time, with the same operations on one lane.
        let scalar = pulp::Scalar::new();
        for part in chunks.into_remainder().chunks_mut(4) {
            let mut z = [0f32; 4];
            group(
                scalar,
                Portable,
                0,
                block,
                self.stream,
                self.draw,
                self.key,
                &mut z,
            );
            part.copy_from_slice(&z[..part.len()]);
            block = block.wrapping_add(1);
        }
    }
}

/// The portable fill, compiled for whichever level `pulp` detects.
impl pulp::WithSimd for FillF32<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        self.run(s, Portable)
    }
}

/// The fill on one level with that level's native operations, compiled for its features.
#[cfg(target_arch = "x86_64")]
struct Native<'a, S, L> {
    fill: FillF32<'a>,
    simd: S,
    level: L,
}

#[cfg(target_arch = "x86_64")]
impl<S: Simd, L: Level<S>> pulp::NullaryFnOnce for Native<'_, S, L> {
    type Output = ();
    #[inline(always)]
    fn call(self) {
        self.fill.run(self.simd, self.level)
    }
}

pub(crate) fn fill_f32(out: &mut [f32], first_block: u32, stream: u32, draw: u32, key: [u32; 2]) {
    let fill = FillF32 {
        out,
        first_block,
        stream,
        draw,
        key,
    };
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::x86::{V3, V4};
        if let Some(simd) = V4::try_new() {
            return simd.vectorize(Native {
                fill,
                simd,
                level: Avx512,
            });
        }
        if let Some(simd) = V3::try_new() {
            return simd.vectorize(Native {
                fill,
                simd,
                level: Avx2,
            });
        }
    }
    pulp::Arch::new().dispatch(fill);
}

/// The `f32` transform written per block, one lane at a time: the definition the SIMD code
/// above reproduces bit for bit (checked in the tests).
#[cfg(test)]
mod reference {
    pub(super) const LANES: usize = 8;
    const M0: u64 = super::M0 as u64;
    const M1: u64 = super::M1 as u64;
    use super::{W0, W1};

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
    pub(super) fn ln_f32(u: f32) -> f32 {
        let bits = u.to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 127;
        let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        // m ∈ [1, 2) → [0.707, 1.414): halve it above √2 and bump the exponent.
        let big = (m > std::f32::consts::SQRT_2) as i32;
        let m = m * (1.0 - 0.5 * big as f32);
        let e = (e + big) as f32;
        let t = (m - 1.0) / (m + 1.0);
        let t2 = t * t;
        let series =
            t * (2.0 + t2 * (2.0 / 3.0 + t2 * (0.4 + t2 * (2.0 / 7.0 + t2 * (2.0 / 9.0)))));
        e * std::f32::consts::LN_2 + series
    }

    /// `(sin, cos)` of `2π·u` for `u ∈ [0, 1)`: quadrant reduction, Taylor polynomials on
    /// `[−π/4, π/4]`, branch-free quadrant fix-up.
    #[inline(always)]
    pub(super) fn sincos_turn_f32(u: f32) -> (f32, f32) {
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
    pub(super) fn eight_blocks(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use reference::{LANES, eight_blocks, ln_f32, sincos_turn_f32};

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

    /// Every way of filling reproduces the per-block reference bit for bit, including the last
    /// partial blocks: `fill_f32` (the best native level of this CPU), each native x86-64 level
    /// the CPU has, the portable code at `pulp`'s detected level and on its one-lane scalar
    /// level.
    #[test]
    fn simd_fill_is_the_reference_bit_for_bit() {
        const KEY: [u32; 2] = [0x0bad_cafe, 0x1234_5678];
        const FIRST: u32 = u32::MAX - 40; // crosses the counter's wrap
        const STREAM: u32 = 3;
        const DRAW: u32 = 17;
        let (key, first, stream, draw) = (KEY, FIRST, STREAM, DRAW);
        let n = 4 * LANES * 300 + 4 * 5 + 3;
        let mut want = vec![0f32; n.div_ceil(4 * LANES) * 4 * LANES];
        let mut buf = [0f32; 4 * LANES];
        for (g, chunk) in want.chunks_mut(4 * LANES).enumerate() {
            let block = first.wrapping_add((g * LANES) as u32);
            eight_blocks(block, stream, draw, key, &mut buf);
            chunk.copy_from_slice(&buf);
        }
        fn job(out: &mut [f32]) -> FillF32<'_> {
            FillF32 {
                out,
                first_block: FIRST,
                stream: STREAM,
                draw: DRAW,
                key: KEY,
            }
        }
        let mut fills: Vec<(&str, Vec<f32>)> = Vec::new();
        let mut got = vec![0f32; n];
        fill_f32(&mut got, first, stream, draw, key);
        fills.push(("fill_f32", got));
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = pulp::x86::V4::try_new() {
                let mut got = vec![0f32; n];
                simd.vectorize(Native {
                    fill: job(&mut got),
                    simd,
                    level: Avx512,
                });
                fills.push(("AVX-512", got));
            }
            if let Some(simd) = pulp::x86::V3::try_new() {
                let mut got = vec![0f32; n];
                simd.vectorize(Native {
                    fill: job(&mut got),
                    simd,
                    level: Avx2,
                });
                fills.push(("AVX2", got));
            }
        }
        let mut got = vec![0f32; n];
        pulp::Arch::new().dispatch(job(&mut got));
        fills.push(("portable", got));
        let mut got = vec![0f32; n];
        pulp::Scalar::new().vectorize(job(&mut got));
        fills.push(("portable, scalar level", got));
        assert!(fills.len() >= 3);
        for (name, got) in &fills {
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{name}, element {i}: {g} vs {w}");
            }
        }
    }
}
