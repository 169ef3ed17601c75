//! What the Gemma 3 and Gemma 4 GPU decoders record identically: their activation buffers, the
//! residual adds with their norms, and a layer's tail (attention over the device KV cache,
//! output projection, the gated-GELU MLP).

use super::kv::LayerKv;
use crate::kernels::cpu::attention::AttnParams;
use crate::kernels::gpu::matmul::AddNorm;
use crate::kernels::gpu::norm::{Into, NormWeight};
use crate::kernels::gpu::rope::NormRope;
use crate::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, attention, elementwise, matmul,
    norm,
};

/// Activation buffers of a Gemma decoder for chunks of up to `rows` tokens: the residual stream
/// `x`, the normed input `h`, block outputs `a`, q/k/v, attention output and the MLP halves.
pub(super) struct TextActs {
    pub rows: usize,
    pub x: GpuBuffer,
    /// The residual stream's other buffer in a decode step with fused adds (see [`Stream`]).
    pub x2: GpuBuffer,
    pub h: GpuBuffer,
    pub a: GpuBuffer,
    pub q: GpuBuffer,
    pub k: GpuBuffer,
    pub v: GpuBuffer,
    pub att: GpuBuffer,
    pub gate: GpuBuffer,
    pub up: GpuBuffer,
    /// f16 copy of a prefill matmul's input (f16 activations, see `f16_activations`).
    pub xh: Option<GpuBuffer>,
}

/// Widest rows any layer needs: hidden, q (heads x head_dim), k/v, MLP intermediate.
pub(super) struct ActWidths {
    pub hidden: usize,
    pub q: usize,
    pub kv: usize,
    pub inter: usize,
}

impl ActWidths {
    /// The widest of each over layers given as (attention parameters, MLP width).
    pub(super) fn of<'l>(
        hidden: usize,
        layers: impl Iterator<Item = (&'l AttnParams, usize)> + Clone,
    ) -> ActWidths {
        let max = |f: &dyn Fn(&AttnParams, usize) -> usize| {
            layers.clone().map(|(p, i)| f(p, i)).max().unwrap_or(1)
        };
        ActWidths {
            hidden,
            q: max(&|p, _| p.n_heads * p.head_dim),
            kv: max(&|p, _| p.n_kv_heads * p.head_dim),
            inter: max(&|_, i| i),
        }
    }
}

impl TextActs {
    pub(super) fn new(ctx: &GpuContext, rows: usize, w: &ActWidths) -> TextActs {
        let z = |n: usize| GpuBuffer::zeros(ctx, (rows * n).max(1), ElemType::F32);
        TextActs {
            rows,
            x: z(w.hidden),
            x2: z(w.hidden),
            h: z(w.hidden),
            a: z(w.hidden),
            q: z(w.q),
            k: z(w.kv),
            v: z(w.kv),
            att: z(w.q),
            gate: z(w.inter),
            up: z(w.inter),
            xh: (rows > 1 && f16_activations(ctx)).then(|| {
                let widest = w.hidden.max(w.q).max(w.inter);
                GpuBuffer::zeros(ctx, rows * widest, ElemType::F16)
            }),
        }
    }
}

/// Whether prefill matmuls take f16 activations (the normed inputs of q/k/v and the MLP): only
/// when asked for with `CELLM_GPU_F16_ACTIVATIONS=1` on an adapter with shader-f16. Off by
/// default: on the tiny Gemma 4 fixture they break the KL < 1e-4 parity with the CPU path (1.0e-4
/// with f32 weights, 3.9e-3 with q4 weights and the f16 KV cache, against <= 2e-7 in f32; Gemma 3
/// keeps it at 5.4e-6), and an H100 prefilled no faster with them (E2B 1548 vs 1549 tok/s, before
/// the tiled GEMM, which takes chunks of 32+ tokens in f32 either way).
fn f16_activations(ctx: &GpuContext) -> bool {
    matmul::f16_activations(ctx) && std::env::var_os("CELLM_GPU_F16_ACTIVATIONS").is_some()
}

