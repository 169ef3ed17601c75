//! `y[t, n] = sum_k x[t, k] * W[n, k]` for q4, q8, f16 and f32 weights (the CPU `matmul`).
//!
//! Each weight buffer (a row range, see [`GpuWeight`]) gets one dispatch of 256-thread
//! workgroups; `LANES` threads share a row, each reading 16 contiguous bytes per step so a row
//! is read with coalesced loads, and the partial sums meet in workgroup memory. Quantized
//! weights are dequantized in registers (`(q - 8) * scale`, f32) and multiplied with f32
//! activations, so the result equals the scalar dequantize reference up to f32 summation order.

use super::norm::{self, NormWeight};
use super::{Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, buffer::ElemType, shape_err};
use crate::tensor::DType;

const SHADER: &str = include_str!("matmul.wgsl");

/// The kernels with their activations' type (a prelude: f32, or f16 with shader-f16) and their
/// lane reductions: through workgroup memory (everywhere) or subgroup shuffles (adapters with
/// subgroups at least LANES wide).
fn compose(x: &str, reduce: &str) -> String {
    format!("{x}\n{SHADER}\n{reduce}")
}
const X_F32: &str = include_str!("matmul_x_f32.wgsl");
const X_F16: &str = include_str!("matmul_x_f16.wgsl");
const SMEM: &str = include_str!("matmul_reduce_smem.wgsl");
const SUBGROUP: &str = include_str!("matmul_reduce_subgroup.wgsl");
static SMEM_SRC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| compose(X_F32, SMEM));
static SUBGROUP_SRC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| compose(X_F32, SUBGROUP));
static SMEM_F16_SRC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| compose(X_F16, SMEM));
static SUBGROUP_F16_SRC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| compose(X_F16, SUBGROUP));
const X_PRO: &str = include_str!("matmul_x_pro.wgsl");
static SMEM_PRO_SRC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| compose(X_PRO, SMEM));
static SUBGROUP_PRO_SRC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| compose(X_PRO, SUBGROUP));

/// The shader (cache key, source) for row groups of `lanes` lanes and activations of `x`.
fn source_for(ctx: &GpuContext, lanes: u32, x: ElemType) -> (&'static str, &'static str) {
    match (ctx.subgroup_min >= lanes, x) {
        (true, ElemType::F32) => ("matmul_sg", SUBGROUP_SRC.as_str()),
        (false, ElemType::F32) => ("matmul", SMEM_SRC.as_str()),
        (true, ElemType::F16) => ("matmul_sg_xh", SUBGROUP_F16_SRC.as_str()),
        (false, ElemType::F16) => ("matmul_xh", SMEM_F16_SRC.as_str()),
    }
}

/// [`source_for`] f32 activations.
fn source(ctx: &GpuContext, lanes: u32) -> (&'static str, &'static str) {
    source_for(ctx, lanes, ElemType::F32)
}

/// The shader for a decode matvec's activations: plain f32, or made by the prologue.
fn source_in(ctx: &GpuContext, lanes: u32, input: &Input<'_>) -> (&'static str, &'static str) {
    match (input, ctx.subgroup_min >= lanes) {
        (Input::Plain(_), _) => source(ctx, lanes),
        (Input::Pro(..), true) => ("matmul_sg_pro", SUBGROUP_PRO_SRC.as_str()),
        (Input::Pro(..), false) => ("matmul_pro", SMEM_PRO_SRC.as_str()),
    }
}

/// The previous block's output folded into a decode matvec (t = 1), so the residual add with
/// its post-norm and the next block's pre-norm cost no dispatch of their own (see
/// `matmul_x_pro.wgsl`). With the matvec's input `x` as the residual stream, the matvec reads
/// `pre((x + post(a)) * scale)` (or the sum itself without `pre`) and the sum is stored into
/// `x_out`. Where the fused form does not apply, the same is recorded as a norm dispatch
/// (into `x_out` and `h`) before a plain matvec.
#[derive(Clone, Copy)]
pub struct AddNorm<'a> {
    /// The block's output.
    pub a: &'a GpuBuffer,
    pub post: NormWeight<'a>,
    /// Scales the residual sum (Gemma 4's layer scalar).
    pub scale: f32,
    /// The next block's pre-norm; None: the matvec takes the residual sum itself.
    pub pre: Option<NormWeight<'a>>,
    /// The new residual stream (a different buffer from the matvec's input).
    pub x_out: &'a GpuBuffer,
    /// The normed rows, where the fused form does not apply.
    pub h: &'a GpuBuffer,
}

/// Widest rows the prologue holds (`matmul_x_pro.wgsl`'s workgroup array).
const PRO_MAX_DIM: usize = 2560;

impl AddNorm<'_> {
    /// Whether a matvec over `x` (`k` columns) can run this in its prologue here.
    fn fits(&self, ctx: &GpuContext, x: &GpuBuffer, k: usize, wg: u32, lanes: u32) -> bool {
        let same = |n: &NormWeight<'_>| {
            n.w.is_some_and(|w| w.elem == ElemType::F32 && w.len >= k)
                && n.eps == self.post.eps
                && n.plus_one == self.post.plus_one
        };
        // workgroup memory: the row (16 bytes per vec4) and the sums, plus the lane
        // reduction's array where there are no subgroups (matmul_reduce_smem.wgsl)
        let smem = PRO_MAX_DIM * 4 + 1024 + if ctx.subgroup_min >= lanes { 0 } else { 16384 };
        x.elem == ElemType::F32
            && self.a.elem == ElemType::F32
            && self.x_out.elem == ElemType::F32
            && k.is_multiple_of(4)
            && k <= PRO_MAX_DIM
            && x.len >= k
            && self.a.len >= k
            && self.x_out.len >= k
            && x.buf != self.x_out.buf
            && self.a.buf != self.x_out.buf
            && wg <= 256
            && same(&self.post)
            && self.pre.as_ref().is_none_or(same)
            && ctx.limits.max_compute_workgroup_storage_size as usize >= smem
    }

    /// The unfused form: `x_out = (x + post(a)) * scale`, `h = pre(x_out)`; returns the matvec's
    /// input (`h`, or `x_out` without `pre`).
    fn record_unfused<'b>(
        &'b self,
        enc: &mut Encoder<'_>,
        x: &GpuBuffer,
        k: usize,
    ) -> Result<&'b GpuBuffer, GpuError> {
        enc.copy(x, 0, self.x_out, 0, k)?;
        match self.pre {
            Some(pre) => {
                norm::rmsnorm_add_norm(
                    enc, self.a, self.x_out, 1, k, self.post, self.scale, pre, self.h,
                )?;
                Ok(self.h)
            }
            None => {
                let into = norm::Into::AddScaled(self.scale);
                norm::rmsnorm_to(enc, self.a, self.x_out, 1, k, self.post, into)?;
                Ok(self.x_out)
            }
        }
    }

    /// The prologue's parameters (after the 16 of the kernels' own).
    fn params(&self, k: usize) -> [u32; 5] {
        [
            if self.pre.is_some() { 2 } else { 1 },
            k as u32,
            self.post.eps.to_bits(),
            self.scale.to_bits(),
            self.post.plus_one as u32,
        ]
    }

    /// Its bindings (10..=13).
    fn bindings<'b>(&'b self, ctx: &'b GpuContext) -> [(u32, &'b wgpu::Buffer); 4] {
        let w = |n: Option<NormWeight<'b>>| n.and_then(|n| n.w).map_or(&ctx.dummy, |b| &b.buf);
        [
            (10, &self.a.buf),
            (11, &self.x_out.buf),
            (12, w(Some(self.post))),
            (13, w(self.pre)),
        ]
    }
}

