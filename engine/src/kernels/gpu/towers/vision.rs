//! GPU ops of the Gemma 4 vision tower (ViT) that the text stack has no use for: the learned
//! 2-D position embeddings, the q/k/v head norms with the axial RoPE, bidirectional attention
//! over the image's real patches, the 3x3 average pooling with its scaling and standardisation,
//! and the clipped linears (the shared tiled GEMM with its clamps). The norms between layers and
//! the activation use the shared ops one level up.

pub use crate::kernels::gpu::gemm::Clip;
use crate::kernels::gpu::{
    Encoder, GpuBuffer, GpuError, GpuWeight, buffer::ElemType, elementwise, gemm, matmul, shape_err,
};
use std::collections::HashMap;
use std::sync::Mutex;

const PATCHES: &str = include_str!("vision_patches.wgsl");
const POOL: &str = include_str!("vision_pool.wgsl");
const ATTENTION: &str = include_str!("vision_attention.wgsl");

/// Queries per attention workgroup: 128 up to [`ATTN_WIDE_TOKENS`] tokens, else 64 (H100,
/// E2B vision, 280-token image: 91 ms per image with 128, 104 with 64; 1120 tokens: 720 vs 694).
const ATTN_QUERIES: [usize; 2] = [128, 64];
const ATTN_WIDE_TOKENS: usize = 4096;
/// Workgroup memory of one attention workgroup: the 16 KB every adapter offers.
const ATTN_SMEM_BYTES: usize = 16384;

fn check_f32(op: &'static str, need: usize, b: &GpuBuffer) -> Result<(), GpuError> {
    if b.elem != ElemType::F32 || b.len < need {
        return Err(shape_err(
            op,
            format!("buffer of {} {:?} for {need} f32", b.len, b.elem),
        ));
    }
    Ok(())
}

fn groups(threads: usize) -> u32 {
    threads.div_ceil(256) as u32
}

/// Records `x[t] += table[px_t] + table[size + py_t]` for `n` patches of `dim`: `table` holds
/// `2 * size` rows of `dim` f32 (the x table, then the y table), `pos` holds `(px, py)` of
/// every patch as f32 (exact below 2^24).
pub fn add_position_embeddings(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    n: usize,
    dim: usize,
    table: &GpuBuffer,
    size: usize,
    pos: &GpuBuffer,
) -> Result<(), GpuError> {
    let op = "add_position_embeddings";
    check_f32(op, n * dim, x)?;
    check_f32(op, 2 * size * dim, table)?;
    check_f32(op, 2 * n, pos)?;
    if n == 0 || dim == 0 {
        return Ok(());
    }
    let pipeline = enc
        .ctx()
        .pipeline("vision_patches", PATCHES, "add_position", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, dim as u32, size as u32, 0, 0],
        &[&x.buf, &table.buf, &pos.buf],
        groups(n * dim),
    );
    Ok(())
}

/// Records the RMSNorm of every head row of `x [n, heads, head_dim]` in place (times `weight`,
/// `head_dim` f32, when given), each followed by the 2-D axial RoPE when `rope` is given: dims
/// `0..head_dim/2` turn by the patch's x angles, the rest by its y angles, each half
/// rotate-half style; `rope` holds cos_x, sin_x, cos_y, sin_y, each `[n, head_dim / 4]` (angles
/// computed once per image). The tower's q/k norms with their RoPE, or the weightless v norm,
/// in one dispatch each.
#[allow(clippy::too_many_arguments)]
pub fn head_norm_rope(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    n: usize,
    heads: usize,
    head_dim: usize,
    weight: Option<&GpuBuffer>,
    rope: Option<&GpuBuffer>,
    eps: f32,
) -> Result<(), GpuError> {
    let op = "head_norm_rope";
    if head_dim == 0 || !head_dim.is_multiple_of(4) {
        return Err(shape_err(op, format!("head_dim {head_dim} % 4 != 0")));
    }
    let quarter = head_dim / 4;
    check_f32(op, n * heads * head_dim, x)?;
    if let Some(w) = weight {
        check_f32(op, head_dim, w)?;
    }
    if let Some(t) = rope {
        check_f32(op, 4 * n * quarter, t)?;
    }
    if n == 0 || heads == 0 {
        return Ok(());
    }
    let dummy = &enc.ctx().dummy;
    let flags = weight.is_some() as u32 | (rope.is_some() as u32) << 1;
    let pipeline = enc
        .ctx()
        .pipeline("vision_patches", PATCHES, "head_norm_rope", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, heads as u32, quarter as u32, eps.to_bits(), flags],
        &[
            &x.buf,
            rope.map_or(dummy, |b| &b.buf),
            weight.map_or(dummy, |b| &b.buf),
        ],
        groups(n * heads),
    );
    Ok(())
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Tokens (queries = keys).
    pub n: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Multiple of 4, at most 256.
    pub head_dim: usize,
    /// Applied to the scores (1.0 for the vision tower, whose q is normed instead).
    pub scale: f32,
}

