//! Causal attention of `t` new queries over the KV cache (see `kv_cache.rs` for the slot
//! layout): per head, scores by `dot_f16` (or `dot` for an f32 cache; int8 / int4 caches are
//! dequantized inside the dot products, one scale per head row), optional soft-cap, float32
//! softmax, then `axpy_f16` / `axpy` over the values. Sliding-window and grouped-query (GQA)
//! attention; heads run in parallel.

use super::{axpy, axpy_f16, dot, dot_f16, softcap, softmax};
use crate::kv_cache::{Hadamard, KvRows, KvSlots};
use half::f16;
use rayon::prelude::*;

/// Cached K/V rows the kernel reads: the dot product of a query head with the key of
/// (`slot`, `kvh`), and `y += w * value(slot, kvh)`. Quantized rows dequantize on the fly.
trait Rows: Sync {
    fn dot(&self, q: &[f32], slot: usize, kvh: usize) -> f32;
    fn axpy(&self, y: &mut [f32], w: f32, slot: usize, kvh: usize);
    /// The rotation the stored rows went through (quantized caches only).
    fn rotation(&self) -> Option<&Hadamard> {
        None
    }
}

struct Float<'a, T> {
    k: &'a [T],
    v: &'a [T],
    kv_dim: usize,
    d: usize,
}

impl<T> Float<'_, T> {
    fn at(&self, slot: usize, kvh: usize) -> std::ops::Range<usize> {
        let o = slot * self.kv_dim + kvh * self.d;
        o..o + self.d
    }
}

impl Rows for Float<'_, f16> {
    fn dot(&self, q: &[f32], slot: usize, kvh: usize) -> f32 {
        dot_f16(q, &self.k[self.at(slot, kvh)])
    }
    fn axpy(&self, y: &mut [f32], w: f32, slot: usize, kvh: usize) {
        axpy_f16(y, w, &self.v[self.at(slot, kvh)])
    }
}

impl Rows for Float<'_, f32> {
    fn dot(&self, q: &[f32], slot: usize, kvh: usize) -> f32 {
        dot(q, &self.k[self.at(slot, kvh)])
    }
    fn axpy(&self, y: &mut [f32], w: f32, slot: usize, kvh: usize) {
        axpy(y, w, &self.v[self.at(slot, kvh)])
    }
}

/// int8 or packed int4 rows with one scale per (slot, kv head).
struct Quant<'a, T> {
    k: &'a [T],
    v: &'a [T],
    ks: &'a [f32],
    vs: &'a [f32],
    kv_heads: usize,
    d: usize,
    /// Elements per scale (the head size for int8).
    group: usize,
    rot: Option<&'a Hadamard>,
}

