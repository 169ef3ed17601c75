//! Gemma 3 text decoder on the GPU: the same computation as [`crate::models::gemma3`], op for
//! op, on device buffers.
//!
//! A chunk of `t` tokens runs every projection, norm, RoPE and MLP batched over its rows, and
//! attention over all its query rows in one dispatch (each row at its own position). The K/V of
//! the whole chunk is stored before any query attends, which the ring size `window + chunk - 1`
//! allows.

use super::ahead::{AheadSlot, RecordsAhead};
use super::blocks::{
    ActWidths, Stream, TailEnd, TailWeights, TextActs, flush_before_layer, matmul_in,
    record_layer_tail,
};
use super::head::{GpuHead, HeadSpec};
use super::state::{DeviceState, StateSpec, linear, missing, vector};
use crate::format::CellmFile;
use crate::kernels::cpu::attention::AttnParams;
use crate::kernels::gpu::norm::{Into, NormWeight};
use crate::kernels::gpu::rope::NormRope;
use crate::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, attention, matmul, norm,
};
use crate::kv_cache::{KvCache, KvError, KvPrecision};
use crate::models::common::embed_row;
use crate::models::config::{self, TextConfig};
use crate::models::gemma3::media_in_chunk;
use crate::models::weights::Weights;
use crate::models::{Logits, MediaRows, ModelError, TextModel};
use crate::tensor::TensorView;
use std::ops::Range;

struct Layer {
    input_norm: GpuBuffer,
    post_attn_norm: GpuBuffer,
    pre_ff_norm: GpuBuffer,
    post_ff_norm: GpuBuffer,
    q: GpuWeight,
    k: GpuWeight,
    v: GpuWeight,
    o: GpuWeight,
    q_norm: GpuBuffer,
    k_norm: GpuBuffer,
    gate: GpuWeight,
    up: GpuWeight,
    down: GpuWeight,
    inv_freq: GpuBuffer,
    params: AttnParams,
    inter: usize,
    /// Bytes of this layer's matrices as stored in the file.
    bytes: usize,
}

pub struct Gemma3Gpu<'a> {
    ctx: GpuContext,
    cfg: TextConfig,
    embed_tokens: TensorView<'a>,
    embed_scale: f32,
    head: GpuHead,
    layers: Vec<Layer>,
    /// (kv_dim, window) of each layer's device KV cache.
    kv_dims: Vec<(usize, Option<usize>)>,
    kv_elem: ElemType,
    acts: Option<TextActs>,
    state: Option<DeviceState>,
    ahead: AheadSlot,
    /// Host copies: chunk embeddings and the logits returned to the caller.
    emb: Vec<f32>,
    out: Vec<f32>,
}

