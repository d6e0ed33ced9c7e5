//! Streaming kernels on contiguous slices: runtime-dispatched SIMD (via `pulp`: AVX2/FMA,
//! AVX-512 or NEON where available, scalar otherwise) and an explicit thread split.
//!
//! Each kernel is a plain elementwise loop with the number of input streams fixed at compile
//! time, so the compiler vectorizes it inside `pulp`'s target-feature context. Arithmetic is in
//! the element type; the coefficients are rounded to it once.

use rayon::prelude::*;

use super::Parallelism;
use super::element::NdElement;
use super::noise::CounterDraw;

/// Largest number of input streams a single kernel pass takes.
pub(crate) const MAX_TERMS: usize = 8;

/// `out ← [a·out] + Σ c[k]·s[k]` for a fixed number of streams.
#[inline(always)]
fn lin<E: NdElement, const N: usize>(out: &mut [E], a: Option<E>, c: [E; N], s: [&[E]; N]) {
    let n = out.len();
    let s: [&[E]; N] = s.map(|x| &x[..n]);
    match a {
        Some(a) => {
            for i in 0..n {
                let mut acc = a * out[i];
                for k in 0..N {
                    acc = acc + c[k] * s[k][i];
                }
                out[i] = acc;
            }
        }
        None => {
            for i in 0..n {
                let mut acc = E::zero();
                for k in 0..N {
                    acc = acc + c[k] * s[k][i];
                }
                out[i] = acc;
            }
        }
    }
}

/// [`lin`] as a `pulp` operation, compiled for the detected SIMD level.
struct Lin<'a, E, const N: usize> {
    out: &'a mut [E],
    a: Option<E>,
    c: [E; N],
    s: [&'a [E]; N],
}

impl<E: NdElement, const N: usize> pulp::WithSimd for Lin<'_, E, N> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        lin::<E, N>(self.out, self.a, self.c, self.s)
    }
}

/// Dispatches on the stream count (≤ [`MAX_TERMS`]) and the CPU's SIMD level.
fn lin_dispatch<E: NdElement>(out: &mut [E], a: Option<E>, terms: &[(E, &[E])]) {
    macro_rules! arm {
        ($n:literal) => {{
            let c: [E; $n] = std::array::from_fn(|k| terms[k].0);
            let s: [&[E]; $n] = std::array::from_fn(|k| terms[k].1);
            pulp::Arch::new().dispatch(Lin::<E, $n> { out, a, c, s })
        }};
    }
    match terms.len() {
        0 => pulp::Arch::new().dispatch(Lin::<E, 0> {
            out,
            a,
            c: [],
            s: [],
        }),
        1 => arm!(1),
        2 => arm!(2),
        3 => arm!(3),
        4 => arm!(4),
        5 => arm!(5),
        6 => arm!(6),
        7 => arm!(7),
        8 => arm!(8),
        _ => unreachable!("callers split long term lists"),
    }
}

/// Runs `f(part_of_out, offset)` over `out`, split into `par.parts(len)` contiguous parts.
fn split<E: NdElement>(out: &mut [E], par: Parallelism, f: impl Fn(&mut [E], usize) + Sync + Send) {
    let n = out.len();
    let parts = par.parts(n);
    if parts <= 1 {
        f(out, 0);
        return;
    }
    let chunk = n.div_ceil(parts);
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, o)| f(o, i * chunk));
}

/// `out ← [a·out] + Σ c·s` over full slices (any number of terms; more than
/// [`MAX_TERMS`] take several passes).
pub(crate) fn lincomb<E: NdElement>(
    out: &mut [E],
    a: Option<f64>,
    terms: &[(f64, &[E])],
    par: Parallelism,
) {
    let a = a.map(E::from_f64_lossy);
    if terms.is_empty() {
        split(out, par, |o, _| lin_dispatch(o, a, &[]));
        return;
    }
    for (g, group) in terms.chunks(MAX_TERMS).enumerate() {
        let group_a = if g == 0 { a } else { Some(E::one()) };
        let mut buf: [(E, &[E]); MAX_TERMS] = [(E::zero(), &[][..]); MAX_TERMS];
        for (k, (c, s)) in group.iter().enumerate() {
            buf[k] = (E::from_f64_lossy(*c), s);
        }
        let used = &buf[..group.len()];
        split(out, par, |o, off| {
            let mut local: [(E, &[E]); MAX_TERMS] = [(E::zero(), &[][..]); MAX_TERMS];
            for (k, (c, s)) in used.iter().enumerate() {
                local[k] = (*c, &s[off..off + o.len()]);
            }
            lin_dispatch(o, group_a, &local[..used.len()]);
        });
    }
}

