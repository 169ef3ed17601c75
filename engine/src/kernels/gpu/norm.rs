//! RMSNorm in both Gemma flavours (the CPU `rmsnorm`), in place, one workgroup per row.

use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

const SHADER: &str = include_str!("norm.wgsl");

/// Records an in-place RMSNorm of each row of `dim` in the first `rows * dim` values of `x`;
/// `w` (f32, `dim` values) scales by `w`, or by `1 + w` when `plus_one` (Gemma 3).
pub fn rmsnorm(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    rows: usize,
    dim: usize,
    w: Option<&GpuBuffer>,
    eps: f32,
    plus_one: bool,
) -> Result<(), GpuError> {
    if x.elem != ElemType::F32 || dim == 0 || x.len < rows * dim {
        return Err(shape_err(
            "rmsnorm",
            format!("x[{}] for {rows}x{dim}", x.len),
        ));
    }
    if let Some(w) = w
        && (w.elem != ElemType::F32 || w.len < dim)
    {
        return Err(shape_err(
            "rmsnorm",
            format!("weight[{}] for dim {dim}", w.len),
        ));
    }
    let mode = match (w, plus_one) {
        (None, _) => 0u32,
        (Some(_), false) => 1,
        (Some(_), true) => 2,
    };
    let ctx = enc.ctx();
    let pipeline = ctx.pipeline("norm", SHADER, "rmsnorm", &[]);
    let wbuf = w.map_or(&ctx.dummy, |w| &w.buf);
    let params = [dim as u32, rows as u32, eps.to_bits(), mode];
    enc.dispatch(pipeline, &params, &[&x.buf, wbuf], rows as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;

    #[test]
    fn gpu_rmsnorm_matches_cpu() {
        let Some(ctx) = ctx() else { return };
        for (rows, dim) in [(3, 640), (8, 37), (1, 1536)] {
            let x: Vec<f32> = random(rows * dim, 3).iter().map(|v| v * 4.0).collect();
            let w = random(dim, 5);
            for (use_w, plus_one) in [(false, false), (true, false), (true, true)] {
                let xb = GpuBuffer::from_f32(ctx, &x);
                let wb = GpuBuffer::from_f32(ctx, &w);
                let mut enc = Encoder::new(ctx);
                rmsnorm(
                    &mut enc,
                    &xb,
                    rows,
                    dim,
                    use_w.then_some(&wb),
                    1e-6,
                    plus_one,
                )
                .unwrap();
                enc.submit().unwrap();
                let got = ctx.read_f32(&xb).unwrap();
                let mut want = x.clone();
                cpu::rmsnorm(&mut want, dim, use_w.then_some(&w[..]), 1e-6, plus_one);
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < 1e-5,
                    "{rows}x{dim} w={use_w} plus_one={plus_one}: {err}"
                );
            }
        }
    }
}