impl<'a> Gemma3Gpu<'a> {
    pub fn new(file: &'a CellmFile, ctx: GpuContext, kv: KvPrecision) -> Result<Self, ModelError> {
        let cfg = config::gemma3(&file.header().config)?;
        let w = Weights::text_stack(file);
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = w.get("embed_tokens.weight", &[vocab, h])?;
        if file.contains("lm_head.weight") {
            return Err(ModelError::Config(config::ConfigError::Invalid(
                "untied lm_head.weight is not supported".into(),
            )));
        }
        let head_weight = super::state::upload(&ctx, &embed_tokens)?;
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
            layers.push(Layer {
                input_norm: vector(&ctx, &lw, "input_layernorm", h)?,
                post_attn_norm: vector(&ctx, &lw, "post_attention_layernorm", h)?,
                pre_ff_norm: vector(&ctx, &lw, "pre_feedforward_layernorm", h)?,
                post_ff_norm: vector(&ctx, &lw, "post_feedforward_layernorm", h)?,
                q: linear(&ctx, &aw, "q_proj", nh * d, h, &mut bytes)?,
                k: linear(&ctx, &aw, "k_proj", nkv * d, h, &mut bytes)?,
                v: linear(&ctx, &aw, "v_proj", nkv * d, h, &mut bytes)?,
                o: linear(&ctx, &aw, "o_proj", h, nh * d, &mut bytes)?,
                q_norm: vector(&ctx, &aw, "q_norm", d)?,
                k_norm: vector(&ctx, &aw, "k_norm", d)?,
                gate: linear(&ctx, &mw, "gate_proj", inter, h, &mut bytes)?,
                up: linear(&ctx, &mw, "up_proj", inter, h, &mut bytes)?,
                down: linear(&ctx, &mw, "down_proj", h, inter, &mut bytes)?,
                inv_freq: GpuBuffer::from_f32(&ctx, &spec.rope.inv_freq),
                params: cfg.attn_params(spec),
                inter,
                bytes,
            });
        }
        let head = GpuHead::new(
            &ctx,
            head_weight,
            vector(&ctx, &w, "norm", h)?,
            HeadSpec {
                plus_one: true,
                eps: cfg.eps,
                softcap: cfg.final_softcap,
                hidden: h,
                vocab: cfg.vocab_size,
            },
        );
        ctx.wait()?;
        let kv_dims = layers
            .iter()
            .map(|l| (l.params.n_kv_heads * l.params.head_dim, l.params.window))
            .collect();
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
            head,
            layers,
            kv_dims,
            acts: None,
            state: None,
            ahead: AheadSlot::default(),
            emb: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Activation buffers for chunks of `rows` tokens (reallocated only when a longer chunk comes).
    fn ensure_acts(&mut self, rows: usize) {
        if self.acts.as_ref().is_some_and(|a| a.rows >= rows) {
            return;
        }
        let layers = self.layers.iter().map(|l| (&l.params, l.inter));
        let widths = ActWidths::of(self.cfg.hidden_size, layers);
        self.acts = Some(TextActs::new(&self.ctx, rows, &widths));
    }

    /// KV cache, attention scratch and head buffers, sized from the session's cache.
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

    /// Records one layer over the chunk's `t` rows at positions `p..`. A decode step's `stream`
    /// folds the residual adds into the next matvec's prologue (see [`Stream`]).
    fn record_layer<'s>(
        &'s self,
        enc: &mut Encoder<'_>,
        li: usize,
        run: &Range<usize>,
        t: usize,
        p: usize,
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
        let kvl = &s.kv.layers[li];
        let pr = &l.params;
        let (h, eps) = (self.cfg.hidden_size, self.cfg.eps);
        let (d, kvd) = (pr.head_dim, pr.n_kv_heads * pr.head_dim);

