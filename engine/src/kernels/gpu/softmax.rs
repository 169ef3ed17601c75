//! Numerically stable softmax (the CPU `softmax`), in place, one workgroup per row.

use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

static SHADER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_block_reduce(include_str!("softmax.wgsl")));

/// Records an in-place softmax of each of `rows` rows of `n` values of `x`.
pub fn softmax(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    rows: usize,
    n: usize,
) -> Result<(), GpuError> {
    if x.elem != ElemType::F32 || x.len < rows * n {
        return Err(shape_err("softmax", format!("x[{}] for {rows}x{n}", x.len)));
    }
    let pipeline = enc.ctx().pipeline("softmax", &SHADER, "softmax", &[]);
    enc.dispatch(pipeline, &[n as u32, rows as u32], &[&x.buf], rows as u32);
    Ok(())
}

/// The assembled source (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![super::AssembledShader::new("softmax", SHADER.as_str())]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;

    #[test]
    fn gpu_softmax_matches_cpu() {
        let Some(ctx) = ctx() else { return };
        let (rows, n) = (4, 1000);
        let mut x: Vec<f32> = random(rows * n, 4).iter().map(|v| v * 30.0).collect();
        x[5] = f32::NEG_INFINITY;
        // a fully masked row becomes zeros
        x[2 * n..3 * n].fill(f32::NEG_INFINITY);
        let xb = GpuBuffer::from_f32(ctx, &x);
        let mut enc = Encoder::new(ctx);
        softmax(&mut enc, &xb, rows, n).unwrap();
        enc.submit().unwrap();
        let got = ctx.read_f32(&xb).unwrap();
        let mut want = x.clone();
        for row in want.chunks_mut(n) {
            cpu::softmax(row);
        }
        assert!(max_abs_diff(&got, &want) < 1e-6);
        assert_eq!(got[5], 0.0);
        assert!(got[2 * n..3 * n].iter().all(|&v| v == 0.0));
    }
}