/// (head_dim / 4, key tile, queries per workgroup, lanes per query) of one compiled attention
/// variant.
type AttnVariant = (usize, usize, usize, usize);

/// The pipeline-cache keys of the attention variants compiled so far.
static ATTN_KEYS: Mutex<Option<HashMap<AttnVariant, &'static str>>> = Mutex::new(None);

/// A `'static` pipeline-cache key for one variant (leaked once per variant).
fn attn_key(v: AttnVariant) -> &'static str {
    let mut keys = ATTN_KEYS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    keys.get_or_insert_with(HashMap::new)
        .entry(v)
        .or_insert_with(|| {
            let (d4, tk, tq, lanes) = v;
            Box::leak(format!("vision_attention_{d4}_{tk}_{tq}_{lanes}").into_boxed_str())
        })
}

/// Records full (unmasked) attention: `out [n, heads, head_dim] = softmax(scale q kᵀ) v` per
/// head, q head `h` reading kv head `h / (heads / kv_heads)`; softmax in f32.
pub fn bidirectional_attention(
    enc: &mut Encoder<'_>,
    (q, k, v): (&GpuBuffer, &GpuBuffer, &GpuBuffer),
    out: &GpuBuffer,
    s: AttnShape,
) -> Result<(), GpuError> {
    let op = "bidirectional_attention";
    if s.head_dim == 0
        || !s.head_dim.is_multiple_of(4)
        || s.head_dim > 256
        || s.kv_heads == 0
        || !s.heads.is_multiple_of(s.kv_heads)
    {
        return Err(shape_err(op, format!("{s:?}")));
    }
    let (qd, kvd) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    check_f32(op, s.n * qd, q)?;
    check_f32(op, s.n * kvd, k)?;
    check_f32(op, s.n * kvd, v)?;
    check_f32(op, s.n * qd, out)?;
    if out.buf == q.buf || out.buf == k.buf || out.buf == v.buf {
        return Err(shape_err(op, "out must differ from q, k and v"));
    }
    if s.n == 0 || s.heads == 0 {
        return Ok(());
    }
    let tq = ATTN_QUERIES[(s.n > ATTN_WIDE_TOKENS) as usize];
    record_attention(enc, (q, k, v), out, s, tq);
    Ok(())
}

/// The compiled variant for heads of `head_dim` and `tq` queries per workgroup.
fn attn_variant(head_dim: usize, tq: usize) -> AttnVariant {
    let d4 = head_dim / 4;
    // two lanes per query where the head splits into two halves of vec4s
    let lanes = if d4.is_multiple_of(2) { 2 } else { 1 };
    // the largest key tile (a multiple of 4: keys are scored 4 at a time) whose K and V tiles
    // (16 bytes per vec4) and partial scores fit the workgroup memory
    let per_key = 2 * d4 * 16 + lanes * tq * 4;
    let tk = (ATTN_SMEM_BYTES / per_key).clamp(4, 64) / 4 * 4;
    (d4, tk, tq, lanes)
}

/// The attention source of one variant (its sizes as constants before the shader).
fn attn_source((d4, tk, tq, lanes): AttnVariant) -> String {
    format!(
        "const D4: u32 = {d4}u;\nconst TK: u32 = {tk}u;\nconst TQ: u32 = {tq}u;\n\
         const LANES: u32 = {lanes}u;\n{ATTENTION}"
    )
}

