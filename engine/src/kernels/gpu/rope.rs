//! Rotate-half rotary embedding (the CPU `rope`), in place, one thread per rotated pair.

use super::norm::NormWeight;
use super::{Encoder, GpuBuffer, GpuError, buffer::ElemType, shape_err};

static SHADER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| super::with_norm_rope(include_str!("rope.wgsl")));

/// A head row's q/k norm and rotation, for the ops that apply them while loading the row
/// (attention's queries, the K rows of [`super::attention::store_kv_pair`]): the norm weight and
/// the `head_dim / 2` inverse frequencies; positions come from the op.
#[derive(Clone, Copy)]
pub struct NormRope<'a> {
    pub norm: NormWeight<'a>,
    pub inv_freq: &'a GpuBuffer,
}

impl NormRope<'_> {
    /// Checks the shapes for rows of `head_dim` (<= 512); the (weight mode, eps) the shaders take.
    pub(crate) fn check(&self, op: &'static str, head_dim: usize) -> Result<(u32, f32), GpuError> {
        let w_ok = self
            .norm
            .w
            .is_none_or(|w| w.elem == ElemType::F32 && w.len >= head_dim);
        let ok = w_ok
            && self.inv_freq.elem == ElemType::F32
            && self.inv_freq.len == head_dim / 2
            && head_dim.is_multiple_of(2)
            && head_dim <= 512;
        if !ok {
            return Err(shape_err(
                op,
                format!(
                    "norm + rope for head_dim {head_dim}, inv_freq[{}]",
                    self.inv_freq.len
                ),
            ));
        }
        Ok((self.norm.mode(), self.norm.eps))
    }
}

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
    let layout = [t, row_stride, n_heads, head_dim, pos0];
    record(enc, x, layout, inv_freq, None)
}

/// Records [`crate::kernels::gpu::norm::rmsnorm`] of every head row (Gemma's q/k norm, weight
/// `nw`) followed by [`rope`], in one dispatch; same arguments as [`rope`], head_dim <= 512.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_rope(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    t: usize,
    row_stride: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    inv_freq: &GpuBuffer,
    nw: NormWeight<'_>,
) -> Result<(), GpuError> {
    let layout = [t, row_stride, n_heads, head_dim, pos0];
    record(enc, x, layout, inv_freq, Some(nw))
}

/// Both ops: checks, then one thread per pair (`rope`) or one workgroup per head row
/// (`rmsnorm_rope`, when `nw` is given).
fn record(
    enc: &mut Encoder<'_>,
    x: &GpuBuffer,
    [t, row_stride, n_heads, head_dim, pos0]: [usize; 5],
    inv_freq: &GpuBuffer,
    nw: Option<NormWeight<'_>>,
) -> Result<(), GpuError> {
    let half = head_dim / 2;
    let weight_ok = nw
        .and_then(|n| n.w)
        .is_none_or(|w| w.elem == ElemType::F32 && w.len >= head_dim);
    if x.elem != ElemType::F32
        || !head_dim.is_multiple_of(2)
        || (nw.is_some() && head_dim > 512)
        || row_stride < n_heads * head_dim
        || (t > 0 && x.len < (t - 1) * row_stride + n_heads * head_dim)
        || inv_freq.len != half
        || !weight_ok
    {
        return Err(shape_err(
            "rope",
            format!(
                "x[{}], t {t}, stride {row_stride}, {n_heads}x{head_dim}, inv_freq[{}]",
                x.len, inv_freq.len
            ),
        ));
    }
    let ctx = enc.ctx();
    let entry = if nw.is_some() { "rmsnorm_rope" } else { "rope" };
    let pipeline = ctx.pipeline("rope", &SHADER, entry, &[]);
    let params = [
        n_heads as u32,
        head_dim as u32,
        pos0 as u32,
        t as u32,
        row_stride as u32,
        nw.map_or(0, |n| n.eps.to_bits()),
        nw.map_or(0, |n| n.mode()),
    ];
    match nw {
        Some(n) => {
            let wbuf = n.w.map_or(&ctx.dummy, |w| &w.buf);
            let bufs = [&x.buf, &inv_freq.buf, wbuf];
            enc.dispatch(pipeline, &params, &bufs, (t * n_heads) as u32);
        }
        None => {
            let groups = (t * n_heads * half).div_ceil(256) as u32;
            enc.dispatch(pipeline, &params, &[&x.buf, &inv_freq.buf], groups);
        }
    }
    Ok(())
}

/// The assembled source (see `sources.rs`).
pub(super) fn shaders() -> Vec<super::AssembledShader> {
    vec![super::AssembledShader::new("rope", SHADER.as_str())]
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

    #[test]
    fn gpu_rmsnorm_rope_matches_norm_then_rope() {
        let Some(ctx) = ctx() else { return };
        for (nh, d, n_rot, pos0, t, plus_one) in
            [(4, 64, 32, 7, 3, true), (2, 512, 128, 300, 2, false)]
        {
            let stride = nh * d + 8;
            let x = random(t * stride, 19);
            let w = random(d, 20);
            let inv = cpu::rope_inv_freq(10000.0, d, n_rot, d / 2);
            let (xb, ib, wb) = (
                GpuBuffer::from_f32(ctx, &x),
                GpuBuffer::from_f32(ctx, &inv),
                GpuBuffer::from_f32(ctx, &w),
            );
            let nw = crate::kernels::gpu::norm::NormWeight {
                w: Some(&wb),
                eps: 1e-6,
                plus_one,
            };
            let mut enc = Encoder::new(ctx);
            rmsnorm_rope(&mut enc, &xb, t, stride, nh, d, pos0, &ib, nw).unwrap();
            enc.submit().unwrap();
            let mut want = x.clone();
            for i in 0..t {
                let row = &mut want[i * stride..i * stride + nh * d];
                cpu::rmsnorm(row, d, Some(&w[..]), 1e-6, plus_one);
                cpu::rope(row, nh, d, pos0 + i, &inv);
            }
            let err = max_abs_diff(&ctx.read_f32(&xb).unwrap(), &want);
            assert!(err < 1e-4, "{nh}x{d}: {err}");
        }
    }
}
