//! Gemma 4 text decoder (`Gemma4TextModel` in Hugging Face transformers 5.23, the language model
//! of `Gemma4ForConditionalGeneration`). Formulas: docs/gemma-spec.md §1, §3 and §6.
//!
//! Differences from Gemma 3: RMSNorms multiply by `w` (not `1 + w`); a weightless value norm;
//! attention scaling 1.0; per-layer head sizes (full layers wider) with proportional partial
//! RoPE; per-layer embeddings (PLE) gated into every layer; a per-layer `layer_scalar`; KV
//! sharing (the last layers attend over an earlier layer's cache); double-wide MLPs on those
//! layers; final logit soft-cap.

use super::attention::{Attention, AttnFlavour};
use super::common::{
    self, ActivationObserver, BlockNorms, Linear, Mlp, RmsNorm, attention_and_mlp, embed_row, grow,
};
use super::config::{self, KvRole, LayerSpec, TextConfig};
use super::gemma3::media_in_chunk;
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
    /// PLE gate [P, H], projection [H, P] and its norm; `None` when the model has no PLE.
    per_layer: Option<(Linear<'a>, Linear<'a>, RmsNorm)>,
    layer_scalar: f32,
}

impl<'a> DecoderLayer<'a> {
    fn new(cfg: &TextConfig, spec: &LayerSpec, w: &Weights<'a>) -> Result<Self, ModelError> {
        let (h, eps, p) = (cfg.hidden_size, cfg.eps, cfg.per_layer_input);
        let per_layer = if p > 0 {
            Some((
                Linear::new(w, "per_layer_input_gate", p, h)?,
                Linear::new(w, "per_layer_projection", h, p)?,
                RmsNorm::new(w, "post_per_layer_input_norm", h, eps, false)?,
            ))
        } else {
            None
        };
        // A buffer of ones by default; real checkpoints store it.
        let layer_scalar = if w.contains("layer_scalar") {
            w.vector("layer_scalar", 1)?[0]
        } else {
            1.0
        };
        Ok(Self {
            input_layernorm: RmsNorm::new(w, "input_layernorm", h, eps, false)?,
            self_attn: Attention::new(
                cfg,
                spec,
                &w.pp("self_attn"),
                &AttnFlavour {
                    plus_one: false,
                    v_norm: true,
                },
            )?,
            post_attention_layernorm: RmsNorm::new(w, "post_attention_layernorm", h, eps, false)?,
            pre_feedforward_layernorm: RmsNorm::new(w, "pre_feedforward_layernorm", h, eps, false)?,
            mlp: Mlp::new(&w.pp("mlp"), h, spec.intermediate_size)?,
            post_feedforward_layernorm: RmsNorm::new(
                w,
                "post_feedforward_layernorm",
                h,
                eps,
                false,
            )?,
            per_layer,
            layer_scalar,
        })
    }

    /// Runs rows `0..t` of `s.x` at positions `pos0..`; `ple_row0` is the PLE row of x's row 0.
    fn forward(
        &self,
        layer: usize,
        t: usize,
        pos0: usize,
        ple_row0: usize,
        cache: &mut KvCache,
        s: &mut Scratch,
    ) {
        let n = t * self.input_layernorm.dim;
        let norms = BlockNorms {
            input: &self.input_layernorm,
            post_attn: &self.post_attention_layernorm,
            pre_ff: &self.pre_feedforward_layernorm,
            post_ff: &self.post_feedforward_layernorm,
        };
        attention_and_mlp(layer, t, s, &norms, &self.mlp, |h, s, a| {
            self.self_attn.forward(layer, h, t, pos0, cache, s, a)
        });

        if let Some((gate, proj, norm)) = &self.per_layer {
            let mut a = std::mem::take(&mut s.a);
            let p = gate.out_dim;
            let stride = s.ext.ple_stride;
            let g = &mut s.ext.g[..t * p];
            gate.forward(&s.x[..n], t, g);
            for i in 0..t {
                let row = &s.ext.ple[(ple_row0 + i) * stride + layer * p..][..p];
                for (gv, pv) in g[i * p..(i + 1) * p].iter_mut().zip(row) {
                    *gv = cpu::gelu_tanh(*gv) * pv;
                }
            }
            proj.forward(g, t, &mut a[..n]);
            norm.forward(&mut a[..n]);
            cpu::add(&mut s.x[..n], &a[..n]);
            s.a = a;
        }
        if self.layer_scalar != 1.0 {
            cpu::scale(&mut s.x[..n], self.layer_scalar);
        }
    }