/// `out = x · wᵀ` for `t` rows. Prefill chunks (`t > 1`) with f16 activations round `x` to f16
/// first: the matmul then loads half the activation bytes (products still sum in f32). Decode
/// steps and LUT weights keep f32.
pub(super) fn matmul_in(
    enc: &mut Encoder<'_>,
    a: &TextActs,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
    out: &GpuBuffer,
) -> Result<(), GpuError> {
    match half_input(enc, a, x, t, w)? {
        Some(xh) => matmul::matmul(enc, xh, t, w, out),
        None => matmul::matmul(enc, x, t, w, out),
    }
}

/// The f16 copy of `x` (recorded) when [`matmul_in`] should use one.
fn half_input<'a>(
    enc: &mut Encoder<'_>,
    a: &'a TextActs,
    x: &GpuBuffer,
    t: usize,
    w: &GpuWeight,
) -> Result<Option<&'a GpuBuffer>, GpuError> {
    let n = t * w.cols;
    match &a.xh {
        // (the tiled GEMM of long chunks keeps f32: it is faster than f16 inputs without it)
        Some(xh)
            if t > 1
                && !w.dtype.is_lut()
                && !crate::kernels::gpu::gemm::fits(w, t)
                && n <= xh.len
                && n.is_multiple_of(2) =>
        {
            elementwise::to_f16(enc, x, xh, n)?;
            Ok(Some(xh))
        }
        _ => Ok(None),
    }
}

/// Before layer `li`: every few layers, submits what is recorded so the GPU works on the first
/// layers of a token while the host records the rest (recording ~20 ops per layer costs the host
/// about as long as the GPU needs to run them).
pub(super) fn flush_before_layer(enc: &mut Encoder<'_>, li: usize) -> Result<(), GpuError> {
    // Early flushes after layers 1 and 2 cut the time the GPU waits for its first work.
    const EVERY: usize = 4;
    if matches!(li, 1 | 2) || li > 0 && li.is_multiple_of(EVERY) {
        enc.flush()?;
    }
    Ok(())
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

/// The residual stream of a decode step (one token) whose residual adds are folded into the
/// prologue of the next matvec ([`AddNorm`]): instead of a norm dispatch after each block, the
/// add is owed and the matvec that next reads the stream settles it, storing the new stream into
/// the other of `x` / `x2` (its other workgroups still read the old one).
pub(super) struct Stream<'a> {
    /// Whether the stream is in `x2` (else `x`).
    flip: bool,
    /// The add owed: `x = (x + post(a)) * scale`, with the block output in `a`.
    owed: Option<(NormWeight<'a>, f32)>,
}

impl<'a> Stream<'a> {
    /// A step's stream: in `x`, nothing owed.
    pub fn new() -> Self {
        Stream {
            flip: false,
            owed: None,
        }
    }

    /// The buffer holding the stream (before any owed add).
    pub fn cur<'b>(&self, a: &'b TextActs) -> &'b GpuBuffer {
        if self.flip { &a.x2 } else { &a.x }
    }

    /// Owes `x = (x + post(a.a)) * scale`.
    pub fn owe(&mut self, post: NormWeight<'a>, scale: f32) {
        self.owed = Some((post, scale));
    }

    /// Takes the owed add, if any.
    pub fn take_owed(&mut self) -> Option<(NormWeight<'a>, f32)> {
        self.owed.take()
    }

    /// A matvec's input (the stream now) and its prologue doing `x = (x + post(a.a)) * scale` into
    /// the other buffer, and `pre(x)` as the activations when given; the stream moves there.
    pub fn add(
        &mut self,
        a: &'a TextActs,
        (post, scale): (NormWeight<'a>, f32),
        pre: Option<NormWeight<'a>>,
    ) -> (&'a GpuBuffer, AddNorm<'a>) {
        let x = self.cur(a);
        self.flip = !self.flip;
        let pro = AddNorm {
            a: &a.a,
            post,
            scale,
            pre,
            x_out: self.cur(a),
            h: &a.h,
        };
        (x, pro)
    }
}

