//! Gemma 3 text decoder (`Gemma3ForCausalLM` in Hugging Face transformers; Gemma Team, "Gemma 3
//! Technical Report", 2025). Formulas: docs/gemma-spec.md §1 and §9.
//!
//! Per layer: pre/post RMSNorms `(1 + w)` around attention and MLP; q/k norms; RoPE with the
//! layer type's base; sliding-window or full causal attention scaled by
//! `query_pre_attn_scalar^-1/2`; gated GELU MLP. Embedding times √hidden, tied LM head.

use super::attention::{Attention, AttnFlavour};
use super::common::{
    self, ActivationObserver, BlockNorms, Mlp, RmsNorm, attention_and_mlp, embed_row, grow,
};
use super::config::{self, LayerSpec, TextConfig};
use super::weights::Weights;
use super::{Logits, MediaRows, ModelError, TextModel};
use crate::format::CellmFile;
use crate::kernels::cpu;
use crate::kv_cache::KvCache;
use crate::tensor::TensorView;

pub struct DecoderLayer<'a> {
    input_layernorm: RmsNorm,
    self_attn: Attention<'a>,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Mlp<'a>,
    post_feedforward_layernorm: RmsNorm,
}

impl<'a> DecoderLayer<'a> {
    fn new(cfg: &TextConfig, spec: &LayerSpec, w: &Weights<'a>) -> Result<Self, ModelError> {
        let (h, eps) = (cfg.hidden_size, cfg.eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(w, "input_layernorm", h, eps, true)?,
            self_attn: Attention::new(
                cfg,
                spec,
                &w.pp("self_attn"),
                &AttnFlavour {
                    plus_one: true,
                    v_norm: false,
                },
            )?,
            post_attention_layernorm: RmsNorm::new(w, "post_attention_layernorm", h, eps, true)?,
            pre_feedforward_layernorm: RmsNorm::new(w, "pre_feedforward_layernorm", h, eps, true)?,
            mlp: Mlp::new(&w.pp("mlp"), h, spec.intermediate_size)?,
            post_feedforward_layernorm: RmsNorm::new(
                w,
                "post_feedforward_layernorm",
                h,
                eps,
                true,
            )?,
        })
    }

    fn forward(&self, layer: usize, t: usize, pos0: usize, cache: &mut KvCache, s: &mut Scratch) {
        let norms = BlockNorms {
            input: &self.input_layernorm,
            post_attn: &self.post_attention_layernorm,
            pre_ff: &self.pre_feedforward_layernorm,
            post_ff: &self.post_feedforward_layernorm,
        };
        attention_and_mlp(layer, t, s, &norms, &self.mlp, |h, s, a| {
            self.self_attn.forward(layer, h, t, pos0, cache, s, a)
        });
    }
}

/// Activation buffers (Gemma 3 needs nothing beyond the common ones).
type Scratch = common::Scratch<()>;

pub struct Model<'a> {
    cfg: TextConfig,
    embed_tokens: TensorView<'a>,
    embed_scale: f32,
    layers: Vec<DecoderLayer<'a>>,
    norm: RmsNorm,
    scratch: Scratch,
}

impl<'a> Model<'a> {
    pub fn new(file: &'a CellmFile) -> Result<Self, ModelError> {
        Self::with_weights(file, Weights::text_stack(file))
    }

