//! Layer pieces that the Gemma 3 and Gemma 4 GPU decoders record identically: attention of a
//! chunk's query rows over a layer's device KV cache, and the gated-GELU MLP with its two norms
//! and the residual add.

use super::kv::LayerKv;
use crate::kernels::cpu::attention::AttnParams;
use crate::kernels::gpu::{
    Encoder, GpuBuffer, GpuError, GpuWeight, attention, elementwise, matmul, norm,
};

/// Device buffers the attention of a chunk uses.
pub(super) struct AttnBufs<'b> {
    /// Queries of the chunk, [t, heads * head_dim].
    pub q: &'b GpuBuffer,
    /// One query row and its output (the kernel takes one row at a time).
    pub q1: &'b GpuBuffer,
    pub o1: &'b GpuBuffer,
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
    if t == 1 {
        return attention::attention(
            enc, b.q, p, &kv.k, &kv.v, kv.slots, params, b.scratch, b.out,
        );
    }
    let qd = params.n_heads * params.head_dim;
    for i in 0..t {
        enc.copy(b.q, i * qd, b.q1, 0, qd)?;
        attention::attention(
            enc,
            b.q1,
            p + i,
            &kv.k,
            &kv.v,
            kv.slots,
            params,
            b.scratch,
            b.o1,
        )?;
        enc.copy(b.o1, 0, b.out, i * qd, qd)?;
    }
    Ok(())
}

/// Weights of one gated-GELU MLP block with its pre/post norms.
pub(super) struct MlpWeights<'l> {
    pub pre_norm: &'l GpuBuffer,
    pub post_norm: &'l GpuBuffer,
    pub gate: &'l GpuWeight,
    pub up: &'l GpuWeight,
    pub down: &'l GpuWeight,
    pub inter: usize,
}

/// Device buffers of the MLP block: the residual stream `x` and scratch.
pub(super) struct MlpBufs<'b> {
    pub x: &'b GpuBuffer,
    pub h: &'b GpuBuffer,
    pub a: &'b GpuBuffer,
    pub gate: &'b GpuBuffer,
    pub up: &'b GpuBuffer,
}

/// `x += post_norm(down(gelu(gate(n)) * up(n)))` with `n = pre_norm(x)`, over `t` rows of
/// width `hidden`. `plus_one` selects Gemma 3's (1 + w) norm scaling.
pub(super) fn record_mlp(
    enc: &mut Encoder<'_>,
    w: &MlpWeights<'_>,
    b: &MlpBufs<'_>,
    t: usize,
    hidden: usize,
    eps: f32,
    plus_one: bool,
) -> Result<(), GpuError> {
    let n = t * hidden;
    enc.copy(b.x, 0, b.h, 0, n)?;
    norm::rmsnorm(enc, b.h, t, hidden, Some(w.pre_norm), eps, plus_one)?;
    matmul::matmul(enc, b.h, t, w.gate, b.gate)?;
    matmul::matmul(enc, b.h, t, w.up, b.up)?;
    elementwise::gelu_mul(enc, b.gate, b.up, t * w.inter)?;
    matmul::matmul(enc, b.gate, t, w.down, b.a)?;
    norm::rmsnorm(enc, b.a, t, hidden, Some(w.post_norm), eps, plus_one)?;
    elementwise::add(enc, b.x, b.a, n)
}
