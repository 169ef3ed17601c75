//! GPU ops of the Gemma 4 audio tower (USM conformer) that the text stack has no use for: the
//! sub-sampling convolutions with their channel LayerNorm, the conformer's clipped RMSNorms,
//! clamps and SiLU, the light convolution (GLU + causal depthwise conv), the chunked local
//! attention with its relative-position scores and soft-cap, and the row ops of the output
//! (bias, gather of the valid frames). Matmuls, plain norms and adds come from the text ops.
//!
//! Frame validity travels as an f32 buffer of 1.0 / 0.0 per frame ([`frame_flags`]); ops that
//! need it read entry `frame * flag_stride`, so the sub-sampled masks (every 2nd, 4th frame) are
//! read from the clip's own mask without building new buffers.

use super::super::{Encoder, GpuBuffer, GpuContext, GpuError, buffer::ElemType, shape_err};

static SUBSAMPLE: &str = include_str!("audio_subsample.wgsl");
static CONFORMER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    super::super::with_block_reduce(include_str!("audio_conformer.wgsl"))
});
static ATTENTION: &str = include_str!("audio_attention.wgsl");

/// Largest head dimension and past horizon `local_attention` holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = 512;
pub const MAX_PAST: usize = 256;

/// Stand-in for an infinite bound: clamping to it leaves every finite value alone, and shaders
/// never see an infinity (some compilers assume there are none).
fn bound(v: f32) -> f32 {
    v.clamp(-f32::MAX, f32::MAX)
}

fn check(op: &'static str, bufs: &[(&GpuBuffer, usize)]) -> Result<(), GpuError> {
    for (b, need) in bufs {
        if b.elem != ElemType::F32 || b.len < *need {
            return Err(shape_err(
                op,
                format!("buffer of {} values, needs {need}", b.len),
            ));
        }
    }
    Ok(())
}

fn groups(n: usize) -> u32 {
    n.div_ceil(256) as u32
}

/// A buffer of 1.0 (valid) / 0.0 (invalid) per frame, for the ops' `flags`.
pub fn frame_flags(ctx: &GpuContext, valid: &[bool]) -> GpuBuffer {
    let v: Vec<f32> = valid.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    GpuBuffer::from_f32(ctx, &v)
}

/// Shape of one sub-sampling convolution.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dShape {
    pub frames: usize,
    pub freqs: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    /// Entry `frame * flag_stride` of `flags` tells whether input frame `frame` is valid.
    pub flag_stride: usize,
}

impl Conv2dShape {
    /// Output `(frames, freqs)`: both halved, rounded up.
    pub fn out_dims(&self) -> (usize, usize) {
        (self.frames.div_ceil(2), self.freqs.div_ceil(2))
    }
}

/// PyTorch's conv weight `[out_ch, in_ch, 3, 3]` in the tap-major layout [`conv2d_s2`] reads,
/// `[in_ch, 3, 3][out_ch]`.
pub fn conv_weight_tap_major(w: &[f32], out_ch: usize) -> Vec<f32> {
    let taps = w.len() / out_ch.max(1);
    let mut t = vec![0f32; w.len()];
    for (i, &v) in w.iter().enumerate() {
        t[(i % taps) * out_ch + i / taps] = v;
    }
    t
}

