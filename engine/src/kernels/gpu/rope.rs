//! Rotate-half rotary embedding (the CPU `rope`), in place, one thread per rotated pair.

use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

const SHADER: &str = include_str!("rope.wgsl");

/// Records RoPE over `t` tokens of `n_heads` heads of `head_dim`: token `i` (at position
/// `pos0 + i`) starts at `i * row_stride` in `x`. `inv_freq` holds `head_dim / 2` f32 (see
/// `cpu::rope_inv_freq`; zeros pass through).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    row_stride: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    inv_freq: &GpuBuffer,
) -> Result<(), GpuError> {
    let half = head_dim / 2;
    if x.elem != ElemType::F32
        || !head_dim.is_multiple_of(2)
        || row_stride < n_heads * head_dim
        || (t > 0 && x.len < (t - 1) * row_stride + n_heads * head_dim)
        || inv_freq.len != half
    {
        return Err(shape_err(
            "rope",
            format!(
                "x[{}], t {t}, stride {row_stride}, {n_heads}x{head_dim}, inv_freq[{}]",
                x.len, inv_freq.len
            ),
        ));
    }
    let pipeline = enc.ctx().pipeline("rope", SHADER, "rope", &[]);
    let params = [
        n_heads as u32,
        head_dim as u32,
        pos0 as u32,
        t as u32,
        row_stride as u32,
    ];
    let threads = t * n_heads * half;
    enc.dispatch(
        pipeline,
        &params,
        &[&x.buf, &inv_freq.buf],
        threads.div_ceil(256) as u32,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ctx, max_abs_diff, random};
    use super::*;
    use crate::kernels::cpu;

    #[test]
    fn gpu_rope_matches_cpu() {
        let Some(ctx) = ctx() else { return };
        // (heads, head_dim, theta, n_rot, pos0, t): default, proportional partial, long position
        for (nh, d, theta, n_rot, pos0, t) in [
            (4, 64, 10000.0, 32, 7, 3),
            (2, 16, 1e6, 2, 1234, 2),
            (3, 256, 10000.0, 128, 30000, 2),
        ] {
            let stride = nh * d + 8; // padded rows: the extra values must stay untouched
            let x = random(t * stride, 9);
            let inv = cpu::rope_inv_freq(theta, d, n_rot, d / 2);
            let xb = GpuBuffer::from_f32(ctx, &x);
            let ib = GpuBuffer::from_f32(ctx, &inv);
            let mut enc = Encoder::new(ctx);
            rope(&mut enc, &xb, t, stride, nh, d, pos0, &ib).unwrap();
            enc.submit().unwrap();
            let got = ctx.read_f32(&xb).unwrap();
            let mut want = x.clone();
            for i in 0..t {
                cpu::rope(&mut want[i * stride..], nh, d, pos0 + i, &inv);
            }
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-4, "rope {nh}x{d} pos {pos0}: {err}");
        }
    }
}
