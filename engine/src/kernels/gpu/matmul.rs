//! `y[t, n] = sum_k x[t, k] * W[n, k]` for q4, q8, f16 and f32 weights (the CPU `matmul`).
//!
//! Each weight buffer (a row range, see [`GpuWeight`]) gets one dispatch of 256-thread
//! workgroups; `LANES` threads share a row, each reading 16 contiguous bytes per step so a row
//! is read with coalesced loads, and the partial sums meet in workgroup memory. Quantized
//! weights are dequantized in registers (`(q - 8) * scale`, f32) and multiplied with f32
//! activations, so the result equals the scalar dequantize reference up to f32 summation order.

use super::{Encoder, GpuBuffer, GpuError, GpuWeight, buffer::ElemType, shape_err};
use crate::tensor::DType;

const SHADER: &str = include_str!("matmul.wgsl");

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
    /// The default for a row of `units` 16-byte units: enough units per lane to keep several
    /// loads in flight.
    pub fn for_units(units: usize) -> Tiling {
        // From the H100 sweep (`gpu_bench --sweep`): 4..8 units per lane and two rows per
        // row group were best or near best for every dtype and shape measured.
        let mut lanes = 4u32;
        while lanes < 64 && (lanes as usize) * 2 * 4 <= units {
            lanes *= 2;
        }
        Tiling {
            wg: 256,
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

/// [`matmul`] with an explicit [`Tiling`] (None: [`Tiling::for_units`]).
pub fn matmul_tiled(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
    tiling: Option<Tiling>,
) -> Result<(), GpuError> {
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
    if x.elem != ElemType::F32 || out.elem != ElemType::F32 {
        return Err(shape_err("matmul", "x and out must be f32 buffers"));
    }
    if x.len < t * k || out.len < t * n {
        return Err(shape_err(
            "matmul",
            format!(
                "x has {} (needs {}), out has {} (needs {})",
                x.len,
                t * k,
                out.len,
                t * n
            ),
        ));
    }
    if t == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let u = units(w);
    let tiling = tiling.unwrap_or_else(|| Tiling::for_units(u));
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
    let pipeline = enc.ctx().pipeline(
        "matmul",
        SHADER,
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

#[cfg(test)]
mod tests {
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

    fn check(dtype: DType, n: usize, k: usize, t: usize, gs: usize, max_bytes: Option<u64>) {
        check_tiled(dtype, n, k, t, gs, max_bytes, None)
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
}