/// `y [⌈T/2⌉, ⌈F/2⌉, out_ch] = conv3x3_stride2_pad1(x [T, F, in_ch])` with f32 weights `w` from
/// [`conv_weight_tap_major`], invalid input frames read as zeros.
pub fn conv2d_s2(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    s: Conv2dShape,
    flags: &GpuBuffer,
    w: &GpuBuffer,
    y: &GpuBuffer,
) -> Result<(), GpuError> {
    let (to, fo) = s.out_dims();
    let n = to * fo * s.out_ch;
    let last_flag = s.frames.saturating_sub(1) * s.flag_stride + 1;
    check(
        "conv2d_s2",
        &[
            (x, s.frames * s.freqs * s.in_ch),
            (flags, last_flag),
            (w, s.out_ch * s.in_ch * 9),
            (y, n),
        ],
    )?;
    if n == 0 || s.in_ch == 0 {
        return Err(shape_err("conv2d_s2", format!("empty shape {s:?}")));
    }
    let pipeline = enc
        .ctx()
        .pipeline("audio_subsample", SUBSAMPLE, "conv2d_s2", &[]);
    let params = [
        s.frames as u32,
        s.freqs as u32,
        s.in_ch as u32,
        s.out_ch as u32,
        to as u32,
        fo as u32,
        s.flag_stride as u32,
        0,
    ];
    enc.dispatch(
        pipeline,
        &params,
        &[&y.buf, &w.buf, &x.buf, &flags.buf],
        groups(n),
    );
    Ok(())
}

/// In place on `pixels` rows of `ch` channels: LayerNorm (weight `w`, no bias) then ReLU.
pub fn layer_norm_relu(
    enc: &mut Encoder<'_>,
    y: &GpuBuffer,
    pixels: usize,
    ch: usize,
    w: &GpuBuffer,
    eps: f32,
) -> Result<(), GpuError> {
    check("layer_norm_relu", &[(y, pixels * ch), (w, ch)])?;
    if pixels == 0 || ch == 0 {
        return Ok(());
    }
    let pipeline = enc
        .ctx()
        .pipeline("audio_subsample", SUBSAMPLE, "layer_norm_relu", &[]);
    let params = [0, 0, 0, ch as u32, pixels as u32, 0, 0, eps.to_bits()];
    enc.dispatch(pipeline, &params, &[&y.buf, &w.buf], groups(pixels));
    Ok(())
}

/// The conformer's norm: clamp to `±clip`, RMSNorm with weight `w`, optionally SiLU.
#[derive(Clone, Copy)]
pub struct ClipNorm<'w> {
    pub w: &'w GpuBuffer,
    pub eps: f32,
    /// `f32::INFINITY` for a plain RMSNorm.
    pub clip: f32,
    pub silu: bool,
}

/// Where [`clip_rmsnorm_to`] puts its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormInto {
    /// `dst = norm(src)`.
    Store,
    /// `dst += s * norm(src)` (the residual adds, the feed-forwards' residual weight).
    Add(f32),
}

fn record_norm(
    enc: &mut Encoder<'_>,
    entry: &'static str,
    bufs: &[&GpuBuffer],
    rows: usize,
    dim: usize,
    nw: ClipNorm<'_>,
    into: NormInto,
) -> Result<(), GpuError> {
    let mut need: Vec<(&GpuBuffer, usize)> = bufs.iter().map(|b| (*b, rows * dim)).collect();
    need.push((nw.w, dim));
    check(entry, &need)?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let (mode, scale) = match into {
        NormInto::Store => (0u32, 1f32),
        NormInto::Add(s) => (1, s),
    };
    let pipeline = enc
        .ctx()
        .pipeline("audio_conformer", &CONFORMER, entry, &[]);
    let params = [
        rows as u32,
        dim as u32,
        nw.eps.to_bits(),
        bound(nw.clip).to_bits(),
        0,
        0,
        mode,
        scale.to_bits(),
        nw.silu as u32,
        0,
    ];
    let mut wgpu_bufs = vec![&bufs[0].buf, &nw.w.buf];
    wgpu_bufs.extend(bufs[1..].iter().map(|b| &b.buf));
    enc.dispatch(pipeline, &params, &wgpu_bufs, rows as u32);
    Ok(())
}

/// In place on `rows` rows of `dim` of `x`: `x = [silu](rmsnorm(clamp(x, ±clip)) · w)`.
pub fn clip_rmsnorm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    rows: usize,
    dim: usize,
    nw: ClipNorm<'_>,
) -> Result<(), GpuError> {
    record_norm(enc, "clip_rmsnorm", &[x], rows, dim, nw, NormInto::Store)
}