/// The assembled sources: the attention variants of a few head widths (odd and even vec4
/// counts, the real 64 and the widest 256) and both query tiles (see
/// `crate::kernels::gpu::assembled_shaders`).
pub(in crate::kernels::gpu) fn shaders() -> Vec<crate::kernels::gpu::AssembledShader> {
    use crate::kernels::gpu::AssembledShader;
    let mut all = vec![
        AssembledShader::new("vision_patches", PATCHES),
        AssembledShader::new("vision_pool", POOL),
    ];
    for head_dim in [4, 12, 16, 64, 256] {
        for tq in ATTN_QUERIES {
            let v = attn_variant(head_dim, tq);
            all.push(AssembledShader::new(attn_key(v), attn_source(v)));
        }
    }
    all
}

/// [`bidirectional_attention`] (checked) with `tq` queries per workgroup.
fn record_attention(
    enc: &mut Encoder<'_>,
    (q, k, v): (&GpuBuffer, &GpuBuffer, &GpuBuffer),
    out: &GpuBuffer,
    s: AttnShape,
    tq: usize,
) {
    let variant = attn_variant(s.head_dim, tq);
    let key = attn_key(variant);
    let source = attn_source(variant);
    let pipeline = enc.ctx().pipeline(key, &source, "attend", &[]);
    let nqb = s.n.div_ceil(tq);
    enc.dispatch(
        pipeline,
        &[
            s.n as u32,
            s.heads as u32,
            s.kv_heads as u32,
            nqb as u32,
            s.scale.to_bits(),
        ],
        &[&q.buf, &k.buf, &v.buf, &out.buf],
        (nqb * s.heads) as u32,
    );
}

/// The slot lists [`pool_patches`] reads: slot starts `[m + 1]`, then the member patches of
/// each slot in increasing order, all as f32. `slot_of[t]` is patch `t`'s slot (< `m`).
pub fn pool_groups(slot_of: &[usize], m: usize) -> Result<Vec<f32>, GpuError> {
    let mut count = vec![0usize; m + 1];
    for &s in slot_of {
        if s >= m {
            return Err(shape_err("pool_groups", format!("slot {s} of {m}")));
        }
        count[s + 1] += 1;
    }
    for s in 0..m {
        count[s + 1] += count[s];
    }
    let mut members = vec![0f32; slot_of.len()];
    let mut fill = count.clone();
    for (t, &s) in slot_of.iter().enumerate() {
        members[fill[s]] = t as f32;
        fill[s] += 1;
    }
    let mut out: Vec<f32> = count.iter().map(|&c| c as f32).collect();
    out.extend(members);
    Ok(out)
}

/// How [`pool_patches`] pools and scales.
#[derive(Clone, Copy)]
pub struct PoolShape<'b> {
    /// Patches (rows of `x`).
    pub n: usize,
    /// Soft tokens (rows of `out`).
    pub m: usize,
    pub dim: usize,
    /// Each patch is divided by this before the sum (kernel², 9).
    pub divisor: f32,
    /// The sum is then multiplied by this (√hidden).
    pub scale: f32,
    /// `(v - bias) * scale` after that: bias then scale, `2 * dim` f32.
    pub standardize: Option<&'b GpuBuffer>,
}

/// Records the pooling of `x [n, dim]` into `out [m, dim]` by the slot lists `groups` (see
/// [`pool_groups`]), with the scaling and standardisation of [`PoolShape`].
pub fn pool_patches(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    groups_buf: &GpuBuffer,
    out: &GpuBuffer,
    s: PoolShape<'_>,
) -> Result<(), GpuError> {
    let op = "pool_patches";
    check_f32(op, s.n * s.dim, x)?;
    check_f32(op, s.m + 1 + s.n, groups_buf)?;
    check_f32(op, s.m * s.dim, out)?;
    if let Some(b) = s.standardize {
        check_f32(op, 2 * s.dim, b)?;
    }
    if s.m == 0 || s.dim == 0 {
        return Ok(());
    }
    let dummy = &enc.ctx().dummy;
    let std_buf = s.standardize.map_or(dummy, |b| &b.buf);
    let pipeline = enc.ctx().pipeline("vision_pool", POOL, "pool", &[]);
    enc.dispatch(
        pipeline,
        &[
            s.m as u32,
            s.dim as u32,
            s.standardize.is_some() as u32,
            s.divisor.to_bits(),
            s.scale.to_bits(),
        ],
        &[&x.buf, &groups_buf.buf, &out.buf, std_buf],
        groups(s.m * s.dim),
    );
    Ok(())
}

