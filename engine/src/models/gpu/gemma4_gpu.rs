//! Gemma 4 text decoder on the GPU: the same computation as [`crate::models::gemma4`], op for
//! op, on device buffers (chunking and attention as in [`super::gemma3_gpu`]).
//!
//! Per-layer embeddings (PLE): the context part (projection of the chunk's embeddings, scaled
//! and normed) is computed on the device; the token part is gathered on the CPU from the
//! memory-mapped table (one row per token) and uploaded with the chunk. Each layer copies its
//! P-wide slice of every row into a small buffer for the gate. KV-sharing consumers attend over
//! their producer's device cache and, for `Logits::Last`, run on the last row only.

use super::ahead::{AheadSlot, RecordsAhead};
use super::blocks::{
    ActWidths, Stream, TailEnd, TailWeights, TextActs, flush_before_layer, matmul_in,
    record_layer_tail, record_post_add,
};
use super::head::{GpuHead, HeadSpec};
use super::state::{DeviceState, StateSpec, linear, missing, vector};
use crate::format::CellmFile;
use crate::kernels::cpu::attention::AttnParams;
use crate::kernels::gpu::norm::{Into, NormWeight};
use crate::kernels::gpu::rope::NormRope;
use crate::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, attention, elementwise, matmul,
    norm,
};
use crate::kv_cache::{KvCache, KvError, KvPrecision};
use crate::models::common::embed_row;
use crate::models::config::{self, KvRole, TextConfig};
use crate::models::gemma3::media_in_chunk;
use crate::models::weights::Weights;
use crate::models::{Logits, MediaRows, ModelError, TextModel};
use crate::tensor::TensorView;
use std::ops::Range;

struct KvProj {
    k: GpuWeight,
    v: GpuWeight,
    k_norm: GpuBuffer,
}

struct Layer {
    input_norm: GpuBuffer,
    post_attn_norm: GpuBuffer,
    pre_ff_norm: GpuBuffer,
    post_ff_norm: GpuBuffer,
    q: GpuWeight,
    q_norm: GpuBuffer,
    kv: Option<KvProj>,
    o: GpuWeight,
    gate: GpuWeight,
    up: GpuWeight,
    down: GpuWeight,
    /// PLE gate [P, H], projection [H, P], post norm [H].
    per_layer: Option<(GpuWeight, GpuWeight, GpuBuffer)>,
    layer_scalar: f32,
    inv_freq: GpuBuffer,
    params: AttnParams,
    inter: usize,
    /// Index into the device KV layers (its own or its producer's).
    kv_slot: usize,
    bytes: usize,
}

struct Ple<'a> {
    table: TensorView<'a>,
    projection: GpuWeight,
    norm: GpuBuffer,
    projection_bytes: usize,
}

struct Acts {
    text: TextActs,
    /// PLE inputs [rows, L * P], the token part [rows, L * P], one layer's slice [rows, P] and
    /// the gate activations [rows, P].
    ple: GpuBuffer,
    ple_tok: GpuBuffer,
    g: GpuBuffer,
}

pub struct Gemma4Gpu<'a> {
    ctx: GpuContext,
    cfg: TextConfig,
    embed_tokens: TensorView<'a>,
    embed_scale: f32,
    ple: Option<Ple<'a>>,
    head: GpuHead,
    layers: Vec<Layer>,
    /// (kv_dim, window) of each device KV layer (the producers).
    kv_dims: Vec<(usize, Option<usize>)>,
    first_consumer: usize,
    pad_id: u32,
    kv_elem: ElemType,
    acts: Option<Acts>,
    state: Option<DeviceState>,
    ahead: AheadSlot,
    emb: Vec<f32>,
    tok: Vec<f32>,
    out: Vec<f32>,
}