/// `dst (=|+= s·) [silu](rmsnorm(clamp(src, ±clip)) · w)` over `rows` rows of `dim`.
pub fn clip_rmsnorm_to(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    rows: usize,
    dim: usize,
    nw: ClipNorm<'_>,
    into: NormInto,
) -> Result<(), GpuError> {
    if src.buf == dst.buf {
        return Err(shape_err("clip_rmsnorm_to", "src and dst must differ"));
    }
    record_norm(enc, "clip_rmsnorm_to", &[dst, src], rows, dim, nw, into)
}

#[allow(clippy::too_many_arguments)]
fn record_simple(
    enc: &mut Encoder<'_>,
    entry: &'static str,
    bufs: &[&GpuBuffer],
    n: usize,
    dim: usize,
    lo: f32,
    hi: f32,
    k: usize,
) {
    let pipeline = enc
        .ctx()
        .pipeline("audio_conformer", &CONFORMER, entry, &[]);
    let params = [
        n as u32,
        dim as u32,
        0,
        0,
        bound(lo).to_bits(),
        bound(hi).to_bits(),
        0,
        0,
        0,
        k as u32,
    ];
    let wgpu_bufs: Vec<&wgpu::Buffer> = bufs.iter().map(|b| &b.buf).collect();
    enc.dispatch(pipeline, &params, &wgpu_bufs, groups(n));
}

fn check_bounds(op: &'static str, lo: f32, hi: f32) -> Result<(), GpuError> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(shape_err(op, format!("bounds {lo}..{hi}")));
    }
    Ok(())
}

/// `dst[i] = clamp(src[i], lo, hi)` for `i < n` (infinite bounds leave that side open).
pub fn clamp_to(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    n: usize,
    lo: f32,
    hi: f32,
) -> Result<(), GpuError> {
    check("clamp_to", &[(src, n), (dst, n)])?;
    check_bounds("clamp_to", lo, hi)?;
    if src.buf == dst.buf {
        return Err(shape_err("clamp_to", "src and dst must differ"));
    }
    if n > 0 {
        record_simple(enc, "clamp_to", &[dst, src], n, 1, lo, hi, 0);
    }
    Ok(())
}

/// `x[i] = silu(clamp(x[i], lo, hi))` for `i < n`.
pub fn clamp_silu(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    n: usize,
    lo: f32,
    hi: f32,
) -> Result<(), GpuError> {
    check("clamp_silu", &[(x, n)])?;
    check_bounds("clamp_silu", lo, hi)?;
    if n > 0 {
        record_simple(enc, "clamp_silu", &[x], n, 1, lo, hi, 0);
    }
    Ok(())
}

/// The light convolution's middle: `wide [t, 2·ch]` → GLU → causal depthwise conv with
/// `taps [ch, kernel]` → `y [t, ch]`.
pub fn glu_dwconv(
    enc: &mut Encoder<'_>,
    wide: &GpuBuffer,
    t: usize,
    ch: usize,
    taps: &GpuBuffer,
    kernel: usize,
    y: &GpuBuffer,
) -> Result<(), GpuError> {
    check(
        "glu_dwconv",
        &[(wide, t * 2 * ch), (taps, ch * kernel), (y, t * ch)],
    )?;
    if kernel == 0 {
        return Err(shape_err("glu_dwconv", "kernel width 0"));
    }
    if t * ch > 0 {
        let n = t * ch;
        record_simple(enc, "glu_dwconv", &[y, taps, wide], n, ch, 0.0, 0.0, kernel);
    }
    Ok(())
}

/// `x[r, c] += bias[c]` over `rows` rows of `n`.
pub fn bias_rows(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    rows: usize,
    n: usize,
    bias: &GpuBuffer,
) -> Result<(), GpuError> {
    check("bias_rows", &[(x, rows * n), (bias, n)])?;
    if rows * n > 0 {
        record_simple(enc, "bias_rows", &[x, bias], rows * n, n, 0.0, 0.0, 0);
    }
    Ok(())
}

