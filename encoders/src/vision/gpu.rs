//! The vision tower on the GPU: [`VisionGpu`] holds device copies of the tower and embedder
//! weights and encodes an image with the same soft tokens as [`VisionTower::encode`].
//!
//! One command encoder per image, one read-back (the embedded soft tokens). The host only
//! prepares the per-image tables the CPU tower also builds (the real patches' pixels and grid
//! positions, the RoPE angles, the pooling slots) and uploads them; everything else (patch
//! embedding, position embeddings, every layer, pooling, scaling, standardisation, the
//! embedder's norm and projection) runs on the device. A clipped linear is the towers' tiled
//! GEMM with its clamps fused into the GEMM's loads and stores.

use super::PreprocessedImage;
use super::tower::{EMBEDDER, RealPatches, RopeTable, VisionTower, pool_slots};
use crate::EncoderError;
use crate::clipped::ClippedLinear;
use cellm_engine::kernels::gpu::norm::{self, NormWeight};
use cellm_engine::kernels::gpu::towers::vision::{self as ops, AttnShape, Clip, PoolShape};
use cellm_engine::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, elementwise, matmul,
};
use std::sync::{Arc, Mutex};

fn gpu_err(e: GpuError) -> EncoderError {
    EncoderError::Invalid(format!("vision tower on the GPU: {e}"))
}

/// Finite clamp bounds, or None when both sides are open.
fn bounds(lo: f32, hi: f32) -> Option<(f32, f32)> {
    (lo > f32::NEG_INFINITY || hi < f32::INFINITY).then_some((lo, hi))
}

/// A clipped linear on the device.
struct LinearGpu {
    w: GpuWeight,
    clip: Clip,
}

impl LinearGpu {
    fn upload(ctx: &GpuContext, l: &ClippedLinear<'_>) -> Result<Self, GpuError> {
        Ok(Self {
            w: GpuWeight::upload(ctx, &l.weight)?,
            clip: Clip {
                input: bounds(l.input_min, l.input_max),
                output: bounds(l.output_min, l.output_max),
            },
        })
    }

    /// `out = self(x)` for `n` tokens (`tmp`: scratch for an unfused input clamp).
    fn record(
        &self,
        enc: &mut Encoder<'_>,
        x: &GpuBuffer,
        n: usize,
        out: &GpuBuffer,
        tmp: &GpuBuffer,
    ) -> Result<(), GpuError> {
        ops::clipped_matmul(enc, x, n, &self.w, out, self.clip, Some(tmp))
    }
}

struct LayerGpu {
    q: LinearGpu,
    k: LinearGpu,
    v: LinearGpu,
    o: LinearGpu,
    gate: LinearGpu,
    up: LinearGpu,
    down: LinearGpu,
    input_ln: GpuBuffer,
    post_attn_ln: GpuBuffer,
    pre_ff_ln: GpuBuffer,
    post_ff_ln: GpuBuffer,
    q_norm: GpuBuffer,
    k_norm: GpuBuffer,
}

/// The widths the tower's buffers are sized by.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    patch_dim: usize,
    layers: usize,
    text_hidden: usize,
    table_size: usize,
    eps: f32,
}

impl Dims {
    fn of(tower: &VisionTower<'_>) -> Self {
        let c = &tower.config;
        Self {
            hidden: c.hidden,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate,
            patch_dim: c.patch_size * c.patch_size * 3,
            layers: tower.layers.len(),
            text_hidden: tower.output_dim(),
            table_size: c.position_embedding_size,
            eps: c.eps,
        }
    }
}

/// Per-image device buffers for up to `cap` real patches (kept between images).
struct Scratch {
    cap: usize,
    pixels: GpuBuffer,
    pos: GpuBuffer,
    rope: GpuBuffer,
    x: GpuBuffer,
    hs: GpuBuffer,
    tmp: GpuBuffer,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    attn: GpuBuffer,
    o: GpuBuffer,
    gate: GpuBuffer,
    up: GpuBuffer,
}

impl Scratch {
    fn new(ctx: &GpuContext, cap: usize, d: Dims) -> Self {
        let buf = |len: usize| GpuBuffer::zeros(ctx, cap * len, ElemType::F32);
        let (qd, kvd) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        Self {
            cap,
            pixels: buf(d.patch_dim),
            pos: buf(2),
            rope: buf(d.head_dim),
            x: buf(d.hidden),
            hs: buf(d.hidden),
            tmp: buf(d.hidden.max(qd).max(d.intermediate)),
            q: buf(qd),
            k: buf(kvd),
            v: buf(kvd),
            attn: buf(qd),
            o: buf(d.hidden),
            gate: buf(d.intermediate),
            up: buf(d.intermediate),
        }
    }
}