/// A decode matvec's input: a plain buffer, or the residual stream `x` with an [`AddNorm`]
/// for the prologue.
enum Input<'b> {
    Plain(&'b GpuBuffer),
    Pro(&'b GpuBuffer, &'b AddNorm<'b>),
}

impl<'b> Input<'b> {
    /// The input of a matvec over `x` with `pro`: fused when `fusable` (the op runs as one of
    /// the decode kernels with this tiling) and [`AddNorm::fits`], else after the unfused norm.
    fn resolve(
        enc: &mut Encoder<'_>,
        x: &'b GpuBuffer,
        k: usize,
        pro: Option<&'b AddNorm<'b>>,
        fusable: Option<(u32, u32)>,
    ) -> Result<Input<'b>, GpuError> {
        match (pro, fusable) {
            (None, _) => Ok(Input::Plain(x)),
            (Some(p), Some((wg, lanes))) if p.fits(enc.ctx(), x, k, wg, lanes) => {
                Ok(Input::Pro(x, p))
            }
            (Some(p), _) => Ok(Input::Plain(p.record_unfused(enc, x, k)?)),
        }
    }

    /// The activations' buffer (binding 2).
    fn x(&self) -> &'b GpuBuffer {
        match self {
            Input::Plain(x) | Input::Pro(x, _) => x,
        }
    }

    /// `params` padded to the kernels' 16 and followed by the prologue's.
    fn params(&self, params: &[u32], k: usize) -> Vec<u32> {
        let mut all = params.to_vec();
        if let Input::Pro(_, p) = self {
            all.resize(16, 0);
            all.extend_from_slice(&p.params(k));
        }
        all
    }

    /// `bufs` and the prologue's bindings.
    fn bindings<'c>(
        &'c self,
        ctx: &'c GpuContext,
        bufs: &[(u32, &'c wgpu::Buffer)],
    ) -> Vec<(u32, &'c wgpu::Buffer)> {
        let mut all = bufs.to_vec();
        if let Input::Pro(_, p) = self {
            all.extend_from_slice(&p.bindings(ctx));
        }
        all
    }
}

/// Lanes per row no wider than the adapter's subgroups, where those reduce the lanes.
fn fit_lanes(ctx: &GpuContext, lanes: u32) -> u32 {
    if ctx.subgroup_min >= 4 {
        lanes.min(ctx.subgroup_min)
    } else {
        lanes
    }
}

/// 16-byte units per row.
fn units(w: &GpuWeight) -> usize {
    match w.dtype {
        DType::Q4 => w.cols / 32,
        DType::Q8 => w.cols / 16,
        DType::F16 => w.cols / 8,
        _ => w.cols / 4,
    }
}

/// How a dispatch splits the work (see `matmul.wgsl`); benchmarks sweep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Threads per workgroup: 64, 128 or 256.
    pub wg: u32,
    /// Threads sharing a row group (power of two, <= wg).
    pub lanes: u32,
    /// Rows per row group, 1..=4.
    pub rows: u32,
}

impl Tiling {
    /// The default for `rows` rows of `units` 16-byte units: enough lanes per row that the
    /// dispatch has tens of thousands of threads in flight (a decode matvec of a few thousand
    /// rows is otherwise too narrow to fill the GPU), but no more lanes than units.
    pub fn for_shape(rows: usize, units: usize) -> Tiling {
        // From sweeps over Gemma 4 E2B shapes (`gpu_bench --e2b --sweep [--chain]`, H200 and
        // H100): 128-thread workgroups won everywhere; 16 lanes per row from ~4096 rows, 32-64
        // below.
        let want = (65536 / rows.max(1)).next_power_of_two();
        let lanes = want.clamp(4, 64).min(units.next_power_of_two().max(4)) as u32;
        Tiling {
            wg: 128,
            lanes,
            rows: 2,
        }
    }

    fn check(&self) -> Result<(), GpuError> {
        let ok = matches!(self.wg, 64 | 128 | 256)
            && self.lanes.is_power_of_two()
            && self.lanes <= self.wg
            && (1..=4).contains(&self.rows);
        if ok {
            Ok(())
        } else {
            Err(shape_err("matmul", format!("bad tiling {self:?}")))
        }
    }
}

/// Checks that `x` holds `t x k` and `out` `t x n` f32; `false` when there is nothing to do.
pub(super) fn check_io(
    op: &'static str,
    x: &GpuBuffer,
    t: usize,
    k: usize,
    out: &GpuBuffer,
    n: usize,
) -> Result<bool, GpuError> {
    if x.elem != ElemType::F32 || out.elem != ElemType::F32 {
        return Err(shape_err(op, "x and out must be f32 buffers"));
    }
    check_len(op, x, t, k, out, n)
}

