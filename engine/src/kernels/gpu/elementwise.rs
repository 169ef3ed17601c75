//! Element-wise ops of the text stack: the gated-GELU activation, logit soft-capping and the
//! residual add (the CPU `gelu_mul`, `softcap`, `add`). One thread per element.

use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

const SHADER: &str = include_str!("elementwise.wgsl");

fn check(op: &'static str, n: usize, bufs: &[&GpuBuffer]) -> Result<(), GpuError> {
    for b in bufs {
        if b.elem != ElemType::F32 || b.len < n {
            return Err(shape_err(op, format!("buffer of {} for {n} values", b.len)));
        }
    }
    Ok(())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` for `i < n`.
pub fn gelu_mul(
    enc: &mut Encoder<'_>,
    gate: &GpuBuffer,
    up: &GpuBuffer,
    n: usize,
) -> Result<(), GpuError> {
    check("gelu_mul", n, &[gate, up])?;
    record_gelu_mul(enc, gate, up, n, [n, 0, 0])
}

/// `gate[r, c] = gelu_tanh(gate[r, c]) * up[off + r * stride + c]` over `rows x cols`: the
/// gate times a column slice of a wider matrix (Gemma 4's per-layer inputs), without a copy.
pub fn gelu_mul_slice(
    enc: &mut Encoder<'_>,
    gate: &GpuBuffer,
    rows: usize,
    cols: usize,
    up: &GpuBuffer,
    off: usize,
    stride: usize,
) -> Result<(), GpuError> {
    let n = rows * cols;
    check("gelu_mul_slice", n, &[gate])?;
    let end = off + rows.saturating_sub(1) * stride + cols;
    if cols == 0 || stride < cols && rows > 1 {
        return Err(shape_err(
            "gelu_mul_slice",
            format!("{cols} columns, stride {stride}"),
        ));
    }
    check("gelu_mul_slice", end, &[up])?;
    record_gelu_mul(enc, gate, up, n, [cols, off, stride])
}

fn record_gelu_mul(
    enc: &mut Encoder<'_>,
    gate: &GpuBuffer,
    up: &GpuBuffer,
    n: usize,
    [cols, off, stride]: [usize; 3],
) -> Result<(), GpuError> {
    if n == 0 {
        return Ok(());
    }
    let pipeline = enc.ctx().pipeline("elementwise", SHADER, "gelu_mul", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, 0, cols as u32, off as u32, stride as u32],
        &[&gate.buf, &up.buf],
        n.div_ceil(256) as u32,
    );
    Ok(())
}

/// `dst[i] += src[i]` for `i < n`.
pub fn add(
    enc: &mut Encoder<'_>,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    n: usize,
) -> Result<(), GpuError> {
    check("add", n, &[dst, src])?;
    let pipeline = enc.ctx().pipeline("elementwise", SHADER, "add", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, 0, n as u32, 0, 0],
        &[&dst.buf, &src.buf],
        n.div_ceil(256) as u32,
    );
    Ok(())
}

/// `x[i] = cap * tanh(x[i] / cap)` for `i < n`.
pub fn softcap(enc: &mut Encoder<'_>, x: &GpuBuffer, n: usize, cap: f32) -> Result<(), GpuError> {
    check("softcap", n, &[x])?;
    if cap.is_nan() || cap <= 0.0 {
        return Err(shape_err("softcap", format!("cap {cap}")));
    }
    let pipeline = enc.ctx().pipeline("elementwise", SHADER, "softcap", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, cap.to_bits(), n as u32, 0, 0],
        &[&x.buf],
        n.div_ceil(256) as u32,
    );
    Ok(())
}

/// `x *= s` over the first `n` values (Gemma 4's layer scalar and PLE scalings).
pub fn scale(enc: &mut Encoder<'_>, x: &GpuBuffer, n: usize, s: f32) -> Result<(), GpuError> {
    check("scale", n, &[x])?;
    let pipeline = enc.ctx().pipeline("elementwise", SHADER, "scale", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, s.to_bits(), n as u32, 0, 0],
        &[&x.buf],
        n.div_ceil(256) as u32,
    );
    Ok(())
}

/// `x[i] = clamp(x[i], lo, hi)` for `i < n` (the towers' clipped linears; infinite bounds are
/// fine and leave that side open).
pub fn clamp(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    n: usize,
    lo: f32,
    hi: f32,
) -> Result<(), GpuError> {
    check("clamp", n, &[x])?;
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(shape_err("clamp", format!("bounds {lo}..{hi}")));
    }
    if n == 0 {
        return Ok(());
    }
    let pipeline = enc
        .ctx()
        .pipeline("elementwise", SHADER, "clamp_range", &[]);
    enc.dispatch(
        pipeline,
        &[n as u32, lo.to_bits(), n as u32, 0, 0, hi.to_bits()],
        &[&x.buf],
        n.div_ceil(256) as u32,
    );
    Ok(())
}

/// `dst = f16(src)` for the first `n` values (`n` even; `dst` an f16 buffer): activations
/// rounded to f16 for [`super::matmul::matmul`].
pub fn to_f16(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    n: usize,
) -> Result<(), GpuError> {
    check("to_f16", n, &[src])?;
    if dst.elem != ElemType::F16 || dst.len < n || !n.is_multiple_of(2) {
        return Err(shape_err(
            "to_f16",
            format!("{n} values into f16[{}]", dst.len),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let pipeline = enc.ctx().pipeline("elementwise", SHADER, "to_f16", &[]);
    let pairs = n / 2;
    enc.dispatch(
        pipeline,
        &[pairs as u32, 0, 0, 0, 0],
        &[&src.buf, &dst.buf],
        pairs.div_ceil(256) as u32,
    );
    Ok(())
}

/// The assembled source (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![super::AssembledShader::new("elementwise", SHADER)]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;

    #[test]
    fn gpu_elementwise_match_cpu() {
        let Some(ctx) = ctx() else { return };
        let n = 3000;
        let g: Vec<f32> = random(n, 1).iter().map(|v| v * 12.0).collect();
        let u = random(n, 2);
        let mut x: Vec<f32> = random(n, 3).iter().map(|v| v * 100.0).collect();
        x[0] = 1e30;
        x[1] = -1e30;
        let (gb, ub, xb) = (
            GpuBuffer::from_f32(ctx, &g),
            GpuBuffer::from_f32(ctx, &u),
            GpuBuffer::from_f32(ctx, &x),
        );
        let sum = GpuBuffer::from_f32(ctx, &u);
        let mut enc = Encoder::new(ctx);
        gelu_mul(&mut enc, &gb, &ub, n).unwrap();
        softcap(&mut enc, &xb, n, 30.0).unwrap();
        add(&mut enc, &sum, &ub, n).unwrap();
        enc.submit().unwrap();

        let mut want = g.clone();
        cpu::gelu_mul(&mut want, &u);
        let got = ctx.read_f32(&gb).unwrap();
        let tol = want.iter().fold(0f32, |m, v| m.max(v.abs())) * 2e-6;
        assert!(max_abs_diff(&got, &want) <= tol, "gelu_mul");

        let mut want = x.clone();
        cpu::softcap(&mut want, 30.0);
        let got = ctx.read_f32(&xb).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4, "softcap");

        let got = ctx.read_f32(&sum).unwrap();
        let want: Vec<f32> = u.iter().map(|v| v + v).collect();
        assert_eq!(got, want, "add");
    }

    #[test]
    fn gpu_clamp_clips_both_sides_and_open_bounds() {
        let Some(ctx) = ctx() else { return };
        let n = 700;
        let x: Vec<f32> = random(n, 11).iter().map(|v| v * 10.0).collect();
        let (a, b) = (GpuBuffer::from_f32(ctx, &x), GpuBuffer::from_f32(ctx, &x));
        let mut enc = Encoder::new(ctx);
        clamp(&mut enc, &a, n, -2.5, 3.0).unwrap();
        clamp(&mut enc, &b, n - 5, f32::NEG_INFINITY, 1.0).unwrap();
        enc.submit().unwrap();
        let want: Vec<f32> = x.iter().map(|v| v.clamp(-2.5, 3.0)).collect();
        assert_eq!(ctx.read_f32(&a).unwrap(), want);
        let mut want: Vec<f32> = x.iter().map(|v| v.min(1.0)).collect();
        want[n - 5..].copy_from_slice(&x[n - 5..]);
        assert_eq!(ctx.read_f32(&b).unwrap(), want);
        assert!(clamp(&mut Encoder::new(ctx), &a, n, 2.0, 1.0).is_err());
    }

    #[test]
    fn gpu_to_f16_rounds_like_half() {
        let Some(ctx) = ctx() else { return };
        let n = 1002;
        let x: Vec<f32> = random(n, 13).iter().map(|v| v * 300.0).collect();
        let (src, dst) = (
            GpuBuffer::from_f32(ctx, &x),
            GpuBuffer::zeros(ctx, n, ElemType::F16),
        );
        let mut enc = Encoder::new(ctx);
        to_f16(&mut enc, &src, &dst, n).unwrap();
        enc.submit().unwrap();
        let want: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(ctx.read_f32(&dst).unwrap(), want);
        assert!(to_f16(&mut Encoder::new(ctx), &src, &dst, 3).is_err());
    }

    #[test]
    fn gpu_scale_matches_cpu() {
        let Some(ctx) = ctx() else { return };
        let n = 1000;
        let x = random(n, 8);
        let xb = GpuBuffer::from_f32(ctx, &x);
        let mut enc = Encoder::new(ctx);
        // only the first n - 10 values are scaled
        scale(&mut enc, &xb, n - 10, 0.37).unwrap();
        enc.submit().unwrap();
        let mut want = x.clone();
        cpu::scale(&mut want[..n - 10], 0.37);
        assert_eq!(ctx.read_f32(&xb).unwrap(), want);
    }

    #[test]
    fn gpu_gelu_mul_slice_reads_a_column_slice() {
        let Some(ctx) = ctx() else { return };
        let (rows, cols, stride, off) = (3, 40, 130, 25);
        let g = random(rows * cols, 4);
        let wide = random(rows * stride + off, 5);
        let (gb, wb) = (
            GpuBuffer::from_f32(ctx, &g),
            GpuBuffer::from_f32(ctx, &wide),
        );
        let mut enc = Encoder::new(ctx);
        gelu_mul_slice(&mut enc, &gb, rows, cols, &wb, off, stride).unwrap();
        enc.submit().unwrap();
        let mut want = g.clone();
        for r in 0..rows {
            let up = &wide[off + r * stride..off + r * stride + cols];
            cpu::gelu_mul(&mut want[r * cols..(r + 1) * cols], up);
        }
        let tol = want.iter().fold(0f32, |m, v| m.max(v.abs())) * 2e-6;
        assert!(max_abs_diff(&ctx.read_f32(&gb).unwrap(), &want) <= tol);
        let mut enc = Encoder::new(ctx);
        assert!(gelu_mul_slice(&mut enc, &gb, rows, cols, &wb, off + 200, stride).is_err());
    }
}