/// `q ← c₀·net + c₁·x + c₂·μ; x ← a·x + b·q + Σ cᵢ·tᵢ` in one pass (`terms.len() ≤ 5`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn convert_step_n<E: NdElement, const M: usize>(
    x: &mut [E],
    q: &mut [E],
    net: &[E],
    mu: &[E],
    conv: [E; 3],
    a: E,
    b: E,
    c: [E; M],
    s: [&[E]; M],
) {
    let n = x.len();
    let (q, net, mu) = (&mut q[..n], &net[..n], &mu[..n]);
    let s: [&[E]; M] = s.map(|v| &v[..n]);
    for i in 0..n {
        let xi = x[i];
        let qi = conv[0] * net[i] + conv[1] * xi + conv[2] * mu[i];
        q[i] = qi;
        let mut acc = a * xi + b * qi;
        for k in 0..M {
            acc = acc + c[k] * s[k][i];
        }
        x[i] = acc;
    }
}

/// [`convert_step_n`] as a `pulp` operation.
struct ConvertStep<'a, E, const M: usize> {
    x: &'a mut [E],
    q: &'a mut [E],
    net: &'a [E],
    mu: &'a [E],
    conv: [E; 3],
    a: E,
    b: E,
    c: [E; M],
    s: [&'a [E]; M],
}

impl<E: NdElement, const M: usize> pulp::WithSimd for ConvertStep<'_, E, M> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        convert_step_n::<E, M>(
            self.x, self.q, self.net, self.mu, self.conv, self.a, self.b, self.c, self.s,
        )
    }
}

/// Elements of noise generated at a time by the fused step with a counter draw (a stack
/// buffer of 16 KiB in `f32`, so the noise is read back from L1/L2).
const NOISE_CHUNK: usize = 4096;

/// The fused conversion-and-step kernel; returns `false` (doing nothing) when there are too
/// many extra terms, so the caller falls back to two passes. A counter draw is generated in
/// chunks of [`NOISE_CHUNK`] just before its chunk of the update and enters as the last term.
#[allow(clippy::too_many_arguments)]
pub(crate) fn convert_and_step<E: NdElement>(
    x: &mut [E],
    q: &mut [E],
    net: &[E],
    mu: &[E],
    conv: [f64; 3],
    a: f64,
    b: f64,
    terms: &[(f64, &[E])],
    noise: Option<&(f64, CounterDraw<'_>)>,
    par: Parallelism,
) -> bool {
    if terms.len() + noise.is_some() as usize > 5 {
        return false;
    }
    let conv = conv.map(E::from_f64_lossy);
    let (a, b) = (E::from_f64_lossy(a), E::from_f64_lossy(b));
    let n = x.len();
    let parts = par.parts(n);
    let chunk = n.div_ceil(parts.max(1));
    // The update of `xo`, `qo` (elements `off ..` of the whole), with `extra` as a last term.
    let update = |xo: &mut [E], qo: &mut [E], off: usize, extra: Option<(E, &[E])>| {
        let m = xo.len();
        let net = &net[off..off + m];
        let mu = &mu[off..off + m];
        let mut buf: [(E, &[E]); 5] = [(E::zero(), &[][..]); 5];
        for (k, (c, s)) in terms.iter().enumerate() {
            buf[k] = (E::from_f64_lossy(*c), &s[off..off + m]);
        }
        let mut used = terms.len();
        if let Some(e) = extra {
            buf[used] = e;
            used += 1;
        }
        macro_rules! arm {
            ($n:literal) => {{
                let c: [E; $n] = std::array::from_fn(|k| buf[k].0);
                let s: [&[E]; $n] = std::array::from_fn(|k| buf[k].1);
                pulp::Arch::new().dispatch(ConvertStep::<E, $n> {
                    x: xo,
                    q: qo,
                    net,
                    mu,
                    conv,
                    a,
                    b,
                    c,
                    s,
                })
            }};
        }
        match used {
            0 => arm!(0),
            1 => arm!(1),
            2 => arm!(2),
            3 => arm!(3),
            4 => arm!(4),
            _ => arm!(5),
        }
    };
    let body = |xo: &mut [E], qo: &mut [E], off: usize| match noise {
        None => update(xo, qo, off, None),
        Some((w, draw)) => {
            let w = E::from_f64_lossy(*w);
            let mut z = [E::zero(); NOISE_CHUNK];
            for (k, (xs, qs)) in xo
                .chunks_mut(NOISE_CHUNK)
                .zip(qo.chunks_mut(NOISE_CHUNK))
                .enumerate()
            {
                let at = off + k * NOISE_CHUNK;
                let z = &mut z[..xs.len()];
                draw.fill(z, at);
                update(xs, qs, at, Some((w, &*z)));
            }
        }
    };
    if parts <= 1 {
        body(x, q, 0);
    } else {
        x.par_chunks_mut(chunk)
            .zip(q.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (xo, qo))| body(xo, qo, i * chunk));
    }
    true
}