    /// Builds the model from `w` (the text stack of `file`, possibly with in-memory overrides).
    pub fn with_weights(file: &'a CellmFile, w: Weights<'a>) -> Result<Self, ModelError> {
        let cfg = config::gemma3(&file.header().config)?;
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = w.get("embed_tokens.weight", &[v, h])?;
        if file.contains("lm_head.weight") {
            return Err(ModelError::Config(config::ConfigError::Invalid(
                "untied lm_head.weight is not supported".into(),
            )));
        }
        let layers = cfg
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| DecoderLayer::new(&cfg, spec, &w.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::new(&w, "norm", h, cfg.eps, true)?;
        Ok(Self {
            // transformers multiplies by √hidden as a float32 scalar (exact f32 value).
            embed_scale: (h as f64).sqrt() as f32,
            cfg,
            embed_tokens,
            layers,
            norm,
            scratch: Scratch::default(),
        })
    }

    /// Installs (or removes) an observer of the text-stack linears' inputs; returns the old one.
    pub fn set_observer(
        &mut self,
        observer: Option<Box<dyn ActivationObserver>>,
    ) -> Option<Box<dyn ActivationObserver>> {
        std::mem::replace(&mut self.scratch.observer, observer)
    }

    fn ensure(&mut self, t: usize) {
        let c = &self.cfg;
        let (qd, kvd, inter) = c.max_widths();
        let s = &mut self.scratch;
        for (buf, n) in [
            (&mut s.x, c.hidden_size),
            (&mut s.h, c.hidden_size),
            (&mut s.a, c.hidden_size),
            (&mut s.q, qd),
            (&mut s.k, kvd),
            (&mut s.v, kvd),
            (&mut s.att, qd),
            (&mut s.gate, inter),
            (&mut s.up, inter),
        ] {
            grow(buf, t * n);
        }
    }

    fn embed(&mut self, tokens: &[u32], media: &[(usize, &[f32])]) -> Result<(), ModelError> {
        let h = self.cfg.hidden_size;
        for (i, &id) in tokens.iter().enumerate() {
            let row = &mut self.scratch.x[i * h..(i + 1) * h];
            match media.iter().find(|(p, _)| *p == i) {
                // Soft tokens are not scaled by √hidden.
                Some((_, m)) => row.copy_from_slice(m),
                None => embed_row(&self.embed_tokens, id, self.embed_scale, row)?,
            }
        }
        Ok(())
    }

    /// Final norm, tied head and soft-cap for `rows` rows of `x` starting at row `first`,
    /// written to `logits[at..]`.
    fn head(&mut self, first: usize, rows: usize, at: usize) {
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let s = &mut self.scratch;
        let x = &mut s.x[first * h..(first + rows) * h];
        self.norm.forward(x);
        let out = &mut s.logits[at * v..(at + rows) * v];
        cpu::matmul(x, rows, &self.embed_tokens, out);
        if let Some(cap) = self.cfg.final_softcap {
            cpu::softcap(out, cap);
        }
    }
}

/// Media rows that fall in chunk `[c0, c0 + t)`, re-indexed from the chunk start.
pub(crate) fn media_in_chunk<'m>(
    media: Option<MediaRows<'m>>,
    hidden: usize,
    c0: usize,
    t: usize,
    out: &mut Vec<(usize, &'m [f32])>,
) -> Result<(), ModelError> {
    out.clear();
    if let Some(m) = media {
        if m.rows.len() != m.positions.len() * hidden {
            return Err(ModelError::Media(format!(
                "{} floats for {} rows of {hidden}",
                m.rows.len(),
                m.positions.len()
            )));
        }
        for (j, &p) in m.positions.iter().enumerate() {
            if p >= c0 && p < c0 + t {
                out.push((p - c0, &m.rows[j * hidden..(j + 1) * hidden]));
            }
        }
    }
    Ok(())
}

/// What [`Model::run_hidden`] starts from.
enum HiddenInput<'x> {
    Tokens(&'x [u32]),
    /// The residual stream `[t, hidden]` entering decoder layer `.0`.
    Residual(usize, &'x [f32]),
}

impl Model<'_> {
    /// Final-normed hidden states of every position; with `taps`, the residual stream entering
    /// each decoder layer is stored there as `[layers][t][hidden]`.
    fn run_hidden(
        &mut self,
        input: HiddenInput<'_>,
        pos0: usize,
        cache: &mut KvCache,
        mut taps: Option<&mut Vec<f32>>,
    ) -> Result<&[f32], ModelError> {
        let h = self.cfg.hidden_size;
        let (total, first) = match input {
            HiddenInput::Tokens(t) => (t.len(), 0),
            HiddenInput::Residual(l, x) => {
                if !x.len().is_multiple_of(h) || l >= self.layers.len() {
                    return Err(ModelError::Media(format!(
                        "residual input: {} floats for width {h}, layer {l}",
                        x.len()
                    )));
                }
                (x.len() / h, l)
            }
        };
        let layers = self.layers.len();
        if let Some(t) = taps.as_deref_mut() {
            t.clear();
            t.resize(layers * total * h, 0.0);
        }
        cache.reserve(pos0, total)?;
        // The logits buffer holds the normed rows (it is at least as large in normal use).
        grow(&mut self.scratch.logits, total * h);
        let chunk = cache.max_chunk();
        let mut c0 = 0;
        while c0 < total {
            let t = chunk.min(total - c0);
            let p = pos0 + c0;
            self.ensure(t);
            match input {
                HiddenInput::Tokens(tokens) => self.embed(&tokens[c0..c0 + t], &[])?,
                HiddenInput::Residual(_, x) => {
                    self.scratch.x[..t * h].copy_from_slice(&x[c0 * h..(c0 + t) * h])
                }
            }
            for l in first..layers {
                if let Some(taps) = taps.as_deref_mut() {
                    let at = (l * total + c0) * h;
                    taps[at..at + t * h].copy_from_slice(&self.scratch.x[..t * h]);
                }
                self.layers[l].forward(l, t, p, cache, &mut self.scratch);
            }
            cache.set_len(p + t);
            let s = &mut self.scratch;
            self.norm.forward(&mut s.x[..t * h]);
            s.logits[c0 * h..(c0 + t) * h].copy_from_slice(&s.x[..t * h]);
            c0 += t;
        }
        Ok(&self.scratch.logits[..total * h])
    }
}

impl TextModel for Model<'_> {
    fn config(&self) -> &TextConfig {
        &self.cfg
    }

