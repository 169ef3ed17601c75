//! Decode attention of one query over a KV cache kept on the device (the CPU `attention` for
//! t = 1), and the op that appends K/V rows to that cache.
//!
//! The cache is a [`GpuBuffer`] of `slots * n_kv_heads * head_dim` f16 or f32 values with the
//! CPU cache's ring layout (position `p` in slot `p % slots`), so sliding-window layers keep
//! `window + chunk - 1` slots and full layers grow to the context.

use super::rope::NormRope;
use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};
use crate::kernels::cpu::attention::AttnParams;

static SHADER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_norm_rope(include_str!("attention.wgsl")));
static MERGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_block_reduce(include_str!("attention_merge.wgsl")));
static STORE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_norm_rope(include_str!("kv_store.wgsl")));

/// Scratch floats [`attention`] needs for `t` query rows at positions `pos0..pos0 + t` (with
/// less, a single row falls back from the split pass to one workgroup per head).
pub fn scratch_len(a: &AttnParams, pos0: usize, t: usize) -> usize {
    let span = span(a, pos0 + t.max(1) - 1);
    let split = match (t, split_keys(span)) {
        (1, Some((_, parts))) => a.n_heads * parts * (a.head_dim + 2),
        _ => 0,
    };
    (t * a.n_heads * span).max(split)
}

/// Keys the last row (position `last`) sees: the widest row of a chunk.
fn span(a: &AttnParams, last: usize) -> usize {
    a.window.map_or(last + 1, |w| w.min(last + 1))
}

/// Records `t` rows of `kv_dim` f32 from `src` into `cache` at positions `pos0..pos0 + t`
/// (slot `p % slots`). `t` must not exceed `slots` (each slot is written once).
pub fn store_kv(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    t: usize,
    kv_dim: usize,
    pos0: usize,
    cache: &GpuBuffer,
    slots: usize,
) -> Result<(), GpuError> {
    let f16 = cache.elem == ElemType::F16;
    if src.elem != ElemType::F32
        || src.len < t * kv_dim
        || cache.len < slots * kv_dim
        || t > slots
        || (f16 && !kv_dim.is_multiple_of(2))
    {
        return Err(shape_err(
            "store_kv",
            format!(
                "src[{}] t {t} kv_dim {kv_dim} cache[{}] slots {slots}",
                src.len, cache.len
            ),
        ));
    }
    let pipeline = enc.ctx().pipeline("kv_store", &STORE, "store_kv", &[]);
    let words = if f16 { kv_dim / 2 } else { kv_dim } * t;
    let params = [
        kv_dim as u32,
        pos0 as u32,
        t as u32,
        slots as u32,
        f16 as u32,
        0,
        0,
    ];
    enc.dispatch(
        pipeline,
        &params,
        &[&src.buf, &cache.buf],
        words.div_ceil(256) as u32,
    );
    Ok(())
}

/// Records [`store_kv`] of the chunk's K rows and V rows in one dispatch; with `v_norm_eps`,
/// each V head row is RMS-normalized (no weight, Gemma 4) on the way, and with `k_rope` each K
/// head row gets its norm and RoPE (at its position) first. `k`/`v` hold `t` rows of
/// `kv_dim = heads * head_dim` f32; `head_dim` even and <= 512.
#[allow(clippy::too_many_arguments)]
pub fn store_kv_pair(
    enc: &mut Encoder<'_>,
    (k, v): (&GpuBuffer, &GpuBuffer),
    t: usize,
    (kv_dim, head_dim): (usize, usize),
    pos0: usize,
    (kc, vc): (&GpuBuffer, &GpuBuffer),
    slots: usize,
    v_norm_eps: Option<f32>,
    k_rope: Option<NormRope<'_>>,
) -> Result<(), GpuError> {
    let ok = head_dim > 0
        && head_dim.is_multiple_of(2)
        && head_dim <= 512
        && kv_dim.is_multiple_of(head_dim)
        && kc.elem == vc.elem
        && k.elem == ElemType::F32
        && v.elem == ElemType::F32
        && k.len >= t * kv_dim
        && v.len >= t * kv_dim
        && kc.len >= slots * kv_dim
        && vc.len >= slots * kv_dim
        && t <= slots
        && v_norm_eps.is_none_or(|e| e > 0.0);
    if !ok {
        return Err(shape_err(
            "store_kv_pair",
            format!(
                "k[{}] v[{}] t {t} head_dim {head_dim} caches [{}]/[{}] slots {slots}",
                k.len, v.len, kc.len, vc.len
            ),
        ));
    }
    let (k_mode, k_eps) = match &k_rope {
        Some(r) => r.check("store_kv_pair", head_dim)?,
        None => (0, 0.0),
    };
    let (knw, kfreq) = rope_buffers(enc, k_rope);
    let pipeline = enc.ctx().pipeline("kv_store", &STORE, "store_kv_pair", &[]);
    let params = [
        kv_dim as u32,
        pos0 as u32,
        t as u32,
        slots as u32,
        (kc.elem == ElemType::F16) as u32,
        head_dim as u32,
        v_norm_eps.unwrap_or(0.0).to_bits(),
        k_rope.is_some() as u32,
        k_mode,
        k_eps.to_bits(),
    ];
    enc.dispatch(
        pipeline,
        &params,
        &[&k.buf, &kc.buf, &v.buf, &vc.buf, &knw, &kfreq],
        (t * kv_dim / head_dim) as u32,
    );
    Ok(())
}