fn check_len(
    op: &'static str,
    x: &GpuBuffer,
    t: usize,
    k: usize,
    out: &GpuBuffer,
    n: usize,
) -> Result<bool, GpuError> {
    if x.len < t * k || out.len < t * n {
        return Err(shape_err(
            op,
            format!(
                "x has {} (needs {}), out has {} (needs {})",
                x.len,
                t * k,
                out.len,
                t * n
            ),
        ));
    }
    Ok(t > 0 && n > 0 && k > 0)
}

/// Records `out[t, n] = sum_k x[t, k] * w[n, k]`; `x` holds `t * k` f32, `out` `t * n` f32.
pub fn matmul(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
) -> Result<(), GpuError> {
    matmul_tiled(enc, x, t, w, out, None)
}

/// [`matmul`] with an explicit [`Tiling`] (None: [`Tiling::for_shape`]).
pub fn matmul_tiled(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
    tiling: Option<Tiling>,
) -> Result<(), GpuError> {
    if w.dtype.is_lut() {
        return super::matmul_lut::matmul_lut(enc, x, t, w, out);
    }
    let (n, k) = (w.rows, w.cols);
    let need_k = match w.dtype {
        DType::F16 => 8,
        _ => 4,
    };
    if k % need_k != 0 {
        return Err(GpuError::Unsupported(format!(
            "{} weights need cols % {need_k} == 0, got {k}",
            w.dtype
        )));
    }
    // f16 activations: plain matmuls where the adapter has shader-f16 (see `f16_activations`)
    let xh = x.elem == ElemType::F16;
    if xh && !f16_activations(enc.ctx()) {
        return Err(GpuError::Unsupported(
            "f16 activations need an adapter with shader-f16".into(),
        ));
    }
    if out.elem != ElemType::F32 || !(xh || x.elem == ElemType::F32) {
        return Err(shape_err("matmul", "x must be f32 or f16, out f32"));
    }
    if !check_len("matmul", x, t, k, out, n)? {
        return Ok(());
    }
    // many rows: the tiled GEMM (f32 activations, default tiling)
    if tiling.is_none() && !xh && super::gemm::fits(w, t) {
        return super::gemm::record(enc, x, t, w, out);
    }
    let tiling = tiling.unwrap_or_else(|| default_tiling(enc.ctx(), n, units(w)));
    tiling.check()?;
    record_matvec_or_matmul(enc, x, t, w, out, tiling, None)
}

/// The tiling of `n` rows of `u` units where none is asked for.
fn default_tiling(ctx: &GpuContext, n: usize, u: usize) -> Tiling {
    let t = Tiling::for_shape(n, u);
    // Long rows (the MLP's down projection) keep 64 lanes, reduced through workgroup
    // memory: ~25% faster on the H100 than 32 lanes with subgroup shuffles.
    let long = t.lanes == 64 && u >= 192;
    Tiling {
        lanes: if long { 64 } else { fit_lanes(ctx, t.lanes) },
        ..t
    }
}

/// A decode matvec (`t = 1`, default tiling) whose input is made from the previous block's
/// output in its prologue (see [`AddNorm`]); `x` is the residual stream.
pub fn matvec_add_norm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    w: &GpuWeight,
    out: &GpuBuffer,
    pro: &AddNorm<'_>,
) -> Result<(), GpuError> {
    let k = w.cols;
    let tiling = default_tiling(enc.ctx(), w.rows, units(w));
    let fusable = (!w.dtype.is_lut() && w.parts.len() == 1 && k.is_multiple_of(8))
        .then_some((tiling.wg, tiling.lanes));
    match Input::resolve(enc, x, k, Some(pro), fusable)? {
        Input::Plain(h) => matmul(enc, h, 1, w, out),
        input => {
            if out.elem != ElemType::F32 || out.len < w.rows {
                return Err(shape_err(
                    "matvec_add_norm",
                    "out must hold the rows in f32",
                ));
            }
            record_matvec_or_matmul(enc, x, 1, w, out, tiling, Some(&input))
        }
    }
}

/// The dispatches of a checked [`matmul_tiled`] (or a fused [`matvec_add_norm`]).
fn record_matvec_or_matmul(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
    tiling: Tiling,
    input: Option<&Input<'_>>,
) -> Result<(), GpuError> {
    let (n, k) = (w.rows, w.cols);
    let u = units(w);
    let (entry, quantized) = match (w.dtype, t) {
        (DType::Q4, 1) => ("matvec_q4", true),
        (DType::Q8, 1) => ("matvec_q8", true),
        (DType::F16, 1) => ("matvec_f16", false),
        (_, 1) => ("matvec_f32", false),
        (DType::Q4, _) => ("matmul_q4", true),
        (DType::Q8, _) => ("matmul_q8", true),
        (DType::F16, _) => ("matmul_f16", false),
        _ => ("matmul_f32", false),
    };
    if t == 1 && tiling.rows > 2 {
        return Err(shape_err("matmul", "decode tilings take 1 or 2 rows"));
    }
    // prefill: 4 tokens per tile, so each weight load serves 4 tokens
    let tt = if t > 1 { 4 } else { 1 };
    let (key, src) = match input {
        Some(i) => source_in(enc.ctx(), tiling.lanes, i),
        None => source_for(enc.ctx(), tiling.lanes, x.elem),
    };
    let pipeline = enc.ctx().pipeline(
        key,
        src,
        entry,
        &[
            ("WG", tiling.wg as f64),
            ("LANES", tiling.lanes as f64),
            ("NR", tiling.rows as f64),
            ("TT", tt as f64),
        ],
    );
    let rows_per_group = (tiling.wg / tiling.lanes * tiling.rows) as usize;
    for part in &w.parts {
        let params = [
            k as u32,
            part.rows as u32,
            t as u32,
            n as u32,
            part.row0 as u32,
            u as u32,
            w.group_size.max(1) as u32,
            part.scale_word as u32,
            0,
        ];
        let groups = part.rows.div_ceil(rows_per_group) as u32;
        let bufs: &[(u32, &wgpu::Buffer)] = if quantized {
            &[(1, &part.buf), (2, &x.buf), (3, &out.buf), (4, &part.buf)]
        } else {
            &[(1, &part.buf), (2, &x.buf), (3, &out.buf)]
        };
        match input {
            Some(i) => {
                let bufs = i.bindings(enc.ctx(), bufs);
                enc.dispatch_at(pipeline.clone(), &i.params(&params, k), bufs, groups)
            }
            None => enc.dispatch_at(pipeline.clone(), &params, bufs.iter().copied(), groups),
        }
    }
    Ok(())
}