impl<'a> Gemma4Gpu<'a> {
    pub fn new(file: &'a CellmFile, ctx: GpuContext, kv: KvPrecision) -> Result<Self, ModelError> {
        let cfg = config::gemma4(&file.header().config)?;
        let w = Weights::text_stack(file);
        let (h, vocab, np) = (cfg.hidden_size, cfg.vocab_size, cfg.per_layer_input);
        let embed_tokens = w.get("embed_tokens.weight", &[vocab, h])?;
        let ple = if np > 0 {
            let lp = cfg.num_layers * np;
            let table = w.matrix_with_cols("embed_tokens_per_layer.weight", lp)?;
            let mut projection_bytes = 0;
            Some(Ple {
                table,
                projection: linear(
                    &ctx,
                    &w,
                    "per_layer_model_projection",
                    lp,
                    h,
                    &mut projection_bytes,
                )?,
                norm: vector(&ctx, &w, "per_layer_projection_norm", np)?,
                projection_bytes,
            })
        } else {
            None
        };
        let head_weight = super::state::upload(&ctx, &embed_tokens)?;
        let mut kv_dims = Vec::new();
        let mut kv_slot_of = Vec::with_capacity(cfg.layers.len());
        let mut layers = Vec::with_capacity(cfg.layers.len());
        for (i, spec) in cfg.layers.iter().enumerate() {
            let lw = w.pp("layers").pp(i);
            let aw = lw.pp("self_attn");
            let mw = lw.pp("mlp");
            let (d, nh, nkv, inter) = (
                spec.head_dim,
                cfg.num_heads,
                spec.num_kv_heads,
                spec.intermediate_size,
            );
            if spec.rope.inv_freq.len() != d / 2 {
                return Err(ModelError::Gpu(format!(
                    "layer {i}: {} RoPE frequencies for head_dim {d}",
                    spec.rope.inv_freq.len()
                )));
            }
            let mut bytes = 0;
            let (kv, kv_slot) = match spec.kv {
                KvRole::Own => {
                    kv_dims.push((nkv * d, spec.window));
                    let proj = KvProj {
                        k: linear(&ctx, &aw, "k_proj", nkv * d, h, &mut bytes)?,
                        v: linear(&ctx, &aw, "v_proj", nkv * d, h, &mut bytes)?,
                        k_norm: vector(&ctx, &aw, "k_norm", d)?,
                    };
                    (Some(proj), kv_dims.len() - 1)
                }
                KvRole::Reuse(p) => match kv_slot_of.get(p) {
                    Some(&s) => (None, s),
                    None => {
                        return Err(ModelError::Gpu(format!(
                            "layer {i} reuses the KV of later layer {p}"
                        )));
                    }
                },
            };
            kv_slot_of.push(kv_slot);
            let per_layer = if np > 0 {
                Some((
                    linear(&ctx, &lw, "per_layer_input_gate", np, h, &mut bytes)?,
                    linear(&ctx, &lw, "per_layer_projection", h, np, &mut bytes)?,
                    vector(&ctx, &lw, "post_per_layer_input_norm", h)?,
                ))
            } else {
                None
            };
            let layer_scalar = if lw.contains("layer_scalar") {
                lw.vector("layer_scalar", 1)?[0]
            } else {
                1.0
            };
            layers.push(Layer {
                input_norm: vector(&ctx, &lw, "input_layernorm", h)?,
                post_attn_norm: vector(&ctx, &lw, "post_attention_layernorm", h)?,
                pre_ff_norm: vector(&ctx, &lw, "pre_feedforward_layernorm", h)?,
                post_ff_norm: vector(&ctx, &lw, "post_feedforward_layernorm", h)?,
                q: linear(&ctx, &aw, "q_proj", nh * d, h, &mut bytes)?,
                q_norm: vector(&ctx, &aw, "q_norm", d)?,
                kv,
                o: linear(&ctx, &aw, "o_proj", h, nh * d, &mut bytes)?,
                gate: linear(&ctx, &mw, "gate_proj", inter, h, &mut bytes)?,
                up: linear(&ctx, &mw, "up_proj", inter, h, &mut bytes)?,
                down: linear(&ctx, &mw, "down_proj", h, inter, &mut bytes)?,
                per_layer,
                layer_scalar,
                inv_freq: GpuBuffer::from_f32(&ctx, &spec.rope.inv_freq),
                params: cfg.attn_params(spec),
                inter,
                kv_slot,
                bytes,
            });
        }
        let first_consumer = cfg
            .layers
            .iter()
            .position(|l| matches!(l.kv, KvRole::Reuse(_)))
            .unwrap_or(cfg.num_layers);
        let head = GpuHead::new(
            &ctx,
            head_weight,
            vector(&ctx, &w, "norm", h)?,
            HeadSpec {
                plus_one: false,
                eps: cfg.eps,
                softcap: cfg.final_softcap,
                hidden: h,
                vocab: cfg.vocab_size,
            },
        );
        let pad_id = file.header().tokenizer.pad_token_id.unwrap_or(0);
        ctx.wait()?;
        Ok(Self {
            embed_scale: (h as f64).sqrt() as f32,
            kv_elem: if kv == KvPrecision::F32 {
                ElemType::F32
            } else {
                ElemType::F16
            },
            ctx,
            cfg,
            embed_tokens,
            ple,
            head,
            layers,
            kv_dims,
            first_consumer,
            pad_id,
            acts: None,
            state: None,
            ahead: AheadSlot::default(),
            emb: Vec::new(),
            tok: Vec::new(),
            out: Vec::new(),
        })
    }