/// The (norm weight, inverse frequencies) buffers a fused norm + RoPE binds (the dummy for what
/// is absent: the shaders never read them then).
fn rope_buffers(enc: &Encoder<'_>, r: Option<NormRope<'_>>) -> (wgpu::Buffer, wgpu::Buffer) {
    let dummy = &enc.ctx().dummy;
    match r {
        Some(r) => (
            r.norm.w.map_or(dummy, |w| &w.buf).clone(),
            r.inv_freq.buf.clone(),
        ),
        None => (dummy.clone(), dummy.clone()),
    }
}

/// Records attention of the `t` query rows `q` ([t, n_heads * head_dim], normed and rotated) at
/// positions `pos0..pos0 + t` over the caches `k`/`v` (same element type, `slots` rows of
/// `n_kv_heads * head_dim`, the chunk's own rows already stored); writes `out` [t, n_heads *
/// head_dim]. Row `i` sees keys up to `pos0 + i` (causal) and within its window. `scratch` holds
/// at least [`scratch_len`] f32. One workgroup per (row, head), so a prefill chunk is one
/// dispatch.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    enc: &mut Encoder<'_>,
    q: &GpuBuffer,
    t: usize,
    pos0: usize,
    k: &GpuBuffer,
    v: &GpuBuffer,
    slots: usize,
    a: &AttnParams,
    scratch: &GpuBuffer,
    out: &GpuBuffer,
    q_rope: Option<NormRope<'_>>,
) -> Result<(), GpuError> {
    let (nh, nkv, d) = (a.n_heads, a.n_kv_heads, a.head_dim);
    let (q_mode, q_eps) = match &q_rope {
        Some(r) => r.check("attention", d)?,
        None => (0, 0.0),
    };
    if t == 0 {
        return Ok(());
    }
    let span = span(a, pos0 + t - 1);
    // The last row's keys and the rows after each earlier row's window must fit the ring.
    let ring_ok = a
        .window
        .map_or(pos0 + t <= slots, |w| w.min(pos0 + t) + t - 1 <= slots);
    let ok = nkv > 0
        && nh % nkv == 0
        && d <= 512
        && d % 8 == 0
        && q.elem == ElemType::F32
        && out.elem == ElemType::F32
        && scratch.elem == ElemType::F32
        && k.elem == v.elem
        && q.len >= t * nh * d
        && out.len >= t * nh * d
        && k.len >= slots * nkv * d
        && v.len >= slots * nkv * d
        && scratch.len >= t * nh * span
        && (ring_ok || t == 1 && span <= slots)
        && (k.elem == ElemType::F32 || d % 2 == 0);
    if !ok {
        return Err(shape_err(
            "attention",
            format!(
                "heads {nh}/{nkv}x{d}, rows {t} at {pos0}, slots {slots}, q[{}] k[{}] v[{}] scratch[{}] out[{}]",
                q.len, k.len, v.len, scratch.len, out.len
            ),
        ));
    }
    let split = (t == 1).then(|| split_keys(span)).flatten();
    let need = split.map_or(0, |(_, parts)| nh * parts * (d + 2));
    let (entry, (part, parts)) = match split {
        Some(s) if scratch.len >= need => ("attend_part", s),
        _ => ("attend", (0, 0)),
    };
    let pipeline = enc.ctx().pipeline("attention", &SHADER, entry, &[]);
    let params = [
        nh as u32,
        nkv as u32,
        d as u32,
        slots as u32,
        pos0 as u32,
        t as u32,
        span as u32,
        (k.elem == ElemType::F16) as u32,
        a.scale.to_bits(),
        a.softcap.unwrap_or(0.0).to_bits(),
        a.window.unwrap_or(0) as u32,
        part as u32,
        parts as u32,
        q_rope.is_some() as u32,
        q_mode,
        q_eps.to_bits(),
    ];
    let (qnw, qfreq) = rope_buffers(enc, q_rope);
    // the split pass writes only the scratch
    let out_binding = (parts == 0).then_some((5, &out.buf));
    let bufs = [(1, &q.buf), (2, &k.buf), (3, &v.buf), (4, &scratch.buf)]
        .into_iter()
        .chain(out_binding)
        .chain([(6, &qnw), (7, &qfreq)]);
    let groups = if parts > 0 { nh * parts } else { t * nh };
    enc.dispatch_at(pipeline, &params, bufs, groups as u32);
    if parts > 0 {
        let pipeline = enc
            .ctx()
            .pipeline("attention_merge", &MERGE, "attend_merge", &[]);
        let params = [nh as u32, d as u32, parts as u32];
        enc.dispatch(pipeline, &params, &[&scratch.buf, &out.buf], nh as u32);
    }
    Ok(())
}