/// Whether [`matmul`] takes f16 activations here (the adapter has shader-f16; an f16 `x` is
/// widened to f32 in the kernel and the products accumulate in f32).
pub fn f16_activations(ctx: &GpuContext) -> bool {
    ctx.adapter().shader_f16
}

/// Records `out[n] = gelu_tanh(gate[n] . x) * (up[n] . x)`, the gated MLP's first half. One
/// dispatch for a decode step (t = 1) with single-buffer q4 weights of one shape; otherwise
/// two matmuls into `out` and `up_out` and the element-wise op.
pub fn matmul_glu(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    gate: &GpuWeight,
    up: &GpuWeight,
    out: &GpuBuffer,
    up_out: &GpuBuffer,
) -> Result<(), GpuError> {
    matmul_glu_in(enc, x, t, (gate, up), (out, up_out), None)
}

/// [`matmul_glu`] for one token whose input is made in the prologue (see [`AddNorm`]; `x` is
/// the residual stream).
pub fn matmul_glu_add_norm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    (gate, up): (&GpuWeight, &GpuWeight),
    (out, up_out): (&GpuBuffer, &GpuBuffer),
    pro: &AddNorm<'_>,
) -> Result<(), GpuError> {
    matmul_glu_in(enc, x, 1, (gate, up), (out, up_out), Some(pro))
}

fn matmul_glu_in(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    (gate, up): (&GpuWeight, &GpuWeight),
    (out, up_out): (&GpuBuffer, &GpuBuffer),
    pro: Option<&AddNorm<'_>>,
) -> Result<(), GpuError> {
    let fused = t == 1
        && gate.dtype == DType::Q4
        && up.dtype == DType::Q4
        && (gate.rows, gate.cols, gate.group_size) == (up.rows, up.cols, up.group_size)
        && gate.parts.len() == 1
        && up.parts.len() == 1
        && gate.parts[0].scale_word == up.parts[0].scale_word;
    let u = units(gate);
    // Two rows of each per row group (each x load serves four weight units), 16 lanes: the best
    // plain-matvec tiling of the E2B MLP shapes in the H100 sweep.
    let lanes = fit_lanes(enc.ctx(), 16.min(u.next_power_of_two().max(4) as u32));
    let (wg, nr) = (128u32, 2u32);
    let input = Input::resolve(enc, x, gate.cols, pro, fused.then_some((wg, lanes)))?;
    let x = input.x();
    if !fused {
        matmul(enc, x, t, gate, out)?;
        matmul(enc, x, t, up, up_out)?;
        return super::elementwise::gelu_mul(enc, out, up_out, t * gate.rows);
    }
    let (n, k) = (gate.rows, gate.cols);
    if x.elem != ElemType::F32 || out.elem != ElemType::F32 || x.len < k || out.len < n {
        return Err(shape_err(
            "matmul_glu",
            format!("x[{}] out[{}] for {n}x{k}", x.len, out.len),
        ));
    }
    if n == 0 || k == 0 {
        return Ok(());
    }
    let (key, src) = source_in(enc.ctx(), lanes, &input);
    let pipeline = enc.ctx().pipeline(
        key,
        src,
        "matvec_q4_glu",
        &[
            ("WG", wg as f64),
            ("LANES", lanes as f64),
            ("NR", nr as f64),
            ("TT", 1.0),
        ],
    );
    let (g, v) = (&gate.parts[0], &up.parts[0]);
    let params = [
        k as u32,
        n as u32,
        1,
        n as u32,
        0,
        u as u32,
        gate.group_size.max(1) as u32,
        g.scale_word as u32,
        0,
    ];
    let groups = n.div_ceil((wg / lanes * nr) as usize) as u32;
    let bufs = [
        (1, &g.buf),
        (2, &x.buf),
        (3, &out.buf),
        (4, &g.buf),
        (5, &v.buf),
        (6, &v.buf),
    ];
    let (params, bufs) = (input.params(&params, k), input.bindings(enc.ctx(), &bufs));
    enc.dispatch_at(pipeline, &params, bufs, groups);
    Ok(())
}

/// Records `outs[j] = x · ws[j]ᵀ` for three weights over the same input (q, k and v). One
/// dispatch for a decode step (t = 1) with single-buffer q4 or q8 weights of the same dtype,
/// columns and group size; otherwise three matmuls.
pub fn matmul3(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    ws: [&GpuWeight; 3],
    outs: [&GpuBuffer; 3],
) -> Result<(), GpuError> {
    matmul3_in(enc, x, t, ws, outs, None)
}

/// [`matmul3`] for one token whose input is made in the prologue (see [`AddNorm`]; `x` is the
/// residual stream).
pub fn matmul3_add_norm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    ws: [&GpuWeight; 3],
    outs: [&GpuBuffer; 3],
    pro: &AddNorm<'_>,
) -> Result<(), GpuError> {
    matmul3_in(enc, x, 1, ws, outs, Some(pro))
}

