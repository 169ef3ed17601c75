//! The self-attention block of the Gemma text stacks (CPU): q/k/v projections, q/k norms (and
//! Gemma 4's weightless v norm), RoPE, the KV cache write, attention and the output projection.
//! Gemma 3 and Gemma 4 differ only in the norm flavour, the v norm and KV sharing.

use super::ModelError;
use super::common::{Linear, RmsNorm, Scratch, grow};
use super::config::{KvRole, LayerSpec, TextConfig};
use super::weights::Weights;
use crate::kernels::cpu::{self, attention::AttnParams};
use crate::kv_cache::KvCache;

/// The projections that compute a layer's own K/V (absent on Gemma 4's KV-sharing consumers).
struct KvProj<'a> {
    k_proj: Linear<'a>,
    v_proj: Linear<'a>,
    k_norm: RmsNorm,
    /// Gemma 4 normalizes values (no weight); Gemma 3 does not.
    v_norm: Option<RmsNorm>,
}

pub struct Attention<'a> {
    q_proj: Linear<'a>,
    q_norm: RmsNorm,
    kv: Option<KvProj<'a>>,
    o_proj: Linear<'a>,
    params: AttnParams,
    inv_freq: Vec<f32>,
}

/// How a family builds its attention: Gemma 3's `(1 + w)` norms, Gemma 4's value norm.
pub struct AttnFlavour {
    pub plus_one: bool,
    pub v_norm: bool,
}

impl<'a> Attention<'a> {
    pub fn new(
        cfg: &TextConfig,
        spec: &LayerSpec,
        w: &Weights<'a>,
        flavour: &AttnFlavour,
    ) -> Result<Self, ModelError> {
        let (h, d, nh, nkv, eps) = (
            cfg.hidden_size,
            spec.head_dim,
            cfg.num_heads,
            spec.num_kv_heads,
            cfg.eps,
        );
        let kv = match spec.kv {
            KvRole::Own => Some(KvProj {
                k_proj: Linear::new(w, "k_proj", nkv * d, h)?,
                v_proj: Linear::new(w, "v_proj", nkv * d, h)?,
                k_norm: RmsNorm::new(w, "k_norm", d, eps, flavour.plus_one)?,
                v_norm: flavour.v_norm.then(|| RmsNorm::plain(d, eps)),
            }),
            KvRole::Reuse(_) => None,
        };
        Ok(Self {
            q_proj: Linear::new(w, "q_proj", nh * d, h)?,
            q_norm: RmsNorm::new(w, "q_norm", d, eps, flavour.plus_one)?,
            kv,
            o_proj: Linear::new(w, "o_proj", h, nh * d)?,
            params: cfg.attn_params(spec),
            inv_freq: spec.rope.inv_freq.clone(),
        })
    }

    /// `x`: [t, hidden] (normed) -> `out`: [t, hidden]. Writes this layer's K/V into `cache`
    /// (a KV-sharing layer attends over its producer's, which `cache` maps it to).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward<E>(
        &self,
        layer: usize,
        x: &[f32],
        t: usize,
        pos0: usize,
        cache: &mut KvCache,
        s: &mut Scratch<E>,
        out: &mut [f32],
    ) {
        let p = &self.params;
        let (qd, kvd) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
        let q = &mut s.q[..t * qd];
        let (k, v) = (&mut s.k[..t * kvd], &mut s.v[..t * kvd]);
        match &self.kv {
            // q/k/v in one pass over the same input (one quantization, one parallel region).
            Some(kv) => Linear::forward3(
                [&self.q_proj, &kv.k_proj, &kv.v_proj],
                x,
                t,
                [&mut *q, &mut *k, &mut *v],
            ),
            None => self.q_proj.forward(x, t, q),
        }
        self.q_norm.forward(q);
        self.rope_rows(q, t, p.n_heads, pos0);
        if let Some(kv) = &self.kv {
            kv.k_norm.forward(k);
            if let Some(v_norm) = &kv.v_norm {
                v_norm.forward(v);
            }
            self.rope_rows(k, t, p.n_kv_heads, pos0);
            cache.write(layer, pos0, t, k, v);
        }
        grow(&mut s.attn_scratch, cpu::attention::scratch_len(p, pos0, t));
        let att = &mut s.att[..t * qd];
        cpu::attention::attention(q, t, pos0, cache.slots(layer), p, att, &mut s.attn_scratch);
        self.o_proj.forward(att, t, out);
    }

    /// RoPE over `t` rows of `heads` heads, row `i` at position `pos0 + i`.
    fn rope_rows(&self, x: &mut [f32], t: usize, heads: usize, pos0: usize) {
        let width = heads * self.params.head_dim;
        for (i, row) in x.chunks_exact_mut(width).take(t).enumerate() {
            cpu::rope(row, heads, self.params.head_dim, pos0 + i, &self.inv_freq);
        }
    }

    /// Weight bytes a token reads.
    pub fn bytes(&self) -> usize {
        let kv = self
            .kv
            .as_ref()
            .map_or(0, |kv| kv.k_proj.bytes() + kv.v_proj.bytes());
        self.q_proj.bytes() + self.o_proj.bytes() + kv
    }
}