/// How a one-row attention over `n` keys splits into parts: (keys per part, parts), None when
/// one workgroup per head is enough. Parts of 64 keys up to 256 parts, longer ones beyond (at
/// most 1024 keys each; longer spans take the single pass).
fn split_keys(n: usize) -> Option<(usize, usize)> {
    const PART: usize = 64;
    if n <= PART {
        return None;
    }
    let parts = n.div_ceil(PART).min(256);
    let part = n.div_ceil(parts);
    (part <= 1024).then_some((part, parts))
}

/// The assembled sources (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![
        super::AssembledShader::new("attention", SHADER.as_str()),
        super::AssembledShader::new("attention_merge", MERGE.as_str()),
        super::AssembledShader::new("kv_store", STORE.as_str()),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;
    use crate::kv_cache::{KvRows, KvSlots};
    use half::f16;

    /// Fills GPU caches through `store_kv` (one chunk per call, so no slot is written twice in
    /// one dispatch) and compares one query against the CPU attention.
    fn check(a: AttnParams, pos: usize, slots: usize, elem: ElemType) {
        let Some(ctx) = ctx() else { return };
        let kv_dim = a.n_kv_heads * a.head_dim;
        let total = pos + 1;
        // values exactly representable in f16 so both caches hold the same numbers
        let rnd = |n, s| -> Vec<f32> {
            random(n, s)
                .iter()
                .map(|&v| f16::from_f32(v).to_f32())
                .collect()
        };
        let (k, v) = (rnd(total * kv_dim, 1), rnd(total * kv_dim, 2));
        let q = random(a.n_heads * a.head_dim, 3);

        let kc = GpuBuffer::zeros(ctx, slots * kv_dim, elem);
        let vc = GpuBuffer::zeros(ctx, slots * kv_dim, elem);
        let qb = GpuBuffer::from_f32(ctx, &q);
        let scratch = GpuBuffer::zeros(ctx, scratch_len(&a, pos, 1), ElemType::F32);
        let out = GpuBuffer::zeros(ctx, a.n_heads * a.head_dim, ElemType::F32);
        let mut p0 = 0;
        while p0 < total {
            let t = slots.min(total - p0);
            let (ks, vs) = (
                GpuBuffer::from_f32(ctx, &k[p0 * kv_dim..(p0 + t) * kv_dim]),
                GpuBuffer::from_f32(ctx, &v[p0 * kv_dim..(p0 + t) * kv_dim]),
            );
            let mut enc = Encoder::new(ctx);
            store_kv(&mut enc, &ks, t, kv_dim, p0, &kc, slots).unwrap();
            store_kv(&mut enc, &vs, t, kv_dim, p0, &vc, slots).unwrap();
            enc.submit().unwrap();
            p0 += t;
        }
        let mut enc = Encoder::new(ctx);
        attention(
            &mut enc, &qb, 1, pos, &kc, &vc, slots, &a, &scratch, &out, None,
        )
        .unwrap();
        enc.submit().unwrap();
        let got = ctx.read_f32(&out).unwrap();

        // CPU: the same ring filled on the host
        let mut kr = vec![0f32; slots * kv_dim];
        let mut vr = vec![0f32; slots * kv_dim];
        for p in 0..total {
            let s = p % slots;
            kr[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&k[p * kv_dim..(p + 1) * kv_dim]);
            vr[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&v[p * kv_dim..(p + 1) * kv_dim]);
        }
        let mut want = vec![0f32; a.n_heads * a.head_dim];
        let mut scr = vec![0f32; cpu::attention::scratch_len(&a, pos, 1)];
        let kv = KvSlots {
            rows: KvRows::F32 { k: &kr, v: &vr },
            slots,
        };
        cpu::attention::attention(&q, 1, pos, kv, &a, &mut want, &mut scr);
        let err = max_abs_diff(&got, &want);
        assert!(err < 1e-5, "{a:?} pos {pos} slots {slots} {elem:?}: {err}");
    }

    #[test]
    fn gpu_attention_matches_cpu() {
        let base = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            window: None,
            scale: 0.125,
            softcap: None,
        };
        for elem in [ElemType::F16, ElemType::F32] {
            check(base, 0, 1, elem);
            check(base, 300, 301, elem);
            // sliding ring of 24 slots, window 16, several wraps
            check(
                AttnParams {
                    window: Some(16),
                    ..base
                },
                77,
                24,
                elem,
            );
            // long spans split over many parts (and a window over a ring)
            check(
                AttnParams {
                    head_dim: 256,
                    ..base
                },
                1500,
                1501,
                elem,
            );
            check(
                AttnParams {
                    window: Some(512),
                    softcap: Some(30.0),
                    ..base
                },
                900,
                512,
                elem,
            );
            // MQA, softcap, head_dim 256
            check(
                AttnParams {
                    n_heads: 3,
                    n_kv_heads: 1,
                    head_dim: 256,
                    softcap: Some(50.0),
                    scale: 1.0 / 16.0,
                    window: None,
                },
                40,
                41,
                elem,
            );
        }
    }

    /// q/k norm + RoPE fused into the K store and the query load equal the separate
    /// `rmsnorm_rope` dispatches (prefill rows, a decode row over a split span, both weight modes).
    #[test]
    fn gpu_fused_norm_rope_matches_separate_ops() {
        use super::super::norm::NormWeight;
        use super::super::rope::rmsnorm_rope;
        let Some(ctx) = ctx() else { return };
        let a = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            window: None,
            scale: 0.125,
            softcap: None,
        };
        let (d, kv_dim, qd) = (64, 2 * 64, 4 * 64);
        let slots = 256;
        let inv: Vec<f32> = (0..d / 2)
            .map(|j| {
                if j == 5 {
                    0.0
                } else {
                    10000f32.powf(-(2.0 * j as f32) / d as f32)
                }
            })
            .collect();
        let freq = GpuBuffer::from_f32(ctx, &inv);
        let (qw, kw) = (
            GpuBuffer::from_f32(ctx, &random(d, 61)),
            GpuBuffer::from_f32(ctx, &random(d, 62)),
        );
        for (elem, plus_one) in [(ElemType::F32, false), (ElemType::F16, true)] {
            let nw = |w| NormWeight {
                w: Some(w),
                eps: 1e-6,
                plus_one,
            };
            let rope = |w| NormRope {
                norm: nw(w),
                inv_freq: &freq,
            };
            // two caches filled in chunks: fused store vs normed-then-plain store
            let caches = || {
                (
                    GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                    GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                )
            };
            let ((kf, vf), (ks, vs)) = (caches(), caches());
            let mut p0 = 0;
            for (i, t) in [7usize, 100, 1, 33].into_iter().enumerate() {
                let (k, v) = (
                    random(t * kv_dim, 70 + i as u32),
                    random(t * kv_dim, 80 + i as u32),
                );
                let (kb, vb, kn) = (
                    GpuBuffer::from_f32(ctx, &k),
                    GpuBuffer::from_f32(ctx, &v),
                    GpuBuffer::from_f32(ctx, &k),
                );
                let mut enc = Encoder::new(ctx);
                store_kv_pair(
                    &mut enc,
                    (&kb, &vb),
                    t,
                    (kv_dim, d),
                    p0,
                    (&kf, &vf),
                    slots,
                    Some(1e-6),
                    Some(rope(&kw)),
                )
                .unwrap();
                rmsnorm_rope(&mut enc, &kn, t, kv_dim, 2, d, p0, &freq, nw(&kw)).unwrap();
                store_kv_pair(
                    &mut enc,
                    (&kn, &vb),
                    t,
                    (kv_dim, d),
                    p0,
                    (&ks, &vs),
                    slots,
                    Some(1e-6),
                    None,
                )
                .unwrap();
                enc.submit().unwrap();
                p0 += t;
            }
            let err = max_abs_diff(&ctx.read_f32(&kf).unwrap(), &ctx.read_f32(&ks).unwrap());
            assert!(err < 2e-3, "{elem:?} k store: {err}");
            // queries: prefill rows (one workgroup per row and head) and one decode row whose
            // span splits into parts
            for (t, pos) in [(3usize, p0 - 3), (1, p0 - 1)] {
                let q = random(t * qd, 90 + t as u32);
                let (qf, qn) = (GpuBuffer::from_f32(ctx, &q), GpuBuffer::from_f32(ctx, &q));
                let scratch = GpuBuffer::zeros(ctx, scratch_len(&a, pos, t), ElemType::F32);
                let (of, os) = (
                    GpuBuffer::zeros(ctx, t * qd, ElemType::F32),
                    GpuBuffer::zeros(ctx, t * qd, ElemType::F32),
                );
                let mut enc = Encoder::new(ctx);
                attention(
                    &mut enc,
                    &qf,
                    t,
                    pos,
                    &ks,
                    &vs,
                    slots,
                    &a,
                    &scratch,
                    &of,
                    Some(rope(&qw)),
                )
                .unwrap();
                rmsnorm_rope(&mut enc, &qn, t, qd, 4, d, pos, &freq, nw(&qw)).unwrap();
                attention(
                    &mut enc, &qn, t, pos, &ks, &vs, slots, &a, &scratch, &os, None,
                )
                .unwrap();
                enc.submit().unwrap();
                let err = max_abs_diff(&ctx.read_f32(&of).unwrap(), &ctx.read_f32(&os).unwrap());
                assert!(err < 1e-5, "{elem:?} t {t}: attention {err}");
            }
        }
    }

    #[test]
    fn gpu_store_kv_pair_matches_store_kv() {
        let Some(ctx) = ctx() else { return };
        let (heads, hd, t, slots, pos0) = (2, 64, 3, 5, 4);
        let kv_dim = heads * hd;
        let (k, v) = (random(t * kv_dim, 41), random(t * kv_dim, 42));
        for elem in [ElemType::F16, ElemType::F32] {
            for eps in [None, Some(1e-6)] {
                let (kb, vb) = (GpuBuffer::from_f32(ctx, &k), GpuBuffer::from_f32(ctx, &v));
                let kc = GpuBuffer::zeros(ctx, slots * kv_dim, elem);
                let vc = GpuBuffer::zeros(ctx, slots * kv_dim, elem);
                let (kw, vw) = (
                    GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                    GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                );
                let mut enc = Encoder::new(ctx);
                store_kv_pair(
                    &mut enc,
                    (&kb, &vb),
                    t,
                    (kv_dim, hd),
                    pos0,
                    (&kc, &vc),
                    slots,
                    eps,
                    None,
                )
                .unwrap();
                // reference: normalize on the CPU, then the plain store
                let mut vn = v.clone();
                if let Some(e) = eps {
                    cpu::rmsnorm(&mut vn, hd, None, e, false);
                }
                let vnb = GpuBuffer::from_f32(ctx, &vn);
                store_kv(&mut enc, &kb, t, kv_dim, pos0, &kw, slots).unwrap();
                store_kv(&mut enc, &vnb, t, kv_dim, pos0, &vw, slots).unwrap();
                enc.submit().unwrap();
                let got_k = ctx.read_f32(&kc).unwrap();
                assert_eq!(got_k, ctx.read_f32(&kw).unwrap(), "{elem:?} k");
                let err = max_abs_diff(&ctx.read_f32(&vc).unwrap(), &ctx.read_f32(&vw).unwrap());
                assert!(err < 2e-3, "{elem:?} {eps:?} v: {err}");
            }
        }
    }
}