fn matmul3_in(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    ws: [&GpuWeight; 3],
    outs: [&GpuBuffer; 3],
    pro: Option<&AddNorm<'_>>,
) -> Result<(), GpuError> {
    let w0 = ws[0];
    let fused = t == 1
        && matches!(w0.dtype, DType::Q4 | DType::Q8)
        && ws.iter().all(|w| {
            w.dtype == w0.dtype
                && w.cols == w0.cols
                && w.group_size == w0.group_size
                && w.group_size > 0
                && w.rows > 0
                && w.parts.len() == 1
        });
    let u = units(w0);
    let total: usize = ws.iter().map(|w| w.rows).sum();
    let lanes = fit_lanes(enc.ctx(), Tiling::for_shape(total, u).lanes);
    let (wg, nr) = (128u32, 2u32);
    let input = Input::resolve(enc, x, w0.cols, pro, fused.then_some((wg, lanes)))?;
    let x = input.x();
    if !fused {
        for (w, out) in ws.into_iter().zip(outs) {
            matmul(enc, x, t, w, out)?;
        }
        return Ok(());
    }
    let k = w0.cols;
    let ok = x.elem == ElemType::F32
        && x.len >= k
        && k.is_multiple_of(32)
        && ws
            .iter()
            .zip(outs)
            .all(|(w, o)| o.elem == ElemType::F32 && o.len >= w.rows);
    if !ok {
        return Err(shape_err(
            "matmul3",
            format!("x[{}] for {k} columns, or outputs too short", x.len),
        ));
    }
    let per_group = (wg / lanes * nr) as usize;
    let (key, src) = source_in(enc.ctx(), lanes, &input);
    let pipeline = enc.ctx().pipeline(
        key,
        src,
        "matvec3",
        &[
            ("WG", wg as f64),
            ("LANES", lanes as f64),
            ("NR", nr as f64),
            ("TT", 1.0),
        ],
    );
    let groups: Vec<usize> = ws.iter().map(|w| w.rows.div_ceil(per_group)).collect();
    let (g2, g3) = (groups[0], groups[0] + groups[1]);
    let params = [
        k as u32,
        w0.rows as u32,
        1,
        w0.rows as u32,
        0,
        u as u32,
        w0.group_size as u32,
        w0.parts[0].scale_word as u32,
        0,
        ws[1].rows as u32,
        ws[2].rows as u32,
        ws[1].parts[0].scale_word as u32,
        ws[2].parts[0].scale_word as u32,
        g2 as u32,
        g3 as u32,
        (w0.dtype == DType::Q8) as u32,
    ];
    let bufs = [
        (1, &ws[0].parts[0].buf),
        (2, &x.buf),
        (3, &outs[0].buf),
        (5, &ws[1].parts[0].buf),
        (7, &ws[2].parts[0].buf),
        (8, &outs[1].buf),
        (9, &outs[2].buf),
    ];
    let (params, bufs) = (input.params(&params, k), input.bindings(enc.ctx(), &bufs));
    enc.dispatch_at(pipeline, &params, bufs, (g3 + groups[2]) as u32);
    Ok(())
}

/// Records `out[n] = gelu_tanh(w[n] . x) * aux[off + n]` for one token (Gemma 4's per-layer
/// input gate times its slice of the per-layer inputs). One dispatch for a single-buffer q4
/// weight; otherwise the matmul and [`super::elementwise::gelu_mul_slice`].
pub fn matvec_gelu_mul(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    w: &GpuWeight,
    out: &GpuBuffer,
    aux: &GpuBuffer,
    off: usize,
) -> Result<(), GpuError> {
    matvec_gelu_mul_in(enc, x, w, out, (aux, off), None)
}

/// [`matvec_gelu_mul`] whose input is made in the prologue (see [`AddNorm`]; `x` is the
/// residual stream).
pub fn matvec_gelu_mul_add_norm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    w: &GpuWeight,
    out: &GpuBuffer,
    aux: (&GpuBuffer, usize),
    pro: &AddNorm<'_>,
) -> Result<(), GpuError> {
    matvec_gelu_mul_in(enc, x, w, out, aux, Some(pro))
}

fn matvec_gelu_mul_in(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    w: &GpuWeight,
    out: &GpuBuffer,
    (aux, off): (&GpuBuffer, usize),
    pro: Option<&AddNorm<'_>>,
) -> Result<(), GpuError> {
    let (n, k) = (w.rows, w.cols);
    let fused = w.dtype == DType::Q4 && w.parts.len() == 1;
    let u = units(w);
    let lanes = fit_lanes(enc.ctx(), Tiling::for_shape(n / 2, u).lanes);
    let wg = 128u32;
    let input = Input::resolve(enc, x, k, pro, fused.then_some((wg, lanes)))?;
    let x = input.x();
    if !fused {
        matmul(enc, x, 1, w, out)?;
        return super::elementwise::gelu_mul_slice(enc, out, 1, n, aux, off, n);
    }
    let ok = x.elem == ElemType::F32
        && out.elem == ElemType::F32
        && aux.elem == ElemType::F32
        && x.len >= k
        && out.len >= n
        && aux.len >= off + n;
    if !ok {
        return Err(shape_err(
            "matvec_gelu_mul",
            format!(
                "x[{}] out[{}] aux[{}] at {off} for {n}x{k}",
                x.len, out.len, aux.len
            ),
        ));
    }
    if n == 0 || k == 0 {
        return Ok(());
    }
    let (key, src) = source_in(enc.ctx(), lanes, &input);
    let constants = [
        ("WG", wg as f64),
        ("LANES", lanes as f64),
        ("NR", 1.0),
        ("TT", 1.0),
    ];
    let pipeline = enc
        .ctx()
        .pipeline(key, src, "matvec_q4_gelu_mul", &constants);
    let part = &w.parts[0];
    let params = [
        k as u32,
        n as u32,
        1,
        n as u32,
        0,
        u as u32,
        w.group_size.max(1) as u32,
        part.scale_word as u32,
        off as u32,
    ];
    let groups = n.div_ceil((wg / lanes) as usize) as u32;
    let bufs = [
        (1, &part.buf),
        (2, &x.buf),
        (3, &out.buf),
        (4, &part.buf),
        (5, &aux.buf),
    ];
    let (params, bufs) = (input.params(&params, k), input.bindings(enc.ctx(), &bufs));
    enc.dispatch_at(pipeline, &params, bufs, groups);
    Ok(())
}