    fn bytes(&self) -> usize {
        let ple = self
            .per_layer
            .as_ref()
            .map_or(0, |(g, p, _)| g.bytes() + p.bytes());
        self.self_attn.bytes() + self.mlp.bytes() + ple
    }
}

/// Gemma 4's activation buffers besides the common ones: the per-layer inputs.
#[derive(Default)]
struct PleScratch {
    /// PLE inputs [t, layers * P].
    ple: Vec<f32>,
    ple_stride: usize,
    /// Token part of PLE for one row.
    ple_tok: Vec<f32>,
    /// PLE gate activations [t, P].
    g: Vec<f32>,
}

type Scratch = common::Scratch<PleScratch>;

/// The model-level PLE weights.
struct PerLayerEmbed<'a> {
    embed_tokens_per_layer: TensorView<'a>,
    per_layer_model_projection: Linear<'a>,
    per_layer_projection_norm: RmsNorm,
}

pub struct Model<'a> {
    cfg: TextConfig,
    embed_tokens: TensorView<'a>,
    embed_scale: f32,
    ple: Option<PerLayerEmbed<'a>>,
    layers: Vec<DecoderLayer<'a>>,
    norm: RmsNorm,
    /// Index of the first KV-sharing consumer (all later layers are consumers too).
    first_consumer: usize,
    pad_id: u32,
    scratch: Scratch,
}

impl<'a> Model<'a> {
    pub fn new(file: &'a CellmFile) -> Result<Self, ModelError> {
        Self::with_weights(file, Weights::text_stack(file))
    }

