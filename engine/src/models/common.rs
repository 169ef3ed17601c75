//! Building blocks shared by the Gemma text stacks: linear layers over memory-mapped weights,
//! RMSNorm, the gated GELU MLP, token embedding rows, and the growable scratch buffers.

use super::ModelError;
use super::weights::Weights;
use crate::kernels::cpu;
use crate::tensor::TensorView;

/// `y = x · Wᵀ` with `W` stored `[out, in]` in any dtype (no bias in Gemma).
pub struct Linear<'a> {
    pub w: TensorView<'a>,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl<'a> Linear<'a> {
    pub fn new(
        w: &Weights<'a>,
        name: &str,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            w: w.get(&format!("{name}.weight"), &[out_dim, in_dim])?,
            in_dim,
            out_dim,
        })
    }

    /// `x`: [t, in], `out`: [t, out].
    pub fn forward(&self, x: &[f32], t: usize, out: &mut [f32]) {
        // matmul_many with one weight: same numerics, activations quantized in parallel in prefill.
        cpu::matmul_many(
            &x[..t * self.in_dim],
            t,
            [&self.w],
            [&mut out[..t * self.out_dim]],
        );
    }

    /// Three linears of the same input (q/k/v): one quantization and one parallel region.
    pub fn forward3([a, b, c]: [&Self; 3], x: &[f32], t: usize, [oa, ob, oc]: [&mut [f32]; 3]) {
        cpu::matmul_many(
            &x[..t * a.in_dim],
            t,
            [&a.w, &b.w, &c.w],
            [
                &mut oa[..t * a.out_dim],
                &mut ob[..t * b.out_dim],
                &mut oc[..t * c.out_dim],
            ],
        );
    }

    /// Two linears of the same input (gate/up, k/v).
    pub fn forward2([a, b]: [&Self; 2], x: &[f32], t: usize, [oa, ob]: [&mut [f32]; 2]) {
        cpu::matmul_many(
            &x[..t * a.in_dim],
            t,
            [&a.w, &b.w],
            [&mut oa[..t * a.out_dim], &mut ob[..t * b.out_dim]],
        );
    }

    pub fn bytes(&self) -> usize {
        self.w.data.len()
    }
}

/// RMSNorm over rows of `dim`; `plus_one` selects the Gemma 3 `(1 + w)` flavour.
pub struct RmsNorm {
    pub weight: Option<Vec<f32>>,
    pub dim: usize,
    pub eps: f32,
    pub plus_one: bool,
}

impl RmsNorm {
    pub fn new(
        w: &Weights<'_>,
        name: &str,
        dim: usize,
        eps: f32,
        plus_one: bool,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            weight: Some(w.vector(&format!("{name}.weight"), dim)?),
            dim,
            eps,
            plus_one,
        })
    }

    /// A norm without a weight (Gemma 4's value norm).
    pub fn plain(dim: usize, eps: f32) -> Self {
        Self {
            weight: None,
            dim,
            eps,
            plus_one: false,
        }
    }

    pub fn forward(&self, x: &mut [f32]) {
        cpu::rmsnorm(x, self.dim, self.weight.as_deref(), self.eps, self.plus_one);
    }
}

/// Where a calibration observer sees the input of a group of linears (see `crate::calibrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tap {
    /// The input_layernorm output: q/k/v projections.
    AttnInput,
    /// The pre_feedforward_layernorm output: gate/up projections.
    MlpInput,
    /// `gelu(gate) ⊙ up`: the down projection.
    DownInput,
}

/// Sees the input rows of text-stack linears during a CPU forward (calibration statistics).
/// Models without an observer pay one branch per tap.
pub trait ActivationObserver: Send {
    /// `x`: `[rows, width]` row-major inputs of the linears at `tap` of decoder layer `layer`.
    fn observe(&mut self, layer: usize, tap: Tap, x: &[f32], rows: usize);
}

/// `down( gelu_tanh(gate(x)) ⊙ up(x) )`.
pub struct Mlp<'a> {
    pub gate_proj: Linear<'a>,
    pub up_proj: Linear<'a>,
    pub down_proj: Linear<'a>,
    pub intermediate: usize,
}

impl<'a> Mlp<'a> {
    pub fn new(w: &Weights<'a>, hidden: usize, intermediate: usize) -> Result<Self, ModelError> {
        Ok(Self {
            gate_proj: Linear::new(w, "gate_proj", intermediate, hidden)?,
            up_proj: Linear::new(w, "up_proj", intermediate, hidden)?,
            down_proj: Linear::new(w, "down_proj", hidden, intermediate)?,
            intermediate,
        })
    }

    /// `x`: [t, hidden] -> `out`: [t, hidden]; `gate`/`up` scratch of at least t * intermediate.
    pub fn forward(&self, x: &[f32], t: usize, gate: &mut [f32], up: &mut [f32], out: &mut [f32]) {
        self.forward_observed(x, t, gate, up, out, None);
    }