    fn memory(&self) -> super::ModelMemory {
        super::ModelMemory {
            scratch_bytes: self.scratch.bytes(),
            logits_bytes: self.scratch.logits_bytes(),
            ..Default::default()
        }
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        media: Option<MediaRows<'_>>,
        pos0: usize,
        cache: &mut KvCache,
        want: Logits,
    ) -> Result<&[f32], ModelError> {
        let total = tokens.len();
        let v = self.cfg.vocab_size;
        if total == 0 {
            return Ok(&[]);
        }
        cache.reserve(pos0, total)?;
        let out_rows = if want == Logits::All { total } else { 1 };
        grow(&mut self.scratch.logits, out_rows * v);
        let chunk = cache.max_chunk();
        let mut rows = Vec::new();
        let mut c0 = 0;
        while c0 < total {
            let t = chunk.min(total - c0);
            let p = pos0 + c0;
            self.ensure(t);
            media_in_chunk(media, self.cfg.hidden_size, c0, t, &mut rows)?;
            self.embed(&tokens[c0..c0 + t], &rows)?;
            for (l, layer) in self.layers.iter().enumerate() {
                layer.forward(l, t, p, cache, &mut self.scratch);
            }
            cache.set_len(p + t);
            match want {
                Logits::All => self.head(0, t, c0),
                Logits::Last if c0 + t == total => self.head(t - 1, 1, 0),
                Logits::Last => {}
            }
            c0 += t;
        }
        Ok(&self.scratch.logits[..out_rows * v])
    }

    fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.self_attn.bytes() + l.mlp.bytes())
            .sum();
        layers + self.embed_tokens.data.len()
    }

    fn forward_hidden(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<&[f32], ModelError> {
        self.run_hidden(HiddenInput::Tokens(tokens), pos0, cache, None)
    }

    fn forward_hidden_taps(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
        taps: &mut Vec<f32>,
    ) -> Result<&[f32], ModelError> {
        self.run_hidden(HiddenInput::Tokens(tokens), pos0, cache, Some(taps))
    }

    fn forward_hidden_from(
        &mut self,
        layer: usize,
        x: &[f32],
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<&[f32], ModelError> {
        self.run_hidden(HiddenInput::Residual(layer, x), pos0, cache, None)
    }
}