/// The vision tower and its embedder on the GPU.
pub struct VisionGpu {
    ctx: Arc<GpuContext>,
    dims: Dims,
    input_proj: GpuWeight,
    /// The x then the y position table, `[2 * size, hidden]` f32.
    pos_table: GpuBuffer,
    layers: Vec<LayerGpu>,
    /// std_bias then std_scale when the tower standardises.
    standardize: Option<GpuBuffer>,
    embed: GpuWeight,
    scratch: Mutex<Option<Scratch>>,
}

impl VisionGpu {
    /// Uploads the tower's and the embedder's weights (matrices in their stored dtype).
    pub fn new(ctx: Arc<GpuContext>, tower: &VisionTower<'_>) -> Result<VisionGpu, EncoderError> {
        let c: &GpuContext = &ctx;
        let f32s = |v: &[f32]| GpuBuffer::from_f32(c, v);
        let lin = |l: &ClippedLinear<'_>| LinearGpu::upload(c, l).map_err(gpu_err);
        let mut layers = Vec::with_capacity(tower.layers.len());
        for l in &tower.layers {
            layers.push(LayerGpu {
                q: lin(&l.q)?,
                k: lin(&l.k)?,
                v: lin(&l.v)?,
                o: lin(&l.o)?,
                gate: lin(&l.gate)?,
                up: lin(&l.up)?,
                down: lin(&l.down)?,
                input_ln: f32s(&l.input_ln),
                post_attn_ln: f32s(&l.post_attn_ln),
                pre_ff_ln: f32s(&l.pre_ff_ln),
                post_ff_ln: f32s(&l.post_ff_ln),
                q_norm: f32s(&l.q_norm),
                k_norm: f32s(&l.k_norm),
            });
        }
        let standardize = tower
            .standardize
            .as_ref()
            .map(|(bias, scale)| f32s(&[bias.as_slice(), scale].concat()));
        let embed = tower
            .file
            .tensor(&format!("{EMBEDDER}.embedding_projection.weight"))?;
        Ok(VisionGpu {
            dims: Dims::of(tower),
            input_proj: GpuWeight::upload(c, &tower.input_proj).map_err(gpu_err)?,
            pos_table: GpuBuffer::from_tensor_f32(c, &tower.pos_table),
            layers,
            standardize,
            embed: GpuWeight::upload(c, &embed).map_err(gpu_err)?,
            scratch: Mutex::new(None),
            ctx,
        })
    }

    /// Same output as `tower.encode(pre)` (soft tokens x text hidden, f32).
    pub fn encode(
        &self,
        tower: &VisionTower<'_>,
        pre: &PreprocessedImage,
    ) -> Result<Vec<f32>, EncoderError> {
        if Dims::of(tower) != self.dims {
            return Err(EncoderError::Invalid(
                "VisionGpu::encode: the tower is not the one the GPU copy was made from".into(),
            ));
        }
        let d = self.dims;
        let RealPatches { real, pos, pixels } = tower.real_patches(pre)?;
        let n = real.len();
        let (slot_of, m) = pool_slots(pre, tower.config.pooling_kernel)
            .ok_or_else(|| EncoderError::Invalid("cannot pool the patch grid".into()))?;
        let slots: Vec<usize> = real.iter().map(|&i| slot_of[i]).collect();
        let groups = ops::pool_groups(&slots, m).map_err(gpu_err)?;
        let rope = RopeTable::new(&pos, &tower.inv_freq);
        let rope = [rope.cos_x, rope.sin_x, rope.cos_y, rope.sin_y].concat();
        let pos: Vec<f32> = pos
            .iter()
            .flat_map(|&(x, y)| [x as f32, y as f32])
            .collect();

        let ctx: &GpuContext = &self.ctx;
        let mut guard = self
            .scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_none_or(|s| s.cap < n) {
            *guard = None; // free the old buffers first
            *guard = Some(Scratch::new(ctx, n, d));
        }
        let Some(s) = guard.as_ref() else {
            return Err(EncoderError::Invalid("no GPU scratch".into()));
        };
        let groups = GpuBuffer::from_f32(ctx, &groups);
        let pooled = GpuBuffer::zeros(ctx, m * d.hidden, ElemType::F32);
        let out = GpuBuffer::zeros(ctx, m * d.text_hidden, ElemType::F32);
        let run = || -> Result<Vec<f32>, GpuError> {
            s.pixels.write_f32(ctx, 0, &pixels)?;
            s.pos.write_f32(ctx, 0, &pos)?;
            s.rope.write_f32(ctx, 0, &rope)?;
            let mut enc = Encoder::new(ctx);
            self.record_embedding(&mut enc, s, n)?;
            for (i, l) in self.layers.iter().enumerate() {
                self.record_layer(&mut enc, l, self.layers.get(i + 1), s, n)?;
            }
            let shape = PoolShape {
                n,
                m,
                dim: d.hidden,
                divisor: (tower.config.pooling_kernel * tower.config.pooling_kernel) as f32,
                scale: (d.hidden as f32).sqrt(),
                standardize: self.standardize.as_ref(),
            };
            ops::pool_patches(&mut enc, &s.x, &groups, &pooled, shape)?;
            // the embedder: weightless RMSNorm (eps 1e-6, as `embed_soft_tokens`), projection
            norm::rmsnorm(&mut enc, &pooled, m, d.hidden, None, 1e-6, false)?;
            matmul::matmul(&mut enc, &pooled, m, &self.embed, &out)?;
            enc.submit()?;
            ctx.read_f32_n(&out, m * d.text_hidden)
        };
        run().map_err(gpu_err)
    }

