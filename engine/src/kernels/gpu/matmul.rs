//! `y[t, n] = sum_k x[t, k] * W[n, k]` for q4, q8, f16 and f32 weights (the CPU `matmul`).
//!
//! Each weight buffer (a row range, see [`GpuWeight`]) gets one dispatch of 256-thread
//! workgroups; `LANES` threads share a row, each reading 16 contiguous bytes per step so a row
//! is read with coalesced loads, and the partial sums meet in workgroup memory. Quantized
//! weights are dequantized in registers (`(q - 8) * scale`, f32) and multiplied with f32
//! activations, so the result equals the scalar dequantize reference up to f32 summation order.

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
    let u = units(w);
    let tiling = tiling.unwrap_or_else(|| {
        let t = Tiling::for_shape(n, u);
        // Long rows (the MLP's down projection) keep 64 lanes, reduced through workgroup
        // memory: ~25% faster on the H100 than 32 lanes with subgroup shuffles.
        let long = t.lanes == 64 && u >= 192;
        Tiling {
            lanes: if long {
                64
            } else {
                fit_lanes(enc.ctx(), t.lanes)
            },
            ..t
        }
    });
    tiling.check()?;
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
    let (key, src) = source_for(enc.ctx(), tiling.lanes, x.elem);
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
        let bufs: &[&wgpu::Buffer] = if quantized {
            &[&part.buf, &x.buf, &out.buf, &part.buf]
        } else {
            &[&part.buf, &x.buf, &out.buf]
        };
        enc.dispatch(pipeline.clone(), &params, bufs, groups);
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
    let fused = t == 1
        && gate.dtype == DType::Q4
        && up.dtype == DType::Q4
        && (gate.rows, gate.cols, gate.group_size) == (up.rows, up.cols, up.group_size)
        && gate.parts.len() == 1
        && up.parts.len() == 1
        && gate.parts[0].scale_word == up.parts[0].scale_word;
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
    let u = units(gate);
    // Two rows of each per row group (each x load serves four weight units), 16 lanes: the best
    // plain-matvec tiling of the E2B MLP shapes in the H100 sweep.
    let lanes = fit_lanes(enc.ctx(), 16.min(u.next_power_of_two().max(4) as u32));
    let (wg, nr) = (128u32, 2u32);
    let (key, src) = source(enc.ctx(), lanes);
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
    enc.dispatch(
        pipeline,
        &params,
        &[&g.buf, &x.buf, &out.buf, &g.buf, &v.buf, &v.buf],
        groups,
    );
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
    let (n, k) = (w.rows, w.cols);
    if w.dtype != DType::Q4 || w.parts.len() != 1 {
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
    let u = units(w);
    let lanes = fit_lanes(enc.ctx(), Tiling::for_shape(n / 2, u).lanes);
    let wg = 128u32;
    let (key, src) = source(enc.ctx(), lanes);
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
    enc.dispatch(
        pipeline,
        &params,
        &[&part.buf, &x.buf, &out.buf, &part.buf, &aux.buf],
        groups,
    );
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::test_util::{ctx, random};
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
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for i in 0..t * n {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-5 * scale,
                    "{dtype} t={t} [{i}]: {} vs {}",
                    got[i],
                    want[i]
                );
            }
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
            let scale = wv.iter().fold(0f32, |m, v| m.max(v.abs()));
            for i in 0..n {
                assert!((g[i] - wv[i]).abs() <= 1e-5 * scale, "{dtype} [{i}]");
            }
        }
    }
}