/// `out = clamp(clamp(x, input) · wᵀ, output)`: a clipped linear over an image's patches. The
/// engine's tiled GEMM applies the clamps on its loads and stores; where it does not apply (few
/// tokens, other weights) the input is clamped in a copy in `tmp` (at least `t * k` values;
/// required then) and the output in place.
pub fn clipped_matmul(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
    clip: Clip,
    tmp: Option<&GpuBuffer>,
) -> Result<(), GpuError> {
    let (n, k) = (w.rows, w.cols);
    check_f32("clipped_matmul", t * k, x)?;
    check_f32("clipped_matmul", t * n, out)?;
    if gemm::fits(w, t) {
        return gemm::record_clipped(enc, x, t, w, out, clip);
    }
    let src = match clip.input {
        Some((lo, hi)) => {
            let tmp = tmp.ok_or_else(|| {
                shape_err(
                    "clipped_matmul",
                    "an input clamp off the GEMM needs a tmp buffer",
                )
            })?;
            enc.copy(x, 0, tmp, 0, t * k)?;
            elementwise::clamp(enc, tmp, t * k, lo, hi)?;
            tmp
        }
        None => x,
    };
    matmul::matmul(enc, src, t, w, out)?;
    if let Some((lo, hi)) = clip.output {
        elementwise::clamp(enc, out, t * n, lo, hi)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gpu::test_util::{ctx, max_abs_diff, random};
    use crate::tensor::DType;

    #[test]
    fn gpu_add_position_embeddings_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        let (n, dim, size) = (37, 12, 9);
        let x = random(n * dim, 1);
        let table = random(2 * size * dim, 2);
        let pos: Vec<(usize, usize)> = (0..n).map(|t| (t % size, (t * 5 + 3) % size)).collect();
        let pos_f: Vec<f32> = pos
            .iter()
            .flat_map(|&(a, b)| [a as f32, b as f32])
            .collect();
        let xb = GpuBuffer::from_f32(ctx, &x);
        let (tb, pb) = (
            GpuBuffer::from_f32(ctx, &table),
            GpuBuffer::from_f32(ctx, &pos_f),
        );
        let mut enc = Encoder::new(ctx);
        add_position_embeddings(&mut enc, &xb, n, dim, &tb, size, &pb).unwrap();
        enc.submit().unwrap();
        let mut want = x.clone();
        for (t, &(px, py)) in pos.iter().enumerate() {
            for d in 0..dim {
                want[t * dim + d] += table[px * dim + d];
                want[t * dim + d] += table[(size + py) * dim + d];
            }
        }
        assert_eq!(ctx.read_f32(&xb).unwrap(), want);
        let mut enc = Encoder::new(ctx);
        assert!(add_position_embeddings(&mut enc, &xb, n, dim, &tb, size + 1, &pb).is_err());
    }

    /// Scalar attention in f64 (softmax over all keys).
    fn attention_ref(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Vec<f32> {
        let (n, nh, nkv, hd) = (s.n, s.heads, s.kv_heads, s.head_dim);
        let mut out = vec![0f32; n * nh * hd];
        for t in 0..n {
            for h in 0..nh {
                let kh = h / (nh / nkv);
                let qv = &q[(t * nh + h) * hd..][..hd];
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        let kv = &k[(j * nkv + kh) * hd..][..hd];
                        qv.iter()
                            .zip(kv)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (0..n)
                        .map(|j| e[j] * v[(j * nkv + kh) * hd + d] as f64)
                        .sum();
                    out[(t * nh + h) * hd + d] = (acc / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn gpu_bidirectional_attention_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        // n not a multiple of the query block or of the key tile; grouped kv heads; hd 64
        // (head_dim 12 and 4: one lane per query; 256: the smallest key tile)
        for (n, heads, kv_heads, head_dim, scale) in [
            (70, 2, 1, 16, 1.0f32),
            (33, 2, 2, 64, 0.125),
            (1, 1, 1, 4, 1.0),
            (45, 3, 1, 12, 0.5),
            (9, 1, 1, 256, 0.0625),
        ] {
            let s = AttnShape {
                n,
                heads,
                kv_heads,
                head_dim,
                scale,
            };
            let q: Vec<f32> = random(n * heads * head_dim, 5)
                .iter()
                .map(|v| v * 2.0)
                .collect();
            let k: Vec<f32> = random(n * kv_heads * head_dim, 6)
                .iter()
                .map(|v| v * 2.0)
                .collect();
            let v = random(n * kv_heads * head_dim, 7);
            let (qb, kb, vb) = (
                GpuBuffer::from_f32(ctx, &q),
                GpuBuffer::from_f32(ctx, &k),
                GpuBuffer::from_f32(ctx, &v),
            );
            let want = attention_ref(&q, &k, &v, s);
            let ob = GpuBuffer::zeros(ctx, n * heads * head_dim, ElemType::F32);
            let mut enc = Encoder::new(ctx);
            bidirectional_attention(&mut enc, (&qb, &kb, &vb), &ob, s).unwrap();
            enc.submit().unwrap();
            let err = max_abs_diff(&ctx.read_f32(&ob).unwrap(), &want);
            assert!(err < 2e-5, "{s:?}: {err}");
            // the other workgroup width (for images past ATTN_WIDE_TOKENS)
            let ob = GpuBuffer::zeros(ctx, n * heads * head_dim, ElemType::F32);
            let mut enc = Encoder::new(ctx);
            record_attention(&mut enc, (&qb, &kb, &vb), &ob, s, ATTN_QUERIES[1]);
            enc.submit().unwrap();
            let err = max_abs_diff(&ctx.read_f32(&ob).unwrap(), &want);
            assert!(err < 2e-5, "{s:?} narrow: {err}");
        }
        let b = GpuBuffer::zeros(ctx, 64, ElemType::F32);
        let s = AttnShape {
            n: 4,
            heads: 1,
            kv_heads: 1,
            head_dim: 16,
            scale: 1.0,
        };
        let mut enc = Encoder::new(ctx);
        assert!(bidirectional_attention(&mut enc, (&b, &b, &b), &b, s).is_err());
    }

    #[test]
    fn gpu_pool_patches_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        let (n, dim, m) = (23, 10, 4);
        let slot_of: Vec<usize> = (0..n).map(|t| (t * 7 + t / 5) % m).collect();
        let x = random(n * dim, 8);
        let stdv = random(2 * dim, 9);
        let g = pool_groups(&slot_of, m).unwrap();
        assert!(pool_groups(&slot_of, 2).is_err());
        for standardize in [false, true] {
            let (xb, gb, sb) = (
                GpuBuffer::from_f32(ctx, &x),
                GpuBuffer::from_f32(ctx, &g),
                GpuBuffer::from_f32(ctx, &stdv),
            );
            let ob = GpuBuffer::zeros(ctx, m * dim, ElemType::F32);
            let shape = PoolShape {
                n,
                m,
                dim,
                divisor: 9.0,
                scale: 1.7,
                standardize: standardize.then_some(&sb),
            };
            let mut enc = Encoder::new(ctx);
            pool_patches(&mut enc, &xb, &gb, &ob, shape).unwrap();
            enc.submit().unwrap();
            let mut want = vec![0f32; m * dim];
            for (t, &s) in slot_of.iter().enumerate() {
                for d in 0..dim {
                    want[s * dim + d] += x[t * dim + d] / 9.0;
                }
            }
            for (i, w) in want.iter_mut().enumerate() {
                *w *= 1.7;
                if standardize {
                    *w = (*w - stdv[i % dim]) * stdv[dim + i % dim];
                }
            }
            let err = max_abs_diff(&ctx.read_f32(&ob).unwrap(), &want);
            assert!(err < 1e-6, "standardize {standardize}: {err}");
        }
    }

    #[test]
    fn gpu_clipped_matmul_clamps_input_and_output() {
        let Some(ctx) = ctx() else { return };
        let (n, k) = (40, 64);
        let wv = random(n * k, 12);
        let shape = [n, k];
        let bytes = crate::tensor::encode(DType::Q8, &wv, &shape, 32).unwrap();
        let view = crate::tensor::TensorView::new(DType::Q8, &shape, 32, &bytes).unwrap();
        let deq = view.to_f32_vec();
        let w = GpuWeight::upload(ctx, &view).unwrap();
        let clip = Clip {
            input: Some((-0.5, 0.6)),
            output: Some((-1.0, 0.8)),
        };
        // t = 3 takes the engine's matmul with separate clamps, t = 67 the fused GEMM
        for t in [3, 67] {
            let x = random(t * k, 13);
            let xb = GpuBuffer::from_f32(ctx, &x);
            let ob = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
            let tmp = GpuBuffer::zeros(ctx, t * k, ElemType::F32);
            if t == 3 {
                let mut enc = Encoder::new(ctx);
                let no_tmp = clipped_matmul(&mut enc, &xb, t, &w, &ob, clip, None);
                assert!(no_tmp.is_err(), "the unfused input clamp needs tmp");
            }
            let mut enc = Encoder::new(ctx);
            clipped_matmul(&mut enc, &xb, t, &w, &ob, clip, Some(&tmp)).unwrap();
            enc.submit().unwrap();
            let got = ctx.read_f32(&ob).unwrap();
            let mut clipped = 0;
            for ti in 0..t {
                for ni in 0..n {
                    let s: f64 = (0..k)
                        .map(|ki| x[ti * k + ki].clamp(-0.5, 0.6) as f64 * deq[ni * k + ki] as f64)
                        .sum();
                    let want = s.clamp(-1.0, 0.8);
                    clipped += (want != s) as usize;
                    let e = (got[ti * n + ni] as f64 - want).abs();
                    assert!(e < 1e-4, "t {t} ({ti}, {ni}): {e}");
                }
            }
            assert!(clipped > 0, "t {t}: the output clamp is exercised");
            assert_eq!(ctx.read_f32(&xb).unwrap(), x, "x unchanged");
        }
    }

    #[test]
    fn gpu_head_norm_rope_matches_norm_then_rope() {
        let Some(ctx) = ctx() else { return };
        let (n, heads, hd) = (13, 3, 16);
        let qr = hd / 4;
        let x: Vec<f32> = random(n * heads * hd, 14).iter().map(|v| v * 3.0).collect();
        let w = random(hd, 15);
        let ang = random(2 * n * qr, 16);
        let mut table = Vec::new();
        for half in 0..2 {
            let a = &ang[half * n * qr..(half + 1) * n * qr];
            table.extend(a.iter().map(|v| (v * 3.0).cos()));
            table.extend(a.iter().map(|v| (v * 3.0).sin()));
        }
        let (wb, tb) = (
            GpuBuffer::from_f32(ctx, &w),
            GpuBuffer::from_f32(ctx, &table),
        );
        for (weighted, roped) in [(true, true), (false, false), (true, false)] {
            let xb = GpuBuffer::from_f32(ctx, &x);
            let mut enc = Encoder::new(ctx);
            let (wo, to) = (weighted.then_some(&wb), roped.then_some(&tb));
            head_norm_rope(&mut enc, &xb, n, heads, hd, wo, to, 1e-6).unwrap();
            enc.submit().unwrap();
            let mut want = x.clone();
            crate::kernels::cpu::rmsnorm(&mut want, hd, weighted.then_some(&w[..]), 1e-6, false);
            if roped {
                let nq = n * qr;
                let normed = want.clone();
                for t in 0..n {
                    for h in 0..heads {
                        for half in 0..2 {
                            for i in 0..qr {
                                let c = table[2 * half * nq + t * qr + i];
                                let s = table[(2 * half + 1) * nq + t * qr + i];
                                let b = (t * heads + h) * hd + half * 2 * qr;
                                let (x0, x1) = (normed[b + i], normed[b + i + qr]);
                                want[b + i] = x0 * c - x1 * s;
                                want[b + i + qr] = x1 * c + x0 * s;
                            }
                        }
                    }
                }
            }
            let err = max_abs_diff(&ctx.read_f32(&xb).unwrap(), &want);
            assert!(err < 1e-5, "weight {weighted} rope {roped}: {err}");
        }
    }
}
