//! `y[t, n] = sum_k x[t, k] * W[n, k]` for lut4/lut6 (palettized) weights.
//!
//! [`super::matmul::matmul`] routes lut dtypes here. Each weight buffer (a row range, see
//! [`GpuWeight`]) holds its index rows and then the palettes of the row groups it touches; the
//! shader copies each row's palette into workgroup memory as f32 and multiplies the looked-up
//! weights with f32 activations, so results match the scalar dequantize reference up to f32
//! summation order.

use super::{Encoder, GpuBuffer, GpuError, GpuWeight, shape_err};
use crate::tensor::{DType, lut};

const SHADER: &str = include_str!("matmul_lut.wgsl");

/// Lanes per row and workgroup size for rows of `blocks` 32-value blocks: about two blocks per
/// lane, at most 16 rows per workgroup (the shader's palette slots).
fn split(blocks: usize) -> (u32, u32) {
    let mut lanes = 4u32;
    while lanes < 32 && (lanes as usize) * 2 <= blocks {
        lanes *= 2;
    }
    (lanes, (lanes * 16).min(256))
}

/// Records `out[t, n] = sum_k x[t, k] * w[n, k]` for a lut4/lut6 `w`.
pub fn matmul_lut(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
) -> Result<(), GpuError> {
    let (n, k) = (w.rows, w.cols);
    if !w.dtype.is_lut() {
        return Err(shape_err(
            "matmul_lut",
            format!("{} is not a lut dtype", w.dtype),
        ));
    }
    if k % 32 != 0 || w.group_size == 0 {
        return Err(GpuError::Unsupported(format!(
            "{} weights need cols % 32 == 0 and a group size, got {k} / {}",
            w.dtype, w.group_size
        )));
    }
    if !super::matmul::check_io("matmul_lut", x, t, k, out, n)? {
        return Ok(());
    }
    let (lanes, wg) = split(k / 32);
    let tt = if t > 1 { 4 } else { 1 };
    let pipeline = enc.ctx().pipeline(
        "matmul_lut",
        SHADER,
        "matmul_lut",
        &[
            ("WG", wg as f64),
            ("LANES", lanes as f64),
            ("TT", tt as f64),
        ],
    );
    let rows_per_group = (wg / lanes) as usize;
    let wpr = lut::row_bytes(w.dtype, k) / 4;
    for part in &w.parts {
        if part.rows == 0 {
            continue;
        }
        let params = [
            k as u32,
            part.rows as u32,
            t as u32,
            n as u32,
            part.row0 as u32,
            wpr as u32,
            w.group_size as u32,
            part.scale_word as u32,
            (part.row0 / w.group_size) as u32,
            u32::from(w.dtype == DType::Lut6),
            0,
            0,
        ];
        let groups = part.rows.div_ceil(rows_per_group) as u32;
        enc.dispatch(
            pipeline.clone(),
            &params,
            &[&part.buf, &x.buf, &out.buf],
            groups,
        );
    }
    Ok(())
}

/// The assembled source with the splits [`split`] makes (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    let mut sets = Vec::new();
    for blocks in [1, 8, 48, 192] {
        let (lanes, wg) = split(blocks);
        for tt in [1.0, 4.0] {
            sets.push(vec![("WG", wg as f64), ("LANES", lanes as f64), ("TT", tt)]);
        }
    }
    vec![super::AssembledShader::new("matmul_lut", SHADER).with(sets)]
}

#[cfg(test)]
mod tests {
    // the generic matmul check: GPU result against an f64 reference of the dequantized weights
    use super::super::matmul::tests::check;
    use super::*;

    #[test]
    fn gpu_lut_matmul_matches_reference() {
        for dtype in [DType::Lut4, DType::Lut6] {
            for t in [1, 6] {
                check(dtype, 77, 256, t, 8, None);
            }
            check(dtype, 40, 2048, 1, 1, None);
            check(dtype, 33, 96, 3, 100, None);
            check(dtype, 19, 32, 1, 5, None);
        }
    }

    #[test]
    fn gpu_lut_split_weight() {
        // ~3 parts whose row ranges do not start on palette boundaries
        for dtype in [DType::Lut4, DType::Lut6] {
            let row = lut::row_bytes(dtype, 128) as u64 + 128;
            check(dtype, 100, 128, 2, 7, Some(100 * row / 3));
        }
    }
}

#[cfg(test)]
mod speed {
    use super::super::buffer::ElemType;
    use super::super::test_util::{ctx, random};
    use super::*;
    use crate::tensor::{TensorView, encode};

    /// `cargo test --release -p cellm-engine --lib gpu_lut_speed -- --ignored --nocapture`:
    /// decode matvec GB/s of lut4/lut6 (group 8) against q4 (group 32) on the adapter.
    #[test]
    #[ignore]
    fn gpu_lut_speed() {
        let Some(ctx) = ctx() else { return };
        for (n, k) in [(262144usize, 640usize), (6144, 1536), (1536, 6144)] {
            let values = random(n * k, 3);
            let shape = [n, k];
            for (dtype, gs) in [(DType::Q4, 32), (DType::Lut4, 8), (DType::Lut6, 8)] {
                let bytes = encode(dtype, &values, &shape, gs).unwrap();
                let view = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
                let w = GpuWeight::upload(ctx, &view).unwrap();
                let xb = GpuBuffer::from_f32(ctx, &random(k, 5));
                let out = GpuBuffer::zeros(ctx, n, ElemType::F32);
                let reps = 50;
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let t0 = std::time::Instant::now();
                    let mut enc = Encoder::new(ctx);
                    for _ in 0..reps {
                        super::super::matmul::matmul(&mut enc, &xb, 1, &w, &out).unwrap();
                    }
                    enc.submit().unwrap();
                    ctx.read_f32_n(&out, 1).unwrap();
                    best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
                }
                eprintln!(
                    "{dtype} [{n}x{k}]: {:.1} us, {:.0} GB/s",
                    best * 1e6,
                    bytes.len() as f64 / best / 1e9
                );
            }
        }
    }
}