    fn ensure_acts(&mut self, rows: usize) {
        if self.acts.as_ref().is_some_and(|a| a.text.rows >= rows) {
            return;
        }
        let layers = self.layers.iter().map(|l| (&l.params, l.inter));
        let widths = ActWidths::of(self.cfg.hidden_size, layers);
        let np = self.cfg.per_layer_input;
        let lp = self.cfg.num_layers * np;
        let z = |n: usize| GpuBuffer::zeros(&self.ctx, n.max(1), ElemType::F32);
        self.acts = Some(Acts {
            text: TextActs::new(&self.ctx, rows, &widths),
            ple: z(rows * lp),
            ple_tok: z(rows * lp),
            g: z(rows * np),
        });
    }

    fn ensure_state(&mut self, cache: &KvCache, end: usize) -> Result<(), ModelError> {
        let spec = StateSpec {
            kv_dims: &self.kv_dims,
            kv_elem: self.kv_elem,
            heads: self.cfg.num_heads,
        };
        DeviceState::ensure(
            &mut self.state,
            &self.ctx,
            &spec,
            &mut self.head,
            cache,
            end,
        )?;
        Ok(())
    }

    /// Records layer `li` over `t` rows of `x` at positions `p..`; `ple_row0` is the PLE row of
    /// x's row 0. A decode step's `stream` folds the residual adds into the next matvec's
    /// prologue (see [`Stream`]).
    #[allow(clippy::too_many_arguments)]
    fn record_layer<'s>(
        &'s self,
        enc: &mut Encoder<'_>,
        li: usize,
        run: &Range<usize>,
        t: usize,
        p: usize,
        ple_row0: usize,
        mut stream: Option<&mut Stream<'s>>,
    ) -> Result<(), GpuError> {
        let (Some(a), Some(s)) = (self.acts.as_ref(), self.state.as_ref()) else {
            return Err(missing());
        };
        flush_before_layer(enc, li)?;
        // Within a run of layers over the same rows, each layer's last residual add also
        // computes the next layer's input norm (one dispatch instead of two).
        let normed = li > run.start;
        let next = (li + 1 < run.end).then(|| &self.layers[li + 1].input_norm);
        let l = &self.layers[li];
        let kvl = &s.kv.layers[l.kv_slot];
        let pr = &l.params;
        let (h, eps) = (self.cfg.hidden_size, self.cfg.eps);
        let (d, kvd) = (pr.head_dim, pr.n_kv_heads * pr.head_dim);

        let nw = |w| NormWeight {
            w: Some(w),
            eps,
            plus_one: false,
        };
        // q/k norms and RoPE happen in the K store and as attention loads q
        let rope = |w| NormRope {
            norm: nw(w),
            inv_freq: &l.inv_freq,
        };
        let owed = stream.as_mut().and_then(|st| st.take_owed());
        if let (Some(st), Some(owed)) = (stream.as_mut(), owed) {
            // a decode step: the owed residual add and the input norm in the q/k/v prologue
            let (x, pro) = st.add(&a.text, owed, Some(nw(&l.input_norm)));
            match &l.kv {
                Some(kv) => {
                    let outs = [&a.text.q, &a.text.k, &a.text.v];
                    matmul::matmul3_add_norm(enc, x, [&l.q, &kv.k, &kv.v], outs, &pro)?;
                }
                None => matmul::matvec_add_norm(enc, x, &l.q, &a.text.q, &pro)?,
            }
        } else {
            if !normed || stream.is_some() {
                let x = stream.as_ref().map_or(&a.text.x, |st| st.cur(&a.text));
                norm::rmsnorm_to(enc, x, &a.text.h, t, h, nw(&l.input_norm), Into::Store)?;
            }
            self.record_qkv(enc, l, t)?;
        }
        if let Some(kv) = &l.kv {
            let (src, caches) = ((&a.text.k, &a.text.v), (&kvl.k, &kvl.v));
            let (dims, k_rope) = ((kvd, d), Some(rope(&kv.k_norm)));
            attention::store_kv_pair(enc, src, t, dims, p, caches, kvl.slots, Some(eps), k_rope)?;
        }
        let tail = TailWeights {
            q_rope: rope(&l.q_norm),
            o: &l.o,
            post_attn_norm: &l.post_attn_norm,
            pre_ff_norm: &l.pre_ff_norm,
            gate: &l.gate,
            up: &l.up,
            down: &l.down,
            post_ff_norm: &l.post_ff_norm,
        };
        // The layer scalar scales the layer's last residual add.
        let end = match l.per_layer {
            Some(_) => TailEnd {
                mlp_scale: 1.0,
                next: None,
            },
            None => TailEnd {
                mlp_scale: l.layer_scalar,
                next,
            },
        };
        let (scratch, at) = (&s.scratch, (t, p));
        let st = stream.as_deref_mut();
        record_layer_tail(enc, &a.text, scratch, at, (kvl, pr), &tail, nw, end, st)?;

        if let Some((gate, proj, pnorm)) = &l.per_layer {
            let np = self.cfg.per_layer_input;
            let lp = self.cfg.num_layers * np;
            let off = ple_row0 * lp + li * np;
            if let Some(st) = stream {
                // a decode step: the MLP's residual add in the gate's prologue
                let aux = (&a.ple, off);
                match st.take_owed() {
                    Some(owed) => {
                        let (x, pro) = st.add(&a.text, owed, None);
                        matmul::matvec_gelu_mul_add_norm(enc, x, gate, &a.g, aux, &pro)?;
                    }
                    None => matmul::matvec_gelu_mul(enc, st.cur(&a.text), gate, &a.g, aux.0, off)?,
                }
                matmul::matmul(enc, &a.g, 1, proj, &a.text.a)?;
                st.owe(nw(pnorm), l.layer_scalar);
                return Ok(());
            }
            if t == 1 {
                matmul::matvec_gelu_mul(enc, &a.text.x, gate, &a.g, &a.ple, off)?;
            } else {
                matmul::matmul(enc, &a.text.x, t, gate, &a.g)?;
                elementwise::gelu_mul_slice(enc, &a.g, t, np, &a.ple, off, lp)?;
            }
            matmul::matmul(enc, &a.g, t, proj, &a.text.a)?;
            let next = next.map(nw);
            record_post_add(
                enc,
                &a.text.a,
                &a.text.x,
                &a.text.h,
                t,
                h,
                nw(pnorm),
                l.layer_scalar,
                next,
            )?;
        }
        Ok(())
    }

    /// Records the q projection (and k, v for a layer with its own cache) of the `t` normed rows.
    fn record_qkv(&self, enc: &mut Encoder<'_>, l: &Layer, t: usize) -> Result<(), GpuError> {
        let Some(a) = self.acts.as_ref() else {
            return Err(missing());
        };
        let h = &a.text.h;
        match &l.kv {
            // a decode step: q, k and v in one dispatch
            Some(kv) if t == 1 => {
                let outs = [&a.text.q, &a.text.k, &a.text.v];
                matmul::matmul3(enc, h, 1, [&l.q, &kv.k, &kv.v], outs)
            }
            Some(kv) => {
                matmul_in(enc, &a.text, h, t, &l.q, &a.text.q)?;
                matmul_in(enc, &a.text, h, t, &kv.k, &a.text.k)?;
                matmul_in(enc, &a.text, h, t, &kv.v, &a.text.v)
            }
            None => matmul_in(enc, &a.text, h, t, &l.q, &a.text.q),
        }
    }

    /// Records the PLE inputs of the chunk's `t` rows (the token part is already uploaded).
    fn record_ple(&self, enc: &mut Encoder<'_>, t: usize) -> Result<(), GpuError> {
        let (Some(a), Some(ple)) = (self.acts.as_ref(), self.ple.as_ref()) else {
            return Ok(());
        };
        let (h, np) = (self.cfg.hidden_size, self.cfg.per_layer_input);
        // Context part: (x0 · W_pmpᵀ) · H^-1/2, RMSNorm over each P-wide slice.
        matmul::matmul(enc, &a.text.x, t, &ple.projection, &a.ple)?;
        // (RMSNorm(context · H^-1/2) + token) / √2, one dispatch
        let scales = (
            (h as f64).powf(-0.5) as f32,
            std::f32::consts::FRAC_1_SQRT_2,
        );
        let rows = t * self.cfg.num_layers;
        norm::ple_combine(
            enc,
            &a.ple,
            &a.ple_tok,
            rows,
            np,
            &ple.norm,
            self.cfg.eps,
            scales,
        )?;
        Ok(())
    }

    /// Records the head for `rows` rows of the chunk's hidden states from row `first`.
    fn record_head(
        &self,
        enc: &mut Encoder<'_>,
        first: usize,
        rows: usize,
    ) -> Result<(), GpuError> {
        let Some(a) = self.acts.as_ref() else {
            return Err(missing());
        };
        self.head.record(enc, &a.text.x, first, rows)
    }

    /// Uploads the chunk's embeddings and the token part of its PLE inputs.
    fn embed(&mut self, tokens: &[u32], media: &[(usize, &[f32])]) -> Result<(), ModelError> {
        let h = self.cfg.hidden_size;
        self.emb.resize(tokens.len() * h, 0.0);
        for (i, &id) in tokens.iter().enumerate() {
            let row = &mut self.emb[i * h..(i + 1) * h];
            match media.iter().find(|(p, _)| *p == i) {
                Some((_, m)) => row.copy_from_slice(m),
                None => embed_row(&self.embed_tokens, id, self.embed_scale, row)?,
            }
        }
        let Some(a) = self.acts.as_ref() else {
            return Err(ModelError::Gpu("activations missing".into()));
        };
        a.text.x.write_f32(&self.ctx, 0, &self.emb)?;
        if let Some(ple) = &self.ple {
            let np = self.cfg.per_layer_input;
            let lp = self.cfg.num_layers * np;
            let tok_scale = (np as f64).sqrt() as f32;
            self.tok.resize(tokens.len() * lp, 0.0);
            for (i, &id) in tokens.iter().enumerate() {
                // Placeholder positions use the pad id.
                let id = if media.iter().any(|(p, _)| *p == i) {
                    self.pad_id
                } else {
                    id
                };
                embed_row(
                    &ple.table,
                    id,
                    tok_scale,
                    &mut self.tok[i * lp..(i + 1) * lp],
                )?;
            }
            a.ple_tok.write_f32(&self.ctx, 0, &self.tok)?;
        }
        Ok(())
    }
}