    /// Builds the model from `w` (the text stack of `file`, possibly with in-memory overrides).
    pub fn with_weights(file: &'a CellmFile, w: Weights<'a>) -> Result<Self, ModelError> {
        let cfg = config::gemma4(&file.header().config)?;
        let (h, v, np) = (cfg.hidden_size, cfg.vocab_size, cfg.per_layer_input);
        let embed_tokens = w.get("embed_tokens.weight", &[v, h])?;
        let ple = if np > 0 {
            let lp = cfg.num_layers * np;
            let table = w.matrix_with_cols("embed_tokens_per_layer.weight", lp)?;
            Some(PerLayerEmbed {
                embed_tokens_per_layer: table,
                per_layer_model_projection: Linear::new(&w, "per_layer_model_projection", lp, h)?,
                per_layer_projection_norm: RmsNorm::new(
                    &w,
                    "per_layer_projection_norm",
                    np,
                    cfg.eps,
                    false,
                )?,
            })
        } else {
            None
        };
        let layers = cfg
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| DecoderLayer::new(&cfg, spec, &w.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let first_consumer = cfg
            .layers
            .iter()
            .position(|l| matches!(l.kv, KvRole::Reuse(_)))
            .unwrap_or(cfg.num_layers);
        let norm = RmsNorm::new(&w, "norm", h, cfg.eps, false)?;
        let pad_id = file.header().tokenizer.pad_token_id.unwrap_or(0);
        Ok(Self {
            embed_scale: (h as f64).sqrt() as f32,
            cfg,
            embed_tokens,
            ple,
            layers,
            norm,
            first_consumer,
            pad_id,
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
        let lp = c.num_layers * c.per_layer_input;
        let s = &mut self.scratch;
        s.ext.ple_stride = lp;
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
            (&mut s.ext.ple, lp),
            (&mut s.ext.g, c.per_layer_input),
        ] {
            grow(buf, t * n);
        }
        grow(&mut s.ext.ple_tok, lp);
    }

    /// Embeddings of the chunk into `x`, then the PLE inputs from them.
    fn embed(&mut self, tokens: &[u32], media: &[(usize, &[f32])]) -> Result<(), ModelError> {
        let h = self.cfg.hidden_size;
        let t = tokens.len();
        for (i, &id) in tokens.iter().enumerate() {
            let row = &mut self.scratch.x[i * h..(i + 1) * h];
            match media.iter().find(|(p, _)| *p == i) {
                // Soft tokens replace the row and are not scaled by √hidden.
                Some((_, m)) => row.copy_from_slice(m),
                None => embed_row(&self.embed_tokens, id, self.embed_scale, row)?,
            }
        }
        let Some(ple) = &self.ple else {
            return Ok(());
        };
        let np = self.cfg.per_layer_input;
        let lp = self.scratch.ext.ple_stride;
        let s = &mut self.scratch;
        // Context part: (x0 · W_pmpᵀ) · H^-1/2, RMSNorm over each P-wide slice.
        let ctx = &mut s.ext.ple[..t * lp];
        ple.per_layer_model_projection
            .forward(&s.x[..t * h], t, ctx);
        cpu::scale(ctx, (h as f64).powf(-0.5) as f32);
        ple.per_layer_projection_norm.forward(ctx);
        // Token part: E_ple[id] · √P (placeholder positions use the pad id), then the mix.
        let tok_scale = (np as f64).sqrt() as f32;
        let mix = std::f32::consts::FRAC_1_SQRT_2;
        for (i, &id) in tokens.iter().enumerate() {
            let id = if media.iter().any(|(p, _)| *p == i) {
                self.pad_id
            } else {
                id
            };
            let tok = &mut s.ext.ple_tok[..lp];
            embed_row(&ple.embed_tokens_per_layer, id, tok_scale, tok)?;
            for (c, k) in s.ext.ple[i * lp..(i + 1) * lp].iter_mut().zip(tok.iter()) {
                *c = (*c + k) * mix;
            }
        }
        Ok(())
    }

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

impl TextModel for Model<'_> {
    fn config(&self) -> &TextConfig {
        &self.cfg
    }

    fn memory(&self) -> super::ModelMemory {
        let e = &self.scratch.ext;
        let ple = [&e.ple, &e.ple_tok, &e.g]
            .iter()
            .map(|v| 4 * v.capacity() as u64)
            .sum::<u64>();
        super::ModelMemory {
            scratch_bytes: self.scratch.bytes() + ple,
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
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
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
            let last_chunk = c0 + t == total;
            self.ensure(t);
            media_in_chunk(media, h, c0, t, &mut rows)?;
            self.embed(&tokens[c0..c0 + t], &rows)?;
            for l in 0..self.first_consumer {
                self.layers[l].forward(l, t, p, 0, cache, &mut self.scratch);
            }
            cache.set_len(p + t);
            match want {
                Logits::All => {
                    for l in self.first_consumer..self.layers.len() {
                        self.layers[l].forward(l, t, p, 0, cache, &mut self.scratch);
                    }
                    self.head(0, t, c0);
                }
                // A calibration observer must see the consumers' inputs at every position.
                Logits::Last if self.scratch.observer.is_some() => {
                    for l in self.first_consumer..self.layers.len() {
                        self.layers[l].forward(l, t, p, 0, cache, &mut self.scratch);
                    }
                    if last_chunk {
                        self.head(t - 1, 1, 0);
                    }
                }
                Logits::Last if last_chunk => {
                    // Consumers write no cache: only the last position matters (spec §3.5).
                    let last = t - 1;
                    self.scratch.x.copy_within(last * h..(last + 1) * h, 0);
                    for l in self.first_consumer..self.layers.len() {
                        self.layers[l].forward(l, 1, p + last, last, cache, &mut self.scratch);
                    }
                    self.head(0, 1, 0);
                }
                Logits::Last => {}
            }
            c0 += t;
        }
        Ok(&self.scratch.logits[..out_rows * v])
    }

    fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.bytes()).sum();
        let ple = self.ple.as_ref().map_or(0, |p| {
            p.per_layer_model_projection.bytes()
                + p.embed_tokens_per_layer.data.len() / p.embed_tokens_per_layer.rows().max(1)
        });
        layers + ple + self.embed_tokens.data.len()
    }

    fn forward_hidden(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<&[f32], ModelError> {
        let (total, h) = (tokens.len(), self.cfg.hidden_size);
        cache.reserve(pos0, total)?;
        // The logits buffer holds the normed rows (it is at least as large in normal use).
        grow(&mut self.scratch.logits, total * h);
        let chunk = cache.max_chunk();
        let mut c0 = 0;
        while c0 < total {
            let t = chunk.min(total - c0);
            let p = pos0 + c0;
            self.ensure(t);
            self.embed(&tokens[c0..c0 + t], &[])?;
            for l in 0..self.first_consumer {
                self.layers[l].forward(l, t, p, 0, cache, &mut self.scratch);
            }
            cache.set_len(p + t);
            for l in self.first_consumer..self.layers.len() {
                self.layers[l].forward(l, t, p, 0, cache, &mut self.scratch);
            }
            let s = &mut self.scratch;
            self.norm.forward(&mut s.x[..t * h]);
            s.logits[c0 * h..(c0 + t) * h].copy_from_slice(&s.x[..t * h]);
            c0 += t;
        }
        Ok(&self.scratch.logits[..total * h])
    }
}