/// A buffer of row indices for [`gather_rows`] (held as exact f32 values, up to 2^24 rows).
pub fn row_indices(ctx: &GpuContext, rows: &[usize]) -> Result<GpuBuffer, GpuError> {
    if rows.iter().any(|&r| r >= 1 << 24) {
        return Err(shape_err("row_indices", "row index past 2^24"));
    }
    let v: Vec<f32> = rows.iter().map(|&r| r as f32).collect();
    Ok(GpuBuffer::from_f32(ctx, &v))
}

/// `dst[i, :] = src[idx[i], :]` for `i < n` rows of `width` (`idx` from [`row_indices`]; the
/// caller keeps each index below `src`'s row count).
pub fn gather_rows(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    idx: &GpuBuffer,
    n: usize,
    width: usize,
    dst: &GpuBuffer,
) -> Result<(), GpuError> {
    check("gather_rows", &[(idx, n), (dst, n * width), (src, width)])?;
    if n * width > 0 {
        record_simple(
            enc,
            "gather_rows",
            &[dst, src, idx],
            n * width,
            width,
            0.0,
            0.0,
            0,
        );
    }
    Ok(())
}

/// Shape and constants of [`local_attention`] (`AudioConfig` in the encoders crate).
#[derive(Clone, Copy, Debug)]
pub struct LocalAttn {
    pub frames: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Keys at distance `0..past` are visible (`attention_context_left − 1`).
    pub past: usize,
    /// Rows of the relative key table.
    pub positions: usize,
    pub chunk: usize,
    /// Keys of the reference's block window (chunk + past + future).
    pub context: usize,
    pub logit_cap: f32,
    pub invalid_logit: f32,
    /// Scales every key before the content score.
    pub k_scale: f32,
}

/// The buffers of [`local_attention`]: `q`, `k`, `v` and `out` are `[frames, heads·head_dim]`,
/// `rel_k` the relative key table `[positions, heads·head_dim]` (row r: distance `past − r`),
/// `q_factors` one scale per head dimension, `flags` the frame validity.
pub struct AttnBuffers<'b> {
    pub q: &'b GpuBuffer,
    pub k: &'b GpuBuffer,
    pub v: &'b GpuBuffer,
    pub rel_k: &'b GpuBuffer,
    pub q_factors: &'b GpuBuffer,
    pub flags: &'b GpuBuffer,
    pub flag_stride: usize,
    pub out: &'b GpuBuffer,
}

/// The conformer's chunked local self-attention (see `audio_attention.wgsl`).
pub fn local_attention(
    enc: &mut Encoder<'_>,
    a: &LocalAttn,
    b: &AttnBuffers<'_>,
) -> Result<(), GpuError> {
    let hid = a.heads * a.head_dim;
    let act = a.frames * hid;
    let last_flag = a.frames.saturating_sub(1) * b.flag_stride + 1;
    check(
        "local_attention",
        &[
            (b.q, act),
            (b.k, act),
            (b.v, act),
            (b.out, act),
            (b.rel_k, a.positions * hid),
            (b.q_factors, a.head_dim),
            (b.flags, last_flag),
        ],
    )?;
    let ok = a.head_dim > 0
        && a.head_dim <= MAX_HEAD_DIM
        && (1..=MAX_PAST).contains(&a.past)
        && a.chunk > 0
        && a.context > 0
        && a.positions <= a.past + 1
        && a.logit_cap > 0.0;
    if !ok {
        return Err(shape_err("local_attention", format!("unsupported {a:?}")));
    }
    if act == 0 {
        return Ok(());
    }
    let pipeline = enc
        .ctx()
        .pipeline("audio_attention", ATTENTION, "local_attention", &[]);
    let params = [
        a.frames as u32,
        hid as u32,
        a.heads as u32,
        a.head_dim as u32,
        a.past as u32,
        a.positions as u32,
        a.chunk as u32,
        a.context as u32,
        a.logit_cap.to_bits(),
        bound(a.invalid_logit).to_bits(),
        a.k_scale.to_bits(),
        b.flag_stride as u32,
    ];
    let bufs = [
        &b.out.buf,
        &b.q.buf,
        &b.k.buf,
        &b.v.buf,
        &b.rel_k.buf,
        &b.q_factors.buf,
        &b.flags.buf,
    ];
    enc.dispatch(pipeline, &params, &bufs, (a.frames * a.heads) as u32);
    Ok(())
}

