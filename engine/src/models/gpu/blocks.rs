//! Layer pieces that the Gemma 3 and Gemma 4 GPU decoders record identically: attention of a
//! chunk's query rows over a layer's device KV cache, and the gated-GELU MLP with its two norms
//! and the residual add.

use super::kv::LayerKv;
use crate::kernels::cpu::attention::AttnParams;
use crate::kernels::gpu::norm::{Into, NormWeight};
use crate::kernels::gpu::{Encoder, GpuBuffer, GpuError, GpuWeight, attention, matmul, norm};

/// Device buffers the attention of a chunk uses.
pub(super) struct AttnBufs<'b> {
    /// Queries of the chunk, [t, heads * head_dim].
    pub q: &'b GpuBuffer,
    pub scratch: &'b GpuBuffer,
    /// Output, [t, heads * head_dim].
    pub out: &'b GpuBuffer,
}

/// Attends the chunk's `t` query rows (positions `p..p + t`) over `kv`. The chunk's own K/V must
/// be stored already; the causal/window limits come from each row's position.
pub(super) fn record_attention(
    enc: &mut Encoder<'_>,
    b: &AttnBufs<'_>,
    t: usize,
    p: usize,
    kv: &LayerKv,
    params: &AttnParams,
) -> Result<(), GpuError> {
    attention::attention(
        enc, b.q, t, p, &kv.k, &kv.v, kv.slots, params, b.scratch, b.out,
    )
}

/// Before layer `li`: every few layers, submits what is recorded so the GPU works on the first
/// layers of a token while the host records the rest (recording ~20 ops per layer costs the host
/// about as long as the GPU needs to run them).
pub(super) fn flush_before_layer(enc: &mut Encoder<'_>, li: usize) -> Result<(), GpuError> {
    const EVERY: usize = 4;
    if li > 0 && li.is_multiple_of(EVERY) {
        enc.flush()?;
    }
    Ok(())
}

/// Weights of one gated-GELU MLP block with its pre/post norms.
pub(super) struct MlpWeights<'l> {
    pub post_norm: &'l GpuBuffer,
    pub gate: &'l GpuWeight,
    pub up: &'l GpuWeight,
    pub down: &'l GpuWeight,
}

/// Device buffers of the MLP block: the residual stream `x` and scratch.
pub(super) struct MlpBufs<'b> {
    pub x: &'b GpuBuffer,
    pub h: &'b GpuBuffer,
    pub a: &'b GpuBuffer,
    pub gate: &'b GpuBuffer,
    pub up: &'b GpuBuffer,
}

/// `x = (x + post(src)) * scale`, then `h = next(x)` when the next block's pre-norm is given (one
/// dispatch for both).
#[allow(clippy::too_many_arguments)]
pub(super) fn record_post_add(
    enc: &mut Encoder<'_>,
    src: &GpuBuffer,
    x: &GpuBuffer,
    h: &GpuBuffer,
    t: usize,
    hidden: usize,
    post: NormWeight<'_>,
    scale: f32,
    next: Option<NormWeight<'_>>,
) -> Result<(), GpuError> {
    match next {
        Some(next) => norm::rmsnorm_add_norm(enc, src, x, t, hidden, post, scale, next, h),
        None => norm::rmsnorm_to(enc, src, x, t, hidden, post, Into::AddScaled(scale)),
    }
}

/// The MLP block on `h = pre_norm(x)` (already computed, see [`record_post_add`]):
/// `x = (x + post_norm(down(gelu(gate(h)) * up(h)))) * out_scale`, then `h = next(x)` if given.
/// `plus_one` selects Gemma 3's (1 + w) norm scaling.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_mlp(
    enc: &mut Encoder<'_>,
    w: &MlpWeights<'_>,
    b: &MlpBufs<'_>,
    t: usize,
    hidden: usize,
    eps: f32,
    plus_one: bool,
    out_scale: f32,
    next: Option<&GpuBuffer>,
) -> Result<(), GpuError> {
    let nw = |w| NormWeight {
        w: Some(w),
        eps,
        plus_one,
    };
    matmul::matmul_glu(enc, b.h, t, w.gate, w.up, b.gate, b.up)?;
    matmul::matmul(enc, b.gate, t, w.down, b.a)?;
    let post = nw(w.post_norm);
    record_post_add(enc, b.a, b.x, b.h, t, hidden, post, out_scale, next.map(nw))
}