impl TextModel for Gemma4Gpu<'_> {
    fn config(&self) -> &TextConfig {
        &self.cfg
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
        // The session's cache only keeps the length: the K/V live on the device.
        if pos0 + total > cache.limit() {
            return Err(KvError::ContextFull {
                tokens: pos0 + total,
                limit: cache.limit(),
            }
            .into());
        }
        let out_rows = if want == Logits::All { total } else { 1 };
        self.out.resize(out_rows * v, 0.0);
        let t0 = self.ctx.clock();
        if self.run_ahead(tokens, media.is_some(), want, pos0, cache)? {
            self.head.read(&self.ctx, &mut self.out[..v])?;
            self.ctx
                .note_time("host: recorded step, embed to logits", t0);
            return Ok(&self.out[..v]);
        }
        let chunk = cache.max_chunk().max(1);
        let n_layers = self.layers.len();
        let mut rows = Vec::new();
        let mut c0 = 0;
        while c0 < total {
            let t = chunk.min(total - c0);
            let p = pos0 + c0;
            let last_chunk = c0 + t == total;
            self.ensure_acts(t);
            self.ensure_state(cache, p + t)?;
            media_in_chunk(media, h, c0, t, &mut rows)?;
            self.embed(&tokens[c0..c0 + t], &rows)?;
            let mut enc = Encoder::new(&self.ctx);
            if t == 1 && c0 + 1 == total && want == Logits::Last && rows.is_empty() {
                // a decode step not recorded ahead: the same recording (residual adds fused)
                self.record_token(&mut enc, p)?;
                enc.submit()?;
                self.record_ahead(cache, p + 1)?;
                self.head.read(&self.ctx, &mut self.out[..v])?;
                cache.set_len(p + 1);
                c0 += 1;
                continue;
            }
            self.record_ple(&mut enc, t)?;
            let producers = 0..self.first_consumer;
            for li in producers.clone() {
                self.record_layer(&mut enc, li, &producers, t, p, 0, None)?;
            }
            let consumers = self.first_consumer..n_layers;
            match want {
                Logits::All => {
                    for li in consumers.clone() {
                        self.record_layer(&mut enc, li, &consumers, t, p, 0, None)?;
                    }
                    enc.submit()?;
                    let head_rows = self.head.ensure(&self.ctx, t);
                    let mut r0 = 0;
                    while r0 < t {
                        let r = head_rows.min(t - r0);
                        let mut enc = Encoder::new(&self.ctx);
                        self.record_head(&mut enc, r0, r)?;
                        enc.submit()?;
                        self.head
                            .read(&self.ctx, &mut self.out[(c0 + r0) * v..(c0 + r0 + r) * v])?;
                        r0 += r;
                    }
                }
                Logits::Last if last_chunk => {
                    // Consumers write no cache: only the last position matters.
                    let last = t - 1;
                    if self.first_consumer < n_layers && last > 0 {
                        let Some(a) = self.acts.as_ref() else {
                            return Err(ModelError::Gpu("activations missing".into()));
                        };
                        enc.copy(&a.text.x, last * h, &a.text.h, 0, h)?;
                        enc.copy(&a.text.h, 0, &a.text.x, 0, h)?;
                    }
                    let row = if self.first_consumer < n_layers {
                        for li in consumers.clone() {
                            self.record_layer(&mut enc, li, &consumers, 1, p + last, last, None)?;
                        }
                        0
                    } else {
                        last
                    };
                    self.record_head(&mut enc, row, 1)?;
                    enc.submit()?;
                    self.record_ahead(cache, p + t)?;
                    self.head.read(&self.ctx, &mut self.out[..v])?;
                }
                Logits::Last => enc.submit()?,
            }
            cache.set_len(p + t);
            c0 += t;
        }
        Ok(&self.out[..out_rows * v])
    }

    fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.bytes).sum();
        let ple = self.ple.as_ref().map_or(0, |p| {
            p.projection_bytes + p.table.data.len() / p.table.rows().max(1)
        });
        layers + ple + self.embed_tokens.data.len()
    }
}