/// The assembled sources (both activation preludes, both reductions) with the tilings the
/// kernels and the benchmark sweep use (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    let mut tilings = Vec::new();
    for (wg, lanes, nr, tt) in [
        (256, 32, 2, 1),
        (128, 16, 2, 1),
        (128, 64, 2, 1),
        (64, 4, 1, 1),
        (256, 64, 2, 4),
        (256, 256, 1, 4),
        (128, 16, 4, 4),
    ] {
        tilings.push(vec![
            ("WG", wg as f64),
            ("LANES", lanes as f64),
            ("NR", nr as f64),
            ("TT", tt as f64),
        ]);
    }
    [
        ("matmul", SMEM_SRC.as_str()),
        ("matmul_sg", SUBGROUP_SRC.as_str()),
        ("matmul_xh", SMEM_F16_SRC.as_str()),
        ("matmul_sg_xh", SUBGROUP_F16_SRC.as_str()),
        ("matmul_pro", SMEM_PRO_SRC.as_str()),
        ("matmul_sg_pro", SUBGROUP_PRO_SRC.as_str()),
    ]
    .into_iter()
    .map(|(key, src)| super::AssembledShader::new(key, src).with(tilings.clone()))
    .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::test_util::{assert_close_rel, ctx, random};
    use super::*;
    use crate::tensor::{TensorView, encode};

    /// f64 reference over the dequantized weights; returns (values, per-output sum |x||w|).
    fn reference(x: &[f32], t: usize, w: &TensorView<'_>) -> (Vec<f64>, Vec<f64>) {
        let wf = w.to_f32_vec();
        let (n, k) = (w.rows(), w.cols());
        let mut y = vec![0f64; t * n];
        let mut mag = vec![0f64; t * n];
        for ti in 0..t {
            for r in 0..n {
                for c in 0..k {
                    let p = x[ti * k + c] as f64 * wf[r * k + c] as f64;
                    y[ti * n + r] += p;
                    mag[ti * n + r] += p.abs();
                }
            }
        }
        (y, mag)
    }

    /// GPU `matmul` of random weights of `dtype` against an f64 reference over the dequantized
    /// weights (also used by the LUT kernels' tests).
    pub(in crate::kernels::gpu) fn check(
        dtype: DType,
        n: usize,
        k: usize,
        t: usize,
        gs: usize,
        max_bytes: Option<u64>,
    ) {
        check_tiled(dtype, n, k, t, gs, max_bytes, None)
    }

    /// f16 activations (shader-f16 adapters): the kernels on an f16 copy of x equal the f64
    /// reference on the f16-rounded x, for every weight dtype, decode and prefill.
    #[test]
    fn gpu_matmul_takes_f16_activations() {
        let Some(ctx) = ctx() else { return };
        if !f16_activations(ctx) {
            eprintln!("SKIP: adapter without shader-f16");
            return;
        }
        let (n, k) = (37, 256);
        for dtype in [DType::Q4, DType::Q8, DType::F16, DType::F32] {
            for t in [1, 5] {
                let shape = [n, k];
                let bytes = encode(dtype, &random(n * k, 17), &shape, 32).unwrap();
                let view = TensorView::new(dtype, &shape, 32, &bytes).unwrap();
                let w = GpuWeight::upload(ctx, &view).unwrap();
                let x: Vec<f32> = random(t * k, 19)
                    .iter()
                    .map(|&v| half::f16::from_f32(v * 3.0).to_f32())
                    .collect();
                let (xf, xh) = (
                    GpuBuffer::from_f32(ctx, &x),
                    GpuBuffer::zeros(ctx, t * k, ElemType::F16),
                );
                let out = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
                let mut enc = Encoder::new(ctx);
                super::super::elementwise::to_f16(&mut enc, &xf, &xh, t * k).unwrap();
                matmul(&mut enc, &xh, t, &w, &out).unwrap();
                enc.submit().unwrap();
                let got = ctx.read_f32(&out).unwrap();
                let (want, mag) = reference(&x, t, &view);
                for i in 0..t * n {
                    let err = (got[i] as f64 - want[i]).abs();
                    assert!(err <= 1e-5 * mag[i] + 1e-6, "{dtype} t={t} out[{i}]: {err}");
                }
            }
        }
    }

    fn check_tiled(
        dtype: DType,
        n: usize,
        k: usize,
        t: usize,
        gs: usize,
        max_bytes: Option<u64>,
        tiling: Option<Tiling>,
    ) {
        let Some(ctx) = ctx() else { return };
        let shape = [n, k];
        let bytes = encode(dtype, &random(n * k, 7), &shape, gs).unwrap();
        let view = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
        let w = match max_bytes {
            Some(m) => GpuWeight::upload_with_limit(ctx, &view, m).unwrap(),
            None => GpuWeight::upload(ctx, &view).unwrap(),
        };
        if max_bytes.is_some() {
            assert!(w.n_parts() > 1, "expected a split weight");
        }
        let x = random(t * k, 11);
        let xb = GpuBuffer::from_f32(ctx, &x);
        let out = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
        let mut enc = Encoder::new(ctx);
        matmul_tiled(&mut enc, &xb, t, &w, &out, tiling).unwrap();
        enc.submit().unwrap();
        let got = ctx.read_f32(&out).unwrap();
        let (want, mag) = reference(&x, t, &view);
        for i in 0..t * n {
            let err = (got[i] as f64 - want[i]).abs();
            assert!(
                err <= 1e-5 * mag[i] + 1e-6,
                "{dtype} [{n}x{k}] t={t} out[{i}]: {} vs {} (err {err}, mag {})",
                got[i],
                want[i],
                mag[i]
            );
        }
        // f32 weights: the CPU kernel too (same math, other summation order)
        if dtype == DType::F32 {
            let mut cpu = vec![0f32; t * n];
            crate::kernels::cpu::matmul(&x, t, &view, &mut cpu);
            for i in 0..t * n {
                let err = (got[i] - cpu[i]).abs() as f64;
                assert!(err <= 1e-5 * mag[i] + 1e-6, "cpu vs gpu out[{i}]");
            }
        }
    }

    #[test]
    fn gpu_matmul_all_dtypes_decode_and_prefill() {
        for dtype in [DType::Q4, DType::Q8, DType::F16, DType::F32, DType::BF16] {
            for t in [1, 6] {
                check(dtype, 77, 256, t, 64, None);
            }
        }
        check(DType::Q4, 40, 2048, 1, 32, None);
        check(DType::Q8, 33, 96, 3, 32, None);
    }

    #[test]
    fn gpu_matmul_tilings() {
        for (wg, lanes, rows) in [(64, 4, 1), (128, 16, 2), (256, 64, 2), (256, 256, 1)] {
            let tiling = Some(Tiling { wg, lanes, rows });
            check_tiled(DType::Q4, 45, 512, 1, 32, None, tiling);
            check_tiled(DType::F16, 45, 512, 5, 0, None, tiling);
            check_tiled(DType::Q8, 45, 512, 1, 64, None, tiling);
            check_tiled(DType::F32, 45, 512, 1, 0, None, tiling);
            check_tiled(
                DType::Q4,
                45,
                512,
                6,
                32,
                None,
                Some(Tiling { wg, lanes, rows: 4 }),
            );
        }
    }

    #[test]
    fn gpu_matmul_split_weight() {
        // ~3 parts: every part writes its own rows of the output
        check(DType::Q4, 100, 128, 2, 32, Some(100 * 80 / 3));
        check(DType::F16, 50, 64, 1, 0, Some(50 * 128 / 2));
    }

    #[test]
    fn gpu_matmul_glu_matches_separate_ops() {
        let Some(ctx) = ctx() else { return };
        for (dtype, t) in [(DType::Q4, 1), (DType::Q4, 3), (DType::Q8, 1)] {
            let (n, k) = (71, 256); // odd: a row group with one valid row
            let shape = [n, k];
            let gb = encode(dtype, &random(n * k, 31), &shape, 32).unwrap();
            let ub = encode(dtype, &random(n * k, 32), &shape, 32).unwrap();
            let gv = TensorView::new(dtype, &shape, 32, &gb).unwrap();
            let uv = TensorView::new(dtype, &shape, 32, &ub).unwrap();
            let (gw, uw) = (
                GpuWeight::upload(ctx, &gv).unwrap(),
                GpuWeight::upload(ctx, &uv).unwrap(),
            );
            let x: Vec<f32> = random(t * k, 33).iter().map(|v| v * 0.3).collect();
            let xb = GpuBuffer::from_f32(ctx, &x);
            let out = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
            let up_out = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
            let mut enc = Encoder::new(ctx);
            matmul_glu(&mut enc, &xb, t, &gw, &uw, &out, &up_out).unwrap();
            enc.submit().unwrap();
            let got = ctx.read_f32(&out).unwrap();
            // reference: the separate GPU ops (same f32 math, other order)
            let (ra, rb) = (
                GpuBuffer::zeros(ctx, t * n, ElemType::F32),
                GpuBuffer::zeros(ctx, t * n, ElemType::F32),
            );
            let mut enc = Encoder::new(ctx);
            matmul(&mut enc, &xb, t, &gw, &ra).unwrap();
            matmul(&mut enc, &xb, t, &uw, &rb).unwrap();
            crate::kernels::gpu::elementwise::gelu_mul(&mut enc, &ra, &rb, t * n).unwrap();
            enc.submit().unwrap();
            let want = ctx.read_f32(&ra).unwrap();
            let what = format!("{dtype} t={t}");
            assert_close_rel(&got[..t * n], &want[..t * n], 1e-5, 0.0, &what);
        }
    }

    #[test]
    fn gpu_matmul3_matches_separate_matmuls() {
        let Some(ctx) = ctx() else { return };
        // odd row counts: row groups with one valid row, at each weight's end
        let shapes = [37usize, 9, 11];
        for (dtype, t, k) in [(DType::Q4, 1, 256), (DType::Q8, 1, 96), (DType::Q4, 3, 128)] {
            let views: Vec<Vec<u8>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &n)| encode(dtype, &random(n * k, 60 + i as u32), &[n, k], 32).unwrap())
                .collect();
            let ws: Vec<GpuWeight> = shapes
                .iter()
                .zip(&views)
                .map(|(&n, b)| {
                    let shape = [n, k];
                    let v = TensorView::new(dtype, &shape, 32, b).unwrap();
                    GpuWeight::upload(ctx, &v).unwrap()
                })
                .collect();
            let xb = GpuBuffer::from_f32(ctx, &random(t * k, 64));
            let outs: Vec<GpuBuffer> = shapes
                .iter()
                .map(|&n| GpuBuffer::zeros(ctx, t * n, ElemType::F32))
                .collect();
            let wants: Vec<GpuBuffer> = shapes
                .iter()
                .map(|&n| GpuBuffer::zeros(ctx, t * n, ElemType::F32))
                .collect();
            let mut enc = Encoder::new(ctx);
            let wr = [&ws[0], &ws[1], &ws[2]];
            matmul3(&mut enc, &xb, t, wr, [&outs[0], &outs[1], &outs[2]]).unwrap();
            for j in 0..3 {
                matmul(&mut enc, &xb, t, &ws[j], &wants[j]).unwrap();
            }
            enc.submit().unwrap();
            for j in 0..3 {
                let (g, w) = (
                    ctx.read_f32(&outs[j]).unwrap(),
                    ctx.read_f32(&wants[j]).unwrap(),
                );
                assert_close_rel(&g, &w, 1e-5, 0.0, &format!("{dtype} t={t} weight {j}"));
            }
        }
    }

    /// The decode matvecs with the residual add and norms in their prologue ([`AddNorm`]) equal
    /// the norm dispatch followed by the plain op, outputs and the new residual stream alike.
    #[test]
    fn gpu_add_norm_prologue_matches_separate_ops() {
        let Some(ctx) = ctx() else { return };
        let k = 256;
        let weight = |dtype: DType, n: usize, seed: u32| {
            let shape = [n, k];
            let bytes = encode(dtype, &random(n * k, seed), &shape, 32).unwrap();
            let v = TensorView::new(dtype, &shape, 32, &bytes).unwrap();
            GpuWeight::upload(ctx, &v).unwrap()
        };
        let x = GpuBuffer::from_f32(ctx, &random(k, 71));
        let a = GpuBuffer::from_f32(ctx, &random(k, 72));
        let (wpost, wpre) = (
            GpuBuffer::from_f32(ctx, &random(k, 73)),
            GpuBuffer::from_f32(ctx, &random(k, 74)),
        );
        let z = |n: usize| GpuBuffer::zeros(ctx, n, ElemType::F32);
        let aux = GpuBuffer::from_f32(ctx, &random(64, 75));
        for (plus_one, with_pre, scale) in
            [(false, true, 1.0), (true, true, 0.75), (false, false, 1.5)]
        {
            let post = NormWeight {
                w: Some(&wpost),
                eps: 1e-6,
                plus_one,
            };
            let pre = with_pre.then_some(NormWeight {
                w: Some(&wpre),
                eps: 1e-6,
                plus_one,
            });
            // the reference stream and input, by the separate norm ops
            let (x_ref, h_ref) = (z(k), z(k));
            let mut enc = Encoder::new(ctx);
            enc.copy(&x, 0, &x_ref, 0, k).unwrap();
            let input = match pre {
                Some(pre) => {
                    norm::rmsnorm_add_norm(&mut enc, &a, &x_ref, 1, k, post, scale, pre, &h_ref)
                        .unwrap();
                    &h_ref
                }
                None => {
                    let into = norm::Into::AddScaled(scale);
                    norm::rmsnorm_to(&mut enc, &a, &x_ref, 1, k, post, into).unwrap();
                    &x_ref
                }
            };
            enc.submit().unwrap();
            let want_x = ctx.read_f32(&x_ref).unwrap();
            let check = |what: &str, got: &GpuBuffer, want: &GpuBuffer, x_out: &GpuBuffer| {
                let (g, w) = (ctx.read_f32(got).unwrap(), ctx.read_f32(want).unwrap());
                assert_close_rel(&g, &w, 2e-5, 1e-6, what);
                let xo = ctx.read_f32(x_out).unwrap();
                let d = super::super::test_util::max_abs_diff(&xo, &want_x);
                assert!(d <= 1e-5, "{what}: new stream off by {d}");
            };
            // the fused ops, each with a fresh buffer for the new stream
            let fresh = || (z(k), z(k));
            // single weights of every dtype (odd rows)
            for dtype in [DType::Q4, DType::Q8, DType::F16, DType::F32] {
                let w = weight(dtype, 37, 76);
                let (got, want) = (z(37), z(37));
                let (x_out, h) = fresh();
                let pro = AddNorm {
                    a: &a,
                    post,
                    scale,
                    pre,
                    x_out: &x_out,
                    h: &h,
                };
                let mut enc = Encoder::new(ctx);
                matvec_add_norm(&mut enc, &x, &w, &got, &pro).unwrap();
                matmul(&mut enc, input, 1, &w, &want).unwrap();
                enc.submit().unwrap();
                check(
                    &format!("matvec {dtype} {plus_one} {with_pre}"),
                    &got,
                    &want,
                    &x_out,
                );
            }
            // q/k/v
            for dtype in [DType::Q4, DType::Q8] {
                let ws = [
                    weight(dtype, 37, 77),
                    weight(dtype, 9, 78),
                    weight(dtype, 9, 79),
                ];
                let (got, want) = ([z(37), z(9), z(9)], [z(37), z(9), z(9)]);
                let (x_out, h) = fresh();
                let pro = AddNorm {
                    a: &a,
                    post,
                    scale,
                    pre,
                    x_out: &x_out,
                    h: &h,
                };
                let mut enc = Encoder::new(ctx);
                let wr = [&ws[0], &ws[1], &ws[2]];
                let outs = [&got[0], &got[1], &got[2]];
                matmul3_add_norm(&mut enc, &x, wr, outs, &pro).unwrap();
                matmul3(&mut enc, input, 1, wr, [&want[0], &want[1], &want[2]]).unwrap();
                enc.submit().unwrap();
                for j in 0..3 {
                    check(&format!("matmul3 {dtype} {j}"), &got[j], &want[j], &x_out);
                }
            }
            // the gated MLP and the per-layer-input gate
            let (gw, uw) = (weight(DType::Q4, 41, 80), weight(DType::Q4, 41, 81));
            let (got, want, scratch) = (z(41), z(41), z(41));
            let (x_out, h) = fresh();
            let pro = AddNorm {
                a: &a,
                post,
                scale,
                pre,
                x_out: &x_out,
                h: &h,
            };
            let mut enc = Encoder::new(ctx);
            matmul_glu_add_norm(&mut enc, &x, (&gw, &uw), (&got, &scratch), &pro).unwrap();
            matmul_glu(&mut enc, input, 1, &gw, &uw, &want, &scratch).unwrap();
            enc.submit().unwrap();
            check("glu", &got, &want, &x_out);
            let pw = weight(DType::Q4, 21, 82);
            let (got, want) = (z(21), z(21));
            let (x_out, h) = fresh();
            let pro = AddNorm {
                a: &a,
                post,
                scale,
                pre,
                x_out: &x_out,
                h: &h,
            };
            let mut enc = Encoder::new(ctx);
            matvec_gelu_mul_add_norm(&mut enc, &x, &pw, &got, (&aux, 5), &pro).unwrap();
            matvec_gelu_mul(&mut enc, input, &pw, &want, &aux, 5).unwrap();
            enc.submit().unwrap();
            check("gelu_mul", &got, &want, &x_out);
        }
    }

    #[test]
    fn gpu_matvec_gelu_mul_matches_separate_ops() {
        let Some(ctx) = ctx() else { return };
        for dtype in [DType::Q4, DType::Q8] {
            let (n, k, off) = (40, 128, 17);
            let shape = [n, k];
            let bytes = encode(dtype, &random(n * k, 51), &shape, 32).unwrap();
            let view = TensorView::new(dtype, &shape, 32, &bytes).unwrap();
            let w = GpuWeight::upload(ctx, &view).unwrap();
            let xb = GpuBuffer::from_f32(ctx, &random(k, 52));
            let aux = GpuBuffer::from_f32(ctx, &random(off + n + 9, 53));
            let (got, want) = (
                GpuBuffer::zeros(ctx, n, ElemType::F32),
                GpuBuffer::zeros(ctx, n, ElemType::F32),
            );
            let mut enc = Encoder::new(ctx);
            matvec_gelu_mul(&mut enc, &xb, &w, &got, &aux, off).unwrap();
            matmul(&mut enc, &xb, 1, &w, &want).unwrap();
            crate::kernels::gpu::elementwise::gelu_mul_slice(&mut enc, &want, 1, n, &aux, off, n)
                .unwrap();
            enc.submit().unwrap();
            let (g, wv) = (ctx.read_f32(&got).unwrap(), ctx.read_f32(&want).unwrap());
            assert_close_rel(&g[..n], &wv[..n], 1e-5, 0.0, &format!("{dtype}"));
        }
    }
}