/// Σ q·x over int8 `x`; eight partial sums so the loop vectorizes.
#[inline(always)]
fn dot_i8_body(q: &[f32], x: &[i8]) -> f32 {
    let mut acc = [0f32; 8];
    let (qc, xc) = (q.chunks_exact(8), x.chunks_exact(8));
    let (qr, xr) = (qc.remainder(), xc.remainder());
    for (a, b) in qc.zip(xc) {
        for j in 0..8 {
            acc[j] += a[j] * b[j] as f32;
        }
    }
    let tail: f32 = qr.iter().zip(xr).map(|(a, &b)| a * b as f32).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x` over int8 `x`.
#[inline(always)]
fn axpy_i8_body(y: &mut [f32], a: f32, x: &[i8]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v as f32;
    }
}

/// Σ q·x over an int4 row (see `kv_cache::quantize_q4`: low nibbles hold the first half).
#[inline(always)]
fn dot_i4_body(q: &[f32], x: &[u8]) -> f32 {
    let h = q.len().div_ceil(2);
    let (q0, q1) = q.split_at(h);
    let mut acc = [0f32; 8];
    let (c0, c1, cx) = (q0.chunks_exact(8), q1.chunks_exact(8), x.chunks_exact(8));
    let full = if q0.len() == q1.len() { cx.len() } else { 0 };
    for ((a, b), v) in c0.zip(c1).zip(cx).take(full) {
        for j in 0..8 {
            acc[j] +=
                a[j] * ((v[j] & 15) as i32 - 8) as f32 + b[j] * ((v[j] >> 4) as i32 - 8) as f32;
        }
    }
    let mut tail = 0f32;
    for i in full * 8..h {
        tail += q0[i] * ((x[i] & 15) as i32 - 8) as f32;
        if let Some(b) = q1.get(i) {
            tail += b * ((x[i] >> 4) as i32 - 8) as f32;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x` over an int4 row.
#[inline(always)]
fn axpy_i4_body(y: &mut [f32], a: f32, x: &[u8]) {
    let h = y.len().div_ceil(2);
    let (y0, y1) = y.split_at_mut(h);
    for (o, &v) in y0.iter_mut().zip(x) {
        *o += a * ((v & 15) as i32 - 8) as f32;
    }
    for (o, &v) in y1.iter_mut().zip(x) {
        *o += a * ((v >> 4) as i32 - 8) as f32;
    }
}

/// The same bodies compiled for AVX2 + FMA (auto-vectorized 8 wide), chosen at run time.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
        super::dot_i8_body(q, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_i8(y: &mut [f32], a: f32, x: &[i8]) {
        super::axpy_i8_body(y, a, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_i4(q: &[f32], x: &[u8]) -> f32 {
        super::dot_i4_body(q, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_i4(y: &mut [f32], a: f32, x: &[u8]) {
        super::axpy_i4_body(y, a, x)
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    use super::isa::{Isa, detected};
    detected() >= Isa::Avx2
}

fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 and FMA detected at run time.
        return unsafe { x86::dot_i8(q, x) };
    }
    dot_i8_body(q, x)
}

fn axpy_i8(y: &mut [f32], a: f32, x: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: as in `dot_i8`.
        return unsafe { x86::axpy_i8(y, a, x) };
    }
    axpy_i8_body(y, a, x)
}

fn dot_i4(q: &[f32], x: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: as in `dot_i8`.
        return unsafe { x86::dot_i4(q, x) };
    }
    dot_i4_body(q, x)
}

fn axpy_i4(y: &mut [f32], a: f32, x: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: as in `dot_i8`.
        return unsafe { x86::axpy_i4(y, a, x) };
    }
    axpy_i4_body(y, a, x)
}

impl Rows for Quant<'_, i8> {
    fn dot(&self, q: &[f32], slot: usize, kvh: usize) -> f32 {
        let r = slot * self.kv_heads + kvh;
        self.ks[r] * dot_i8(q, &self.k[r * self.d..(r + 1) * self.d])
    }
    fn axpy(&self, y: &mut [f32], w: f32, slot: usize, kvh: usize) {
        let r = slot * self.kv_heads + kvh;
        axpy_i8(y, w * self.vs[r], &self.v[r * self.d..(r + 1) * self.d]);
    }
    fn rotation(&self) -> Option<&Hadamard> {
        self.rot
    }
}

impl Rows for Quant<'_, u8> {
    fn dot(&self, q: &[f32], slot: usize, kvh: usize) -> f32 {
        let g = self.group;
        let b = g.div_ceil(2);
        // Group index of the head's first group.
        let r0 = (slot * self.kv_heads + kvh) * (self.d / g);
        q.chunks_exact(g)
            .enumerate()
            .map(|(i, qg)| {
                let r = r0 + i;
                self.ks[r] * dot_i4(qg, &self.k[r * b..(r + 1) * b])
            })
            .sum()
    }
    fn axpy(&self, y: &mut [f32], w: f32, slot: usize, kvh: usize) {
        let g = self.group;
        let b = g.div_ceil(2);
        let r0 = (slot * self.kv_heads + kvh) * (self.d / g);
        for (i, yg) in y.chunks_exact_mut(g).enumerate() {
            let r = r0 + i;
            axpy_i4(yg, w * self.vs[r], &self.v[r * b..(r + 1) * b]);
        }
    }
    fn rotation(&self) -> Option<&Hadamard> {
        self.rot
    }
}

/// Shape and behaviour of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window: key `s` is visible to query `p` iff `p - s < window`.
    pub window: Option<usize>,
    /// Multiplies q·k.
    pub scale: f32,
    pub softcap: Option<f32>,
}