/// [`all_finite`] on one part, as a `pulp` operation: a branch-free test per block of 1024.
struct Finite<'a, E>(&'a [E]);

impl<E: NdElement> pulp::WithSimd for Finite<'_, E> {
    type Output = bool;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> bool {
        let inf = E::infinity();
        self.0
            .chunks(1024)
            .all(|c| c.iter().fold(true, |ok, v| ok & (v.abs() < inf)))
    }
}

/// True when no element is NaN or ±∞ (split across threads like the other kernels).
pub(crate) fn all_finite<E: NdElement>(s: &[E], par: Parallelism) -> bool {
    let parts = par.parts(s.len());
    if parts <= 1 {
        return pulp::Arch::new().dispatch(Finite(s));
    }
    let chunk = s.len().div_ceil(parts);
    s.par_chunks(chunk)
        .all(|c| pulp::Arch::new().dispatch(Finite(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_term_count_and_split_agree_with_scalar() {
        let n = 100_003;
        let srcs: Vec<Vec<f32>> = (0..11)
            .map(|k| {
                (0..n)
                    .map(|i| ((i * (k + 3)) % 97) as f32 * 0.01 - 0.4)
                    .collect()
            })
            .collect();
        for count in 0..=11 {
            let terms: Vec<(f64, &[f32])> = (0..count)
                .map(|k| (0.3 - 0.07 * k as f64, &srcs[k][..]))
                .collect();
            for a in [None, Some(0.9)] {
                let mut want: Vec<f32> = srcs[0].iter().map(|v| v * 2.0).collect();
                for (i, w) in want.iter_mut().enumerate() {
                    let mut acc = match a {
                        Some(a) => a as f32 * *w,
                        None => 0.0,
                    };
                    for (c, s) in &terms {
                        acc += *c as f32 * s[i];
                    }
                    *w = acc;
                }
                for par in [
                    Parallelism::Sequential,
                    Parallelism::Rayon(2),
                    Parallelism::Rayon(3),
                ] {
                    let mut out: Vec<f32> = srcs[0].iter().map(|v| v * 2.0).collect();
                    lincomb(&mut out, a, &terms, par);
                    for (g, w) in out.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "{count} terms: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fused_step_equals_two_passes() {
        let n = 70_001;
        let mk = |s: usize| -> Vec<f64> {
            (0..n)
                .map(|i| ((i * s) % 89) as f64 * 0.013 - 0.5)
                .collect()
        };
        let (net, mu, t1, t2) = (mk(3), mk(5), mk(7), mk(11));
        let conv = [0.7, -0.2, 0.45];
        for par in [Parallelism::Sequential, Parallelism::Rayon(2)] {
            let mut x = mk(13);
            let mut q = vec![0.0; n];
            let x0 = x.clone();
            assert!(convert_and_step(
                &mut x,
                &mut q,
                &net,
                &mu,
                conv,
                0.8,
                1.3,
                &[(0.25, &t1), (-0.5, &t2), (0.1, &mu)],
                None,
                par
            ));
            for i in 0..n {
                let qi = conv[0] * net[i] + conv[1] * x0[i] + conv[2] * mu[i];
                let xi = 0.8 * x0[i] + 1.3 * qi + 0.25 * t1[i] - 0.5 * t2[i] + 0.1 * mu[i];
                assert!((q[i] - qi).abs() < 1e-14 && (x[i] - xi).abs() < 1e-14);
            }
        }
    }
}