    /// [`Mlp::forward`], showing the down projection's input to `observer` (with the layer index).
    pub fn forward_observed(
        &self,
        x: &[f32],
        t: usize,
        gate: &mut [f32],
        up: &mut [f32],
        out: &mut [f32],
        observer: Option<(&mut dyn ActivationObserver, usize)>,
    ) {
        let n = t * self.intermediate;
        Linear::forward2([&self.gate_proj, &self.up_proj], x, t, [gate, up]);
        cpu::gelu_mul(&mut gate[..n], &up[..n]);
        if let Some((o, layer)) = observer {
            o.observe(layer, Tap::DownInput, &gate[..n], t);
        }
        self.down_proj.forward(gate, t, out);
    }

    pub fn bytes(&self) -> usize {
        self.gate_proj.bytes() + self.up_proj.bytes() + self.down_proj.bytes()
    }
}

/// Writes embedding row `id` of `table` ([vocab, dim]) times `scale` into `out`.
pub fn embed_row(
    table: &TensorView<'_>,
    id: u32,
    scale: f32,
    out: &mut [f32],
) -> Result<(), ModelError> {
    let vocab = table.rows();
    let id = id as usize;
    if id >= vocab {
        return Err(ModelError::TokenOutOfRange { id, vocab });
    }
    table.row_to_f32(id, out);
    if scale != 1.0 {
        cpu::scale(out, scale);
    }
    Ok(())
}

/// Grows `v` to at least `n` elements (never shrinks, so steady-state decode does not allocate).
pub fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Activation buffers of a Gemma text stack, allocated once and grown when a longer chunk
/// arrives; `E` holds what a family needs besides (Gemma 4's per-layer inputs).
#[derive(Default)]
pub(crate) struct Scratch<E> {
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub a: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub attn_scratch: Vec<f32>,
    /// Calibration observer (None in normal use).
    pub observer: Option<Box<dyn ActivationObserver>>,
    pub logits: Vec<f32>,
    pub ext: E,
}

impl<E> Scratch<E> {
    /// Bytes held by the common buffers except the logits (a family adds its `ext`).
    pub fn bytes(&self) -> u64 {
        [
            &self.x,
            &self.h,
            &self.a,
            &self.q,
            &self.k,
            &self.v,
            &self.att,
            &self.gate,
            &self.up,
            &self.attn_scratch,
        ]
        .iter()
        .map(|v| 4 * v.capacity() as u64)
        .sum()
    }

    pub fn logits_bytes(&self) -> u64 {
        4 * self.logits.capacity() as u64
    }
}

/// The four norms around a Gemma layer's attention and MLP blocks.
pub(crate) struct BlockNorms<'n> {
    pub input: &'n RmsNorm,
    pub post_attn: &'n RmsNorm,
    pub pre_ff: &'n RmsNorm,
    pub post_ff: &'n RmsNorm,
}

/// `x += post_attn(attn(input(x)))` then `x += post_ff(mlp(pre_ff(x)))` over the chunk's `t`
/// rows in `s.x`, reporting the blocks' inputs to a calibration observer. `attn` computes the
/// attention of its normed input into its output, with the scratch for its q/k/v.
pub(crate) fn attention_and_mlp<E>(
    layer: usize,
    t: usize,
    s: &mut Scratch<E>,
    norms: &BlockNorms<'_>,
    mlp: &Mlp<'_>,
    attn: impl FnOnce(&[f32], &mut Scratch<E>, &mut [f32]),
) {
    let n = t * norms.input.dim;
    let mut h = std::mem::take(&mut s.h);
    let mut a = std::mem::take(&mut s.a);
    h[..n].copy_from_slice(&s.x[..n]);
    norms.input.forward(&mut h[..n]);
    if let Some(o) = s.observer.as_deref_mut() {
        o.observe(layer, Tap::AttnInput, &h[..n], t);
    }
    attn(&h[..n], s, &mut a[..n]);
    norms.post_attn.forward(&mut a[..n]);
    cpu::add(&mut s.x[..n], &a[..n]);

    h[..n].copy_from_slice(&s.x[..n]);
    norms.pre_ff.forward(&mut h[..n]);
    let observer = match s.observer.as_deref_mut() {
        Some(o) => {
            o.observe(layer, Tap::MlpInput, &h[..n], t);
            Some((o as &mut dyn ActivationObserver, layer))
        }
        None => None,
    };
    mlp.forward_observed(&h[..n], t, &mut s.gate, &mut s.up, &mut a[..n], observer);
    norms.post_ff.forward(&mut a[..n]);
    cpu::add(&mut s.x[..n], &a[..n]);
    s.h = h;
    s.a = a;
}