        let nw = |w| NormWeight {
            w: Some(w),
            eps,
            plus_one: true,
        };
        let owed = stream.as_mut().and_then(|st| st.take_owed());
        let outs = [&a.q, &a.k, &a.v];
        if let (Some(st), Some(owed)) = (stream.as_mut(), owed) {
            // a decode step: the owed residual add and the input norm in the q/k/v prologue
            let (x, pro) = st.add(a, owed, Some(nw(&l.input_norm)));
            matmul::matmul3_add_norm(enc, x, [&l.q, &l.k, &l.v], outs, &pro)?;
        } else if t == 1 {
            if !normed || stream.is_some() {
                let x = stream.as_ref().map_or(&a.x, |st| st.cur(a));
                norm::rmsnorm_to(enc, x, &a.h, t, h, nw(&l.input_norm), Into::Store)?;
            }
            // a decode step: q, k and v in one dispatch
            matmul::matmul3(enc, &a.h, 1, [&l.q, &l.k, &l.v], outs)?;
        } else {
            if !normed {
                norm::rmsnorm_to(enc, &a.x, &a.h, t, h, nw(&l.input_norm), Into::Store)?;
            }
            matmul_in(enc, a, &a.h, t, &l.q, &a.q)?;
            matmul_in(enc, a, &a.h, t, &l.k, &a.k)?;
            matmul_in(enc, a, &a.h, t, &l.v, &a.v)?;
        }
        // q/k norms and RoPE happen in the K store and as attention loads q
        let rope = |w| NormRope {
            norm: nw(w),
            inv_freq: &l.inv_freq,
        };
        let (src, caches) = ((&a.k, &a.v), (&kvl.k, &kvl.v));
        let k_rope = Some(rope(&l.k_norm));
        attention::store_kv_pair(enc, src, t, (kvd, d), p, caches, kvl.slots, None, k_rope)?;
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
        let end = TailEnd {
            mlp_scale: 1.0,
            next,
        };
        record_layer_tail(
            enc,
            a,
            &s.scratch,
            (t, p),
            (kvl, pr),
            &tail,
            nw,
            end,
            stream,
        )
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
        self.head.record(enc, &a.x, first, rows)
    }

    fn embed(&mut self, tokens: &[u32], media: &[(usize, &[f32])]) -> Result<(), ModelError> {
        let h = self.cfg.hidden_size;
        self.emb.resize(tokens.len() * h, 0.0);
        for (i, &id) in tokens.iter().enumerate() {
            let row = &mut self.emb[i * h..(i + 1) * h];
            match media.iter().find(|(p, _)| *p == i) {
                // Soft tokens are not scaled by √hidden.
                Some((_, m)) => row.copy_from_slice(m),
                None => embed_row(&self.embed_tokens, id, self.embed_scale, row)?,
            }
        }
        let Some(a) = self.acts.as_ref() else {
            return Err(ModelError::Gpu("activations missing".into()));
        };
        a.x.write_f32(&self.ctx, 0, &self.emb)?;
        Ok(())
    }
}

impl TextModel for Gemma3Gpu<'_> {
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
        let v = self.cfg.vocab_size;
        if total == 0 {
            return Ok(&[]);
        }
        // The session's cache only keeps the length here (its buffers stay empty): the K/V
        // live on the device.
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
        let mut rows = Vec::new();
        let mut c0 = 0;
        while c0 < total {
            let t = chunk.min(total - c0);
            let p = pos0 + c0;
            self.ensure_acts(t);
            self.ensure_state(cache, p + t)?;
            media_in_chunk(media, self.cfg.hidden_size, c0, t, &mut rows)?;
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
            let run = 0..self.layers.len();
            for li in run.clone() {
                self.record_layer(&mut enc, li, &run, t, p, None)?;
            }
            match want {
                Logits::Last if c0 + t == total => {
                    self.record_head(&mut enc, t - 1, 1)?;
                    enc.submit()?;
                    self.record_ahead(cache, p + t)?;
                    self.head.read(&self.ctx, &mut self.out[..v])?;
                }
                Logits::Last => enc.submit()?,
                Logits::All => {
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
            }
            cache.set_len(p + t);
            c0 += t;
        }
        Ok(&self.out[..out_rows * v])
    }

    fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.bytes).sum();
        layers + self.embed_tokens.data.len()
    }
}

impl RecordsAhead for Gemma3Gpu<'_> {
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

    /// Records a one-token decode step at position `p` (the chunk loop of `forward` for
    /// `t = 1` with the last logits).
    fn record_token(&self, enc: &mut Encoder<'_>, p: usize) -> Result<(), GpuError> {
        let Some(a) = self.acts.as_ref() else {
            return Err(missing());
        };
        let mut stream = Stream::new();
        let run = 0..self.layers.len();
        for li in run.clone() {
            self.record_layer(enc, li, &run, 1, p, Some(&mut stream))?;
        }
        let owed = stream.take_owed().map(|(post, scale)| (&a.a, post, scale));
        self.head.record_step(enc, stream.cur(a), owed)
    }

    fn embed_token(&mut self, token: &[u32]) -> Result<(), ModelError> {
        self.embed(token, &[])
    }
}