    /// Patch embedding (`pixels · W_inᵀ`, plus the position rows) into `s.x`, and the first
    /// layer's input norm into `s.hs`.
    fn record_embedding(
        &self,
        enc: &mut Encoder<'_>,
        s: &Scratch,
        n: usize,
    ) -> Result<(), GpuError> {
        let d = self.dims;
        matmul::matmul(enc, &s.pixels, n, &self.input_proj, &s.x)?;
        ops::add_position_embeddings(
            enc,
            &s.x,
            n,
            d.hidden,
            &self.pos_table,
            d.table_size,
            &s.pos,
        )?;
        if let Some(first) = self.layers.first() {
            let nw = self.norm(&first.input_ln);
            norm::rmsnorm_to(enc, &s.x, &s.hs, n, d.hidden, nw, norm::Into::Store)?;
        }
        Ok(())
    }

    fn norm<'w>(&self, w: &'w GpuBuffer) -> NormWeight<'w> {
        NormWeight {
            w: Some(w),
            eps: self.dims.eps,
            plus_one: false,
        }
    }

    /// One encoder layer on `s.x`, whose input norm is already in `s.hs`; leaves the next
    /// layer's input norm in `s.hs` (post-norm, residual add and next pre-norm fused).
    fn record_layer(
        &self,
        enc: &mut Encoder<'_>,
        l: &LayerGpu,
        next: Option<&LayerGpu>,
        s: &Scratch,
        n: usize,
    ) -> Result<(), GpuError> {
        let d = self.dims;
        let (h, hd, eps) = (d.hidden, d.head_dim, d.eps);
        l.q.record(enc, &s.hs, n, &s.q, &s.tmp)?;
        l.k.record(enc, &s.hs, n, &s.k, &s.tmp)?;
        l.v.record(enc, &s.hs, n, &s.v, &s.tmp)?;
        let (nh, nkv, rope) = (d.heads, d.kv_heads, Some(&s.rope));
        ops::head_norm_rope(enc, &s.q, n, nh, hd, Some(&l.q_norm), rope, eps)?;
        ops::head_norm_rope(enc, &s.k, n, nkv, hd, Some(&l.k_norm), rope, eps)?;
        ops::head_norm_rope(enc, &s.v, n, nkv, hd, None, None, eps)?;
        let shape = AttnShape {
            n,
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: hd,
            scale: 1.0,
        };
        ops::bidirectional_attention(enc, (&s.q, &s.k, &s.v), &s.attn, shape)?;
        l.o.record(enc, &s.attn, n, &s.o, &s.tmp)?;
        let (post, pre_ff) = (self.norm(&l.post_attn_ln), self.norm(&l.pre_ff_ln));
        norm::rmsnorm_add_norm(enc, &s.o, &s.x, n, h, post, 1.0, pre_ff, &s.hs)?;

        l.gate.record(enc, &s.hs, n, &s.gate, &s.tmp)?;
        l.up.record(enc, &s.hs, n, &s.up, &s.tmp)?;
        elementwise::gelu_mul(enc, &s.gate, &s.up, n * d.intermediate)?;
        l.down.record(enc, &s.gate, n, &s.o, &s.tmp)?;
        let post = self.norm(&l.post_ff_ln);
        match next {
            Some(nl) => {
                let pre = self.norm(&nl.input_ln);
                norm::rmsnorm_add_norm(enc, &s.o, &s.x, n, h, post, 1.0, pre, &s.hs)
            }
            None => norm::rmsnorm_to(enc, &s.o, &s.x, n, h, post, norm::Into::AddScaled(1.0)),
        }
    }
}
