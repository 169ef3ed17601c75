//! Causal attention of `t` new queries over the KV cache (see `kv_cache.rs` for the slot
//! layout): per head, scores by `dot_f16` (or `dot` for an f32 cache), optional soft-cap, float32
//! softmax, then `axpy_f16` / `axpy` over the values. Sliding-window and grouped-query (GQA)
//! attention; heads run in parallel.

use super::{axpy, axpy_f16, dot, dot_f16, softcap, softmax};
use crate::kv_cache::{KvRows, KvSlots};
use half::f16;
use rayon::prelude::*;

/// Element type of cached rows.
trait KvElem: Sync {
    fn dot(q: &[f32], k: &[Self]) -> f32
    where
        Self: Sized;
    fn axpy(y: &mut [f32], a: f32, v: &[Self])
    where
        Self: Sized;
}

impl KvElem for f16 {
    fn dot(q: &[f32], k: &[f16]) -> f32 {
        dot_f16(q, k)
    }
    fn axpy(y: &mut [f32], a: f32, v: &[f16]) {
        axpy_f16(y, a, v)
    }
}

impl KvElem for f32 {
    fn dot(q: &[f32], k: &[f32]) -> f32 {
        dot(q, k)
    }
    fn axpy(y: &mut [f32], a: f32, v: &[f32]) {
        axpy(y, a, v)
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
    match kv.rows {
        KvRows::F16 { k, v } => attend(q, t, pos0, k, v, kv.slots, a, out, scratch),
        KvRows::F32 { k, v } => attend(q, t, pos0, k, v, kv.slots, a, out, scratch),
    }
}

#[allow(clippy::too_many_arguments)]
fn attend<T: KvElem>(
    q: &[f32],
    t: usize,
    pos0: usize,
    kc: &[T],
    vc: &[T],
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
    let kv_dim = a.n_kv_heads * d;

    // Each head writes its outputs head-major into its own scratch block, then they are
    // interleaved into `out` ([t, heads, d]).
    scratch[..need]
        .par_chunks_mut(span + t * d)
        .enumerate()
        .for_each(|(h, buf)| {
            let (scores, o) = buf.split_at_mut(span);
            let kvh = h / group;
            o.fill(0.0);
            for i in 0..t {
                let p = pos0 + i;
                let lo = first_key(p, a.window);
                let n = p + 1 - lo;
                let qh = &q[(i * nh + h) * d..(i * nh + h + 1) * d];
                let sc = &mut scores[..n];
                for (j, s) in sc.iter_mut().enumerate() {
                    let slot = (lo + j) % slots;
                    let k = &kc[slot * kv_dim + kvh * d..slot * kv_dim + (kvh + 1) * d];
                    *s = T::dot(qh, k) * a.scale;
                }
                if let Some(cap) = a.softcap {
                    softcap(sc, cap);
                }
                softmax(sc);
                let oh = &mut o[i * d..(i + 1) * d];
                for (j, &w) in sc.iter().enumerate() {
                    let slot = (lo + j) % slots;
                    let v = &vc[slot * kv_dim + kvh * d..slot * kv_dim + (kvh + 1) * d];
                    T::axpy(oh, w, v);
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
}