impl RecordsAhead for Gemma4Gpu<'_> {
    fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    fn slot(&mut self) -> &mut AheadSlot {
        &mut self.ahead
    }

    fn prepare_step(&mut self, cache: &KvCache, end: usize) -> Result<u64, ModelError> {
        self.ensure_acts(1);
        self.ensure_state(cache, end)?;
        Ok(self.state.as_ref().map_or(0, |s| s.generation))
    }

    /// Records a one-token decode step at position `p`: the chunk loop of `forward` for
    /// `t = 1` with the last logits.
    /// The residual adds are folded into the next matvec's prologue ([`Stream`]).
    fn record_token(&self, enc: &mut Encoder<'_>, p: usize) -> Result<(), GpuError> {
        let Some(a) = self.acts.as_ref() else {
            return Err(missing());
        };
        self.record_ple(enc, 1)?;
        let mut stream = Stream::new();
        let all = 0..self.layers.len();
        for li in all.clone() {
            self.record_layer(enc, li, &all, 1, p, 0, Some(&mut stream))?;
        }
        let owed = stream
            .take_owed()
            .map(|(post, scale)| (&a.text.a, post, scale));
        self.head.record_step(enc, stream.cur(&a.text), owed)
    }

    fn embed_token(&mut self, token: &[u32]) -> Result<(), ModelError> {
        self.embed(token, &[])
    }
}