/// The weights of a layer after q/k/v: the q norm + RoPE, attention output projection and the
/// MLP with its norms.
pub(super) struct TailWeights<'l> {
    /// The q norm and RoPE, applied as attention loads each query row.
    pub q_rope: NormRope<'l>,
    pub o: &'l GpuWeight,
    pub post_attn_norm: &'l GpuBuffer,
    pub pre_ff_norm: &'l GpuBuffer,
    pub gate: &'l GpuWeight,
    pub up: &'l GpuWeight,
    pub down: &'l GpuWeight,
    pub post_ff_norm: &'l GpuBuffer,
}

/// How the tail of a layer ends: the MLP's residual add scaled by `mlp_scale` (Gemma 4's layer
/// scalar), then `h = next(x)` when the next layer's input norm is given.
pub(super) struct TailEnd<'l> {
    pub mlp_scale: f32,
    pub next: Option<&'l GpuBuffer>,
}

/// The rest of a layer once the chunk's q is in `a.q` and its K/V are in `kv`: attention of the
/// `t` rows (positions `p..`), `x += post_attn(o(att))` with `h = pre_ff(x)`, and the MLP:
/// `x = (x + post_ff(down(gelu(gate(h)) * up(h)))) * mlp_scale`. `nw` makes a norm weight in
/// the family's flavour.
/// With a decode `stream`, the residual adds are owed instead (see [`Stream`]): the MLP's
/// input comes from its matvec's prologue and the layer ends owing `post_ff(down(..))` scaled
/// by `mlp_scale` (`end.next` is then the next matvec's business).
#[allow(clippy::too_many_arguments)]
pub(super) fn record_layer_tail<'w>(
    enc: &mut Encoder<'_>,
    a: &'w TextActs,
    scratch: &GpuBuffer,
    (t, p): (usize, usize),
    (kv, params): (&LayerKv, &AttnParams),
    w: &TailWeights<'w>,
    nw: impl Fn(&'w GpuBuffer) -> NormWeight<'w>,
    end: TailEnd<'w>,
    stream: Option<&mut Stream<'w>>,
) -> Result<(), GpuError> {
    let hidden = w.post_attn_norm.len;
    let q_rope = Some(w.q_rope);
    attention::attention(
        enc, &a.q, t, p, &kv.k, &kv.v, kv.slots, params, scratch, &a.att, q_rope,
    )?;
    matmul::matmul(enc, &a.att, t, w.o, &a.a)?;
    if let Some(st) = stream {
        let (x, pro) = st.add(a, (nw(w.post_attn_norm), 1.0), Some(nw(w.pre_ff_norm)));
        matmul::matmul_glu_add_norm(enc, x, (w.gate, w.up), (&a.gate, &a.up), &pro)?;
        matmul::matmul(enc, &a.gate, 1, w.down, &a.a)?;
        st.owe(nw(w.post_ff_norm), end.mlp_scale);
        return Ok(());
    }
    let (post, pre_ff) = (nw(w.post_attn_norm), Some(nw(w.pre_ff_norm)));
    record_post_add(enc, &a.a, &a.x, &a.h, t, hidden, post, 1.0, pre_ff)?;
    let h = half_input(enc, a, &a.h, t, w.gate)?.unwrap_or(&a.h);
    matmul::matmul_glu(enc, h, t, w.gate, w.up, &a.gate, &a.up)?;
    matmul::matmul(enc, &a.gate, t, w.down, &a.a)?;
    let post = nw(w.post_ff_norm);
    let next = end.next.map(nw);
    record_post_add(enc, &a.a, &a.x, &a.h, t, hidden, post, end.mlp_scale, next)
}