/// First visible key position for a query at `p`.
fn first_key(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

/// Scratch floats [`attention`] needs for `t` queries starting at `pos0`.
pub fn scratch_len(a: &AttnParams, pos0: usize, t: usize) -> usize {
    let span = match a.window {
        Some(w) => w.min(pos0 + t),
        None => pos0 + t,
    };
    a.n_heads * (span + t * a.head_dim)
}

/// `q`: [t, n_heads, head_dim] (already normed and rotated); query `i` is at position `pos0 + i`
/// and sees keys `first_key ..= pos0 + i`, all of which must be in `kv`. `out`: [t, n_heads *
/// head_dim]. `scratch` holds at least [`scratch_len`] floats.
pub fn attention(
    q: &[f32],
    t: usize,
    pos0: usize,
    kv: KvSlots<'_>,
    a: &AttnParams,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let (kv_heads, d) = (a.n_kv_heads, a.head_dim);
    let kv_dim = kv_heads * d;
    match kv.rows {
        KvRows::F16 { k, v } => {
            let r = Float { k, v, kv_dim, d };
            attend(q, t, pos0, &r, kv.slots, a, out, scratch)
        }
        KvRows::F32 { k, v } => {
            let r = Float { k, v, kv_dim, d };
            attend(q, t, pos0, &r, kv.slots, a, out, scratch)
        }
        KvRows::Q8 {
            k,
            v,
            k_scales,
            v_scales,
            rotation,
        } => {
            let r = Quant {
                k,
                v,
                ks: k_scales,
                vs: v_scales,
                kv_heads,
                d,
                group: d,
                rot: rotation,
            };
            attend(q, t, pos0, &r, kv.slots, a, out, scratch)
        }
        KvRows::Q4 {
            k,
            v,
            k_scales,
            v_scales,
            group,
            rotation,
        } => {
            assert!(
                group > 0 && d.is_multiple_of(group),
                "attention: int4 group {group} must divide the head size {d}"
            );
            let r = Quant {
                k,
                v,
                ks: k_scales,
                vs: v_scales,
                kv_heads,
                d,
                group,
                rot: rotation,
            };
            attend(q, t, pos0, &r, kv.slots, a, out, scratch)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attend<R: Rows>(
    q: &[f32],
    t: usize,
    pos0: usize,
    rows: &R,
    slots: usize,
    a: &AttnParams,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let (nh, d) = (a.n_heads, a.head_dim);
    assert!(
        a.n_kv_heads > 0 && nh.is_multiple_of(a.n_kv_heads),
        "attention: GQA heads"
    );
    assert!(
        q.len() >= t * nh * d && out.len() >= t * nh * d,
        "attention: q/out size"
    );
    let need = scratch_len(a, pos0, t);
    assert!(scratch.len() >= need, "attention: scratch too small");
    let span = need / nh - t * d;
    let group = nh / a.n_kv_heads;
    let rot = rows.rotation();

    // Each head writes its outputs head-major into its own scratch block, then they are
    // interleaved into `out` ([t, heads, d]).
    scratch[..need]
        .par_chunks_mut(span + t * d)
        .enumerate()
        .for_each(|(h, buf)| {
            let (scores, o) = buf.split_at_mut(span);
            let kvh = h / group;
            let mut qrot = vec![0f32; if rot.is_some() { d } else { 0 }];
            o.fill(0.0);
            for i in 0..t {
                let p = pos0 + i;
                let lo = first_key(p, a.window);
                let n = p + 1 - lo;
                let mut qh = &q[(i * nh + h) * d..(i * nh + h + 1) * d];
                if let Some(r) = rot {
                    qrot.copy_from_slice(qh);
                    r.apply(&mut qrot);
                    qh = &qrot;
                }
                let sc = &mut scores[..n];
                for (j, s) in sc.iter_mut().enumerate() {
                    *s = rows.dot(qh, (lo + j) % slots, kvh) * a.scale;
                }
                if let Some(cap) = a.softcap {
                    softcap(sc, cap);
                }
                softmax(sc);
                let oh = &mut o[i * d..(i + 1) * d];
                for (j, &w) in sc.iter().enumerate() {
                    rows.axpy(oh, w, (lo + j) % slots, kvh);
                }
                if let Some(r) = rot {
                    // The values were stored rotated; so is their weighted sum.
                    r.invert(oh);
                }
            }
        });
    for h in 0..nh {
        let base = h * (span + t * d) + span;
        for i in 0..t {
            out[(i * nh + h) * d..(i * nh + h + 1) * d]
                .copy_from_slice(&scratch[base + i * d..base + (i + 1) * d]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Plain f64 attention over full K/V arrays ([positions, kv_heads, d]).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        t: usize,
        pos0: usize,
        k: &[f32],
        v: &[f32],
        a: &AttnParams,
    ) -> Vec<f32> {
        let (nh, d) = (a.n_heads, a.head_dim);
        let group = nh / a.n_kv_heads;
        let mut out = vec![0f32; t * nh * d];
        for i in 0..t {
            let p = pos0 + i;
            for h in 0..nh {
                let kvh = h / group;
                let lo = first_key(p, a.window);
                let mut sc: Vec<f64> = (lo..=p)
                    .map(|s| {
                        let mut acc = 0f64;
                        for x in 0..d {
                            acc += q[(i * nh + h) * d + x] as f64
                                * k[(s * a.n_kv_heads + kvh) * d + x] as f64;
                        }
                        acc * a.scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                sc.iter_mut().for_each(|s| *s = (*s - m).exp() / z);
                for (j, s) in (lo..=p).enumerate() {
                    for x in 0..d {
                        out[(i * nh + h) * d + x] +=
                            (sc[j] * v[(s * a.n_kv_heads + kvh) * d + x] as f64) as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Exactly representable in f16 so the reference sees the cached values.
                f16::from_f32((s % 2000) as f32 / 1000.0 - 1.0).to_f32()
            })
            .collect()
    }

    fn check(window: Option<usize>, slots_extra: usize, pos0: usize, t: usize) {
        let a = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            window,
            scale: 0.3,
            softcap: None,
        };
        let total = pos0 + t;
        let kv_dim = a.n_kv_heads * a.head_dim;
        let k = values(total * kv_dim, 1);
        let v = values(total * kv_dim, 2);
        let q = values(t * a.n_heads * a.head_dim, 3);
        let slots = match window {
            Some(w) => w + slots_extra,
            None => total,
        };
        let mut kc = vec![f16::ZERO; slots * kv_dim];
        let mut vc = vec![f16::ZERO; slots * kv_dim];
        for p in 0..total {
            let s = p % slots;
            for x in 0..kv_dim {
                kc[s * kv_dim + x] = f16::from_f32(k[p * kv_dim + x]);
                vc[s * kv_dim + x] = f16::from_f32(v[p * kv_dim + x]);
            }
        }
        let mut out = vec![0f32; t * a.n_heads * a.head_dim];
        let mut scratch = vec![0f32; scratch_len(&a, pos0, t)];
        let want = reference(&q, t, pos0, &k, &v, &a);
        let kv = KvSlots {
            rows: KvRows::F16 { k: &kc, v: &vc },
            slots,
        };
        attention(&q, t, pos0, kv, &a, &mut out, &mut scratch);
        for (x, y) in out.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // The f32 cache holds the same (f16-exact) values.
        let kf: Vec<f32> = kc.iter().map(|x| x.to_f32()).collect();
        let vf: Vec<f32> = vc.iter().map(|x| x.to_f32()).collect();
        let kv = KvSlots {
            rows: KvRows::F32 { k: &kf, v: &vf },
            slots,
        };
        out.fill(0.0);
        attention(&q, t, pos0, kv, &a, &mut out, &mut scratch);
        for (x, y) in out.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn full_causal_matches_reference() {
        check(None, 0, 0, 7);
        check(None, 0, 5, 1);
        check(None, 0, 3, 4);
    }

    #[test]
    fn sliding_ring_matches_reference() {
        // Ring of window + chunk - 1 slots, several wraps.
        check(Some(4), 2, 17, 3);
        check(Some(4), 0, 20, 1);
        check(Some(6), 5, 0, 6);
    }

    /// int8 / int4 caches (with and without rotation) give the attention of their dequantized
    /// rows.
    #[test]
    fn quantized_cache_matches_reference_on_dequantized_rows() {
        use crate::kv_cache::{Hadamard, dequantize_q4, quantize_q4, quantize_q8};
        let a = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            window: None,
            scale: 0.3,
            softcap: None,
        };
        let (pos0, t) = (5, 3);
        let total = pos0 + t;
        let d = a.head_dim;
        let kv_dim = a.n_kv_heads * d;
        let k = values(total * kv_dim, 4);
        let v = values(total * kv_dim, 5);
        let q = values(t * a.n_heads * d, 6);
        for q4 in [false, true] {
            for rotate in [false, true] {
                let rot = rotate.then(|| Hadamard::new(d));
                let rows = total * a.n_kv_heads;
                let (mut k8, mut v8) = (vec![0i8; rows * d], vec![0i8; rows * d]);
                let (mut k4, mut v4) = (vec![0u8; rows * d / 2], vec![0u8; rows * d / 2]);
                // int4 uses two scale groups of 8 per head.
                let g = if q4 { 8 } else { d };
                let (mut ks, mut vs) = (vec![0f32; rows * d / g], vec![0f32; rows * d / g]);
                // What the cache holds, rotated back: the reference attends over these.
                let (mut kd, mut vd) = (vec![0f32; rows * d], vec![0f32; rows * d]);
                for r in 0..rows {
                    for (src, q8, q4b, sc, deq) in [
                        (&k, &mut k8, &mut k4, &mut ks, &mut kd),
                        (&v, &mut v8, &mut v4, &mut vs, &mut vd),
                    ] {
                        let mut x = src[r * d..(r + 1) * d].to_vec();
                        if let Some(h) = &rot {
                            h.apply(&mut x);
                        }
                        let out = &mut deq[r * d..(r + 1) * d];
                        if q4 {
                            for j in 0..d / g {
                                let (e, b) = (r * d + j * g, (r * d + j * g) / 2);
                                let gi = e / g;
                                sc[gi] =
                                    quantize_q4(&x[j * g..(j + 1) * g], &mut q4b[b..b + g / 2]);
                                dequantize_q4(
                                    &q4b[b..b + g / 2],
                                    sc[gi],
                                    &mut out[j * g..(j + 1) * g],
                                );
                            }
                        } else {
                            sc[r] = quantize_q8(&x, &mut q8[r * d..(r + 1) * d]);
                            for (o, &b) in out.iter_mut().zip(&q8[r * d..(r + 1) * d]) {
                                *o = b as f32 * sc[r];
                            }
                        }
                        if let Some(h) = &rot {
                            h.invert(out);
                        }
                    }
                }
                let rows_view = if q4 {
                    KvRows::Q4 {
                        k: &k4,
                        v: &v4,
                        k_scales: &ks,
                        v_scales: &vs,
                        group: g,
                        rotation: rot.as_ref(),
                    }
                } else {
                    KvRows::Q8 {
                        k: &k8,
                        v: &v8,
                        k_scales: &ks,
                        v_scales: &vs,
                        rotation: rot.as_ref(),
                    }
                };
                let kv = KvSlots {
                    rows: rows_view,
                    slots: total,
                };
                let mut out = vec![0f32; t * a.n_heads * d];
                let mut scratch = vec![0f32; scratch_len(&a, pos0, t)];
                attention(&q, t, pos0, kv, &a, &mut out, &mut scratch);
                let want = reference(&q, t, pos0, &kd, &vd, &a);
                for (x, y) in out.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "q4 {q4} rotate {rotate}: {x} vs {y}");
                }
            }
        }
    }

    /// The int8 / int4 row kernels (SIMD where detected) against dequantize-then-f64, for odd and
    /// non-multiple-of-8 lengths too.
    #[test]
    fn int_row_kernels_match_dequantized_rows() {
        use crate::kv_cache::{dequantize_q4, quantize_q4, quantize_q8};
        for d in [1usize, 7, 16, 20, 33, 256] {
            let x = values(d, 7);
            let q = values(d, 8);
            let mut x8 = vec![0i8; d];
            let s8 = quantize_q8(&x, &mut x8);
            let mut x4 = vec![0u8; d.div_ceil(2)];
            let s4 = quantize_q4(&x, &mut x4);
            let mut d4 = vec![0f32; d];
            dequantize_q4(&x4, 1.0, &mut d4);
            let want8: f64 = q.iter().zip(&x8).map(|(a, &b)| *a as f64 * b as f64).sum();
            let want4: f64 = q.iter().zip(&d4).map(|(a, &b)| *a as f64 * b as f64).sum();
            assert!((dot_i8(&q, &x8) as f64 - want8).abs() < 1e-3, "dot_i8 {d}");
            assert!((dot_i4(&q, &x4) as f64 - want4).abs() < 1e-4, "dot_i4 {d}");
            let mut y8 = q.clone();
            axpy_i8(&mut y8, 0.5, &x8);
            let mut y4 = q.clone();
            axpy_i4(&mut y4, 0.5, &x4);
            for i in 0..d {
                assert!(
                    (y8[i] - (q[i] + 0.5 * x8[i] as f32)).abs() < 1e-5,
                    "axpy_i8 {d}"
                );
                assert!((y4[i] - (q[i] + 0.5 * d4[i])).abs() < 1e-5, "axpy_i4 {d}");
            }
            let _ = (s8, s4);
        }
    }
}