/// The assembled sources (see `crate::kernels::gpu::assembled_shaders`).
pub(in crate::kernels::gpu) fn shaders() -> Vec<crate::kernels::gpu::AssembledShader> {
    use crate::kernels::gpu::AssembledShader;
    vec![
        AssembledShader::new("audio_subsample", SUBSAMPLE),
        AssembledShader::new("audio_conformer", CONFORMER.as_str()),
        AssembledShader::new("audio_attention", ATTENTION),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;

    fn run(ctx: &GpuContext, f: impl FnOnce(&mut Encoder<'_>)) {
        let mut enc = Encoder::new(ctx);
        f(&mut enc);
        enc.submit().unwrap();
    }

    fn silu(v: f32) -> f32 {
        v / (1.0 + (-v).exp())
    }

    /// Direct 3x3 / stride 2 / pad 1 convolution over `[t, f, c]` with zeroed invalid frames.
    fn conv_ref(x: &[f32], s: Conv2dShape, valid: &[bool], w: &[f32]) -> Vec<f32> {
        let (to, fo) = s.out_dims();
        let mut y = vec![0f32; to * fo * s.out_ch];
        for (i, out) in y.iter_mut().enumerate() {
            let (oc, f, t) = (i % s.out_ch, i / s.out_ch % fo, i / s.out_ch / fo);
            let mut acc = 0f64;
            for ky in 0..3 {
                for kx in 0..3 {
                    let (ti, fi) = (2 * t + ky, 2 * f + kx);
                    if ti < 1 || ti > s.frames || fi < 1 || fi > s.freqs {
                        continue;
                    }
                    if !valid[(ti - 1) * s.flag_stride] {
                        continue;
                    }
                    for c in 0..s.in_ch {
                        let xv = x[((ti - 1) * s.freqs + fi - 1) * s.in_ch + c];
                        acc += (xv * w[((oc * s.in_ch + c) * 3 + ky) * 3 + kx]) as f64;
                    }
                }
            }
            *out = acc as f32;
        }
        y
    }

    #[test]
    fn gpu_conv2d_s2_matches_direct_convolution() {
        let Some(ctx) = ctx() else { return };
        // odd sizes: the last output row/column sees padding; stride-2 flags as for layer 1
        for s in [
            Conv2dShape {
                frames: 7,
                freqs: 9,
                in_ch: 1,
                out_ch: 5,
                flag_stride: 1,
            },
            Conv2dShape {
                frames: 6,
                freqs: 5,
                in_ch: 3,
                out_ch: 4,
                flag_stride: 2,
            },
        ] {
            let x = random(s.frames * s.freqs * s.in_ch, 1);
            let w = random(s.out_ch * s.in_ch * 9, 2);
            let valid: Vec<bool> = (0..s.frames * s.flag_stride).map(|i| i % 5 != 3).collect();
            let (to, fo) = s.out_dims();
            let xb = GpuBuffer::from_f32(ctx, &x);
            let wb = GpuBuffer::from_f32(ctx, &conv_weight_tap_major(&w, s.out_ch));
            let fb = frame_flags(ctx, &valid);
            let y = GpuBuffer::zeros(ctx, to * fo * s.out_ch, ElemType::F32);
            run(ctx, |e| conv2d_s2(e, &xb, s, &fb, &wb, &y).unwrap());
            let err = max_abs_diff(&ctx.read_f32(&y).unwrap(), &conv_ref(&x, s, &valid, &w));
            assert!(err < 1e-5, "{s:?}: {err}");
        }
    }

    #[test]
    fn gpu_layer_norm_relu_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        let (px, ch) = (300, 7);
        let x: Vec<f32> = random(px * ch, 3).iter().map(|v| v * 3.0 + 0.5).collect();
        let w = random(ch, 4);
        let (yb, wb) = (GpuBuffer::from_f32(ctx, &x), GpuBuffer::from_f32(ctx, &w));
        run(ctx, |e| layer_norm_relu(e, &yb, px, ch, &wb, 1e-6).unwrap());
        let mut want = x.clone();
        for row in want.chunks_exact_mut(ch) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / ch as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / ch as f64;
            for (v, w) in row.iter_mut().zip(&w) {
                *v = ((*v as f64 - mean) / (var + 1e-6).sqrt() * *w as f64).max(0.0) as f32;
            }
        }
        assert!(max_abs_diff(&ctx.read_f32(&yb).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn gpu_clip_rmsnorm_all_modes() {
        let Some(ctx) = ctx() else { return };
        let (rows, dim) = (5, 300);
        let x: Vec<f32> = random(rows * dim, 5).iter().map(|v| v * 4.0).collect();
        let dst0 = random(rows * dim, 6);
        let w = random(dim, 7);
        let reference = |clip: f32, act: bool| -> Vec<f32> {
            let mut out = Vec::new();
            for row in x.chunks_exact(dim) {
                let v: Vec<f64> = row.iter().map(|&a| a.clamp(-clip, clip) as f64).collect();
                let ms = v.iter().map(|a| a * a).sum::<f64>() / dim as f64;
                let inv = 1.0 / (ms + 1e-6).sqrt();
                for (a, w) in v.iter().zip(&w) {
                    let n = (a * inv * *w as f64) as f32;
                    out.push(if act { silu(n) } else { n });
                }
            }
            out
        };
        let wb = GpuBuffer::from_f32(ctx, &w);
        for (clip, act) in [(1.5, false), (f32::INFINITY, true)] {
            let nw = ClipNorm {
                w: &wb,
                eps: 1e-6,
                clip,
                silu: act,
            };
            let want = reference(clip, act);
            let xb = GpuBuffer::from_f32(ctx, &x);
            let (d1, d2) = (
                GpuBuffer::from_f32(ctx, &dst0),
                GpuBuffer::from_f32(ctx, &dst0),
            );
            run(ctx, |e| {
                clip_rmsnorm_to(e, &xb, &d1, rows, dim, nw, NormInto::Store).unwrap();
                clip_rmsnorm_to(e, &xb, &d2, rows, dim, nw, NormInto::Add(0.5)).unwrap();
                clip_rmsnorm(e, &xb, rows, dim, nw).unwrap();
            });
            let added: Vec<f32> = dst0.iter().zip(&want).map(|(d, n)| d + 0.5 * n).collect();
            assert!(max_abs_diff(&ctx.read_f32(&d1).unwrap(), &want) < 1e-5);
            assert!(max_abs_diff(&ctx.read_f32(&d2).unwrap(), &added) < 1e-5);
            assert!(max_abs_diff(&ctx.read_f32(&xb).unwrap(), &want) < 1e-5);
        }
        let xb = GpuBuffer::from_f32(ctx, &x);
        let nw = ClipNorm {
            w: &wb,
            eps: 1e-6,
            clip: 1.0,
            silu: false,
        };
        let mut enc = Encoder::new(ctx);
        assert!(clip_rmsnorm_to(&mut enc, &xb, &xb, rows, dim, nw, NormInto::Store).is_err());
    }

    #[test]
    fn gpu_clamps_bias_and_gather() {
        let Some(ctx) = ctx() else { return };
        let n = 600;
        let x: Vec<f32> = random(n, 8).iter().map(|v| v * 6.0).collect();
        let bias = random(40, 9);
        let xb = GpuBuffer::from_f32(ctx, &x);
        let (c, s, bb) = (
            GpuBuffer::zeros(ctx, n, ElemType::F32),
            GpuBuffer::from_f32(ctx, &x),
            GpuBuffer::from_f32(ctx, &x),
        );
        let biasb = GpuBuffer::from_f32(ctx, &bias);
        let rows = [14, 0, 3, 3];
        let idx = row_indices(ctx, &rows).unwrap();
        let g = GpuBuffer::zeros(ctx, rows.len() * 40, ElemType::F32);
        run(ctx, |e| {
            clamp_to(e, &xb, &c, n, -2.0, f32::INFINITY).unwrap();
            clamp_silu(e, &s, n, -1.0, 2.5).unwrap();
            bias_rows(e, &bb, n / 40, 40, &biasb).unwrap();
            gather_rows(e, &xb, &idx, rows.len(), 40, &g).unwrap();
        });
        let want: Vec<f32> = x.iter().map(|v| v.max(-2.0)).collect();
        assert_eq!(ctx.read_f32(&c).unwrap(), want);
        let want: Vec<f32> = x.iter().map(|v| silu(v.clamp(-1.0, 2.5))).collect();
        assert!(max_abs_diff(&ctx.read_f32(&s).unwrap(), &want) < 1e-6);
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias[i % 40])
            .collect();
        assert_eq!(ctx.read_f32(&bb).unwrap(), want);
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&r| x[r * 40..(r + 1) * 40].iter().copied())
            .collect();
        assert_eq!(ctx.read_f32(&g).unwrap(), want);
        assert!(clamp_to(&mut Encoder::new(ctx), &xb, &c, n, 1.0, 0.0).is_err());
    }

    #[test]
    fn gpu_glu_dwconv_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        let (t, ch, kw) = (11, 6, 5);
        let wide: Vec<f32> = random(t * 2 * ch, 10).iter().map(|v| v * 3.0).collect();
        let taps = random(ch * kw, 11);
        let (wb, tb) = (
            GpuBuffer::from_f32(ctx, &wide),
            GpuBuffer::from_f32(ctx, &taps),
        );
        let y = GpuBuffer::zeros(ctx, t * ch, ElemType::F32);
        run(ctx, |e| glu_dwconv(e, &wb, t, ch, &tb, kw, &y).unwrap());
        let glu = |s: usize, c: usize| {
            let (a, b) = (wide[s * 2 * ch + c], wide[s * 2 * ch + ch + c]);
            a / (1.0 + (-b).exp())
        };
        let mut want = vec![0f32; t * ch];
        for (i, o) in want.iter_mut().enumerate() {
            let (ti, c) = (i / ch, i % ch);
            // tap kw-1 is the current frame, tap kw-1-d the frame d back
            for back in 0..kw.min(ti + 1) {
                *o += taps[c * kw + kw - 1 - back] * glu(ti - back, c);
            }
        }
        assert!(max_abs_diff(&ctx.read_f32(&y).unwrap(), &want) < 1e-5);
    }

    /// Scalar attention by the rule of `audio_attention.wgsl`'s header.
    fn attention_ref(a: &LocalAttn, [q, k, v, rel, qf]: [&[f32]; 5], valid: &[bool]) -> Vec<f32> {
        let (hd, hid) = (a.head_dim, a.heads * a.head_dim);
        let mut out = vec![0f32; a.frames * hid];
        for h in 0..a.heads {
            for ti in 0..a.frames {
                let qs: Vec<f64> = (0..hd)
                    .map(|d| (q[ti * hid + h * hd + d] * qf[d]) as f64)
                    .collect();
                let keys: Vec<usize> = (0..a.frames)
                    .filter(|&s| s <= ti && ti - s < a.past)
                    .collect();
                let mut scores = Vec::new();
                for &s in &keys {
                    let mut l = 0f64;
                    for (d, qv) in qs.iter().enumerate() {
                        l += qv * (k[s * hid + h * hd + d] * a.k_scale) as f64;
                        let r = a.past - (ti - s);
                        if r < a.positions {
                            l += qv * rel[r * hid + h * hd + d] as f64;
                        }
                    }
                    let l = (l / a.logit_cap as f64).tanh() * a.logit_cap as f64;
                    scores.push(if valid[s] { l } else { a.invalid_logit as f64 });
                }
                let o = &mut out[ti * hid + h * hd..][..hd];
                if keys.iter().any(|&s| valid[s]) {
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = scores.iter().map(|l| (l - m).exp()).sum();
                    for (&s, l) in keys.iter().zip(&scores) {
                        for (d, ov) in o.iter_mut().enumerate() {
                            *ov += ((l - m).exp() / z * v[s * hid + h * hd + d] as f64) as f32;
                        }
                    }
                } else {
                    let b0 = ti / a.chunk * a.chunk;
                    let lo = b0.saturating_sub(a.past);
                    let hi = (b0 + a.context).saturating_sub(a.past).min(a.frames);
                    for s in lo..hi {
                        for (d, ov) in o.iter_mut().enumerate() {
                            *ov += v[s * hid + h * hd + d] / a.context as f32;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn gpu_local_attention_matches_scalar() {
        let Some(ctx) = ctx() else { return };
        let small = LocalAttn {
            frames: 29, // not a multiple of the chunk
            heads: 2,
            head_dim: 8,
            past: 12,
            positions: 13,
            chunk: 12,
            context: 24,
            logit_cap: 5.0,
            invalid_logit: -1e9,
            k_scale: 1.9,
        };
        // more keys and head dimensions than the workgroup's 64 threads, strided flags
        let wide = LocalAttn {
            frames: 90,
            heads: 1,
            head_dim: 80,
            past: 70,
            positions: 42,
            chunk: 12,
            context: 82,
            ..small
        };
        for (a, stride) in [(small, 1), (wide, 2)] {
            let hid = a.heads * a.head_dim;
            let n = a.frames * hid;
            let (q, k, v) = (random(n, 12), random(n, 13), random(n, 14));
            let rel = random(a.positions * hid, 15);
            let qf: Vec<f32> = random(a.head_dim, 16).iter().map(|v| v + 1.5).collect();
            // frames 0..3 invalid (queries 0..3 have no valid key: the uniform-window rule),
            // and a gap of invalid frames in the middle and at the end
            let valid: Vec<bool> = (0..a.frames)
                .map(|s| s >= 4 && !(14..16).contains(&s) && s + 2 < a.frames)
                .collect();
            let strided: Vec<bool> = valid
                .iter()
                .flat_map(|&m| std::iter::repeat_n(m, stride))
                .collect();
            let bufs: Vec<GpuBuffer> = [&q, &k, &v, &rel, &qf]
                .iter()
                .map(|d| GpuBuffer::from_f32(ctx, d))
                .collect();
            let flags = frame_flags(ctx, &strided);
            let out = GpuBuffer::zeros(ctx, n, ElemType::F32);
            let b = AttnBuffers {
                q: &bufs[0],
                k: &bufs[1],
                v: &bufs[2],
                rel_k: &bufs[3],
                q_factors: &bufs[4],
                flags: &flags,
                flag_stride: stride,
                out: &out,
            };
            run(ctx, |e| local_attention(e, &a, &b).unwrap());
            let want = attention_ref(&a, [&q, &k, &v, &rel, &qf], &valid);
            let err = max_abs_diff(&ctx.read_f32(&out).unwrap(), &want);
            assert!(err < 1e-5, "{a:?}: attention differs by {err}");
            let bad = LocalAttn { past: 0, ..a };
            assert!(local_attention(&mut Encoder::new(ctx), &bad, &b).is_err());
        }
    }
}
