//! `y[t, n] = x[t, k] · w[n, k]` for many tokens (prefill chunks, the towers' frames and
//! patches): a 64 x 64 register-tiled GEMM (`gemm.wgsl`) for f32, f16, q8 and q4 weights.
//! [`super::matmul::matmul`] takes it for `t >= GEMM_MIN_TOKENS` where [`fits`] (several times
//! faster there than its decode-shaped kernels, which reload the weights every 4 tokens);
//! `CELLM_GPU_NO_GEMM=1` turns it off for A/B timings.

use super::{Encoder, GpuBuffer, GpuError, GpuWeight};
use crate::tensor::DType;

const SHADER: &str = include_str!("gemm.wgsl");

/// Fewest tokens for which the tiled kernel is used.
pub const GEMM_MIN_TOKENS: usize = 32;

static OFF: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("CELLM_GPU_NO_GEMM").is_ok_and(|v| v == "1"));

/// The kernel's weight code: 0 f32, 1 f16, 2 q8, 3 q4.
fn code(dtype: DType) -> Option<u32> {
    match dtype {
        DType::F32 => Some(0),
        DType::F16 => Some(1),
        DType::Q8 => Some(2),
        DType::Q4 => Some(3),
        _ => None,
    }
}

/// Whether `t` rows times `w` take the tiled kernel: enough rows, `k % 32 == 0`, and quantized
/// groups that are whole 32-column steps.
pub fn fits(w: &GpuWeight, t: usize) -> bool {
    let quantized = matches!(w.dtype, DType::Q8 | DType::Q4);
    code(w.dtype).is_some()
        && !*OFF
        && t >= GEMM_MIN_TOKENS
        && w.cols.is_multiple_of(32)
        && (!quantized || (w.group_size > 0 && w.group_size.is_multiple_of(32)))
}

/// Value bounds of a clipped linear (`Gemma4ClippableLinear`): x is clamped to `input` as it
/// is loaded, y to `output` as it is stored; `None` leaves that side open.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clip {
    pub input: Option<(f32, f32)>,
    pub output: Option<(f32, f32)>,
}

/// Records the tiled product (callers check [`fits`] and the buffers' shapes).
pub(super) fn record(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
) -> Result<(), GpuError> {
    record_clipped(enc, x, t, w, out, Clip::default())
}

/// [`record`] with the clamps of `clip` on the loads and stores (shapes checked by the caller,
/// `fits(w, t)` true).
pub fn record_clipped(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
    clip: Clip,
) -> Result<(), GpuError> {
    // open sides as +-f32::MAX: shaders never see an infinity (some compilers assume none)
    let bits = |b: Option<(f32, f32)>| {
        let (lo, hi) = b.unwrap_or((-f32::MAX, f32::MAX));
        [lo.max(-f32::MAX).to_bits(), hi.min(f32::MAX).to_bits()]
    };
    let ([in_lo, in_hi], [out_lo, out_hi]) = (bits(clip.input), bits(clip.output));
    let Some(dtype) = code(w.dtype) else {
        return Err(GpuError::Unsupported(format!(
            "gemm of {} weights",
            w.dtype
        )));
    };
    let pipeline = enc.ctx().pipeline("gemm", SHADER, "gemm", &[]);
    for part in &w.parts {
        let params = [
            w.cols as u32,
            part.rows as u32,
            t as u32,
            w.rows as u32,
            part.row0 as u32,
            w.group_size.max(1) as u32,
            part.scale_word as u32,
            dtype,
            in_lo,
            in_hi,
            out_lo,
            out_hi,
        ];
        let tiles = part.rows.div_ceil(64) * t.div_ceil(64);
        enc.dispatch(
            pipeline.clone(),
            &params,
            &[&out.buf, &x.buf, &part.buf],
            tiles as u32,
        );
    }
    Ok(())
}

/// The assembled source (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![super::AssembledShader::new("gemm", SHADER)]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::super::{ElemType, GpuBuffer, GpuWeight};
    use super::*;
    use crate::tensor::{TensorView, encode};

    #[test]
    fn gpu_gemm_matches_cpu_matmul_for_every_dtype() {
        let Some(ctx) = ctx() else { return };
        // t and n not multiples of the 64 x 64 tile; a weight split into row parts
        let (t, n, k) = (70, 100, 128);
        let x = random(t * k, 20);
        let wv = random(n * k, 21);
        let shape = [n, k];
        for (dtype, gs, limit) in [
            (DType::F32, 0, 1e-4),
            (DType::F16, 0, 1e-4),
            (DType::Q8, 32, 1e-4),
            (DType::Q4, 32, 1e-4),
            (DType::Q4, 64, 1e-4),
        ] {
            let bytes = encode(dtype, &wv, &shape, gs).unwrap();
            let view = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
            // the exact product with the stored weights (the CPU matmul quantizes activations)
            let deq = view.to_f32_vec();
            let mut want = vec![0f32; t * n];
            for (i, o) in want.iter_mut().enumerate() {
                let (ti, ni) = (i / n, i % n);
                *o = (0..k)
                    .map(|j| x[ti * k + j] as f64 * deq[ni * k + j] as f64)
                    .sum::<f64>() as f32;
            }
            let xb = GpuBuffer::from_f32(ctx, &x);
            for limit_bytes in [u64::MAX, bytes.len() as u64 / 3 + 64] {
                let w = GpuWeight::upload_with_limit(ctx, &view, limit_bytes).unwrap();
                let out = GpuBuffer::zeros(ctx, t * n, ElemType::F32);
                let mut enc = Encoder::new(ctx);
                assert!(fits(&w, t));
                record(&mut enc, &xb, t, &w, &out).unwrap();
                enc.submit().unwrap();
                let err = max_abs_diff(&ctx.read_f32(&out).unwrap(), &want);
                let parts = w.n_parts();
                assert!(err < limit, "{dtype} gs {gs}, {parts} parts: {err}");
                assert!(limit_bytes == u64::MAX || parts > 1);
            }
        }
    }
}
