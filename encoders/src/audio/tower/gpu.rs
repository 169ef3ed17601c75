//! The audio tower and its embedder on the GPU: the same computation as [`AudioTower::encode`],
//! recorded into one command encoder per clip from the engine's wgpu ops (matmuls, norms, adds)
//! and the tower ops of `cellm_engine::kernels::gpu::towers::audio`.
//!
//! The log-mel features are computed on the CPU (cheap next to the tower); everything from the
//! sub-sampling convolutions to the embedder's projection runs on the device, and only the soft
//! tokens are read back. Weights are uploaded once in their stored dtype by [`AudioGpu::new`];
//! the activation buffers of a clip are kept for the next one (~100 MB at E2B shapes for 30 s).
//!
//! Speed (`examples/audio_bench.rs`, `synthetic:gemma4-e2b-media` int4, one H100): a 30 s clip
//! (750 soft tokens) in 40 ms against 2080 ms for the CPU tower on 16 threads; 4 s in 23 ms.
//! The linears go through the engine's matmul, which takes its tiled GEMM at this many frames
//! (`kernels::gpu::gemm`, 7x faster here than the decode-shaped kernels).

use super::conformer::{ConformerLayer, FeedForward, LightConv};
use super::subsample::ConvNormLayer;
use super::{AudioConfig, AudioTower, EMBEDDER};
use crate::EncoderError;
use crate::audio::features::LogMelFeatures;
use crate::clipped::ClippedLinear;
use cellm_engine::kernels::gpu::towers::audio::{
    self as ops, AttnBuffers, ClipNorm, Conv2dShape, LocalAttn, NormInto,
};
use cellm_engine::kernels::gpu::{
    ElemType, Encoder, GpuBuffer, GpuContext, GpuError, GpuWeight, elementwise, matmul, norm,
};
use std::sync::{Arc, Mutex};

fn gpu_err(e: GpuError) -> EncoderError {
    EncoderError::Invalid(format!("audio tower on the GPU: {e}"))
}

/// `(lo, hi)` when either bound is finite.
fn bounds(lo: f32, hi: f32) -> Option<(f32, f32)> {
    (lo > f32::NEG_INFINITY || hi < f32::INFINITY).then_some((lo, hi))
}

/// A clipped linear on the device.
struct Linear {
    w: GpuWeight,
    input: Option<(f32, f32)>,
    output: Option<(f32, f32)>,
}

impl Linear {
    fn new(ctx: &GpuContext, l: &ClippedLinear<'_>) -> Result<Self, GpuError> {
        Ok(Self {
            w: GpuWeight::upload(ctx, &l.weight)?,
            input: bounds(l.input_min, l.input_max),
            output: bounds(l.output_min, l.output_max),
        })
    }

    /// `out = x · Wᵀ` with the input clamp (through `tmp`), without the output clamp.
    fn matmul(
        &self,
        enc: &mut Encoder<'_>,
        x: &GpuBuffer,
        t: usize,
        out: &GpuBuffer,
        tmp: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let src = match self.input {
            Some((lo, hi)) => {
                ops::clamp_to(enc, x, tmp, t * self.w.cols, lo, hi)?;
                tmp
            }
            None => x,
        };
        matmul::matmul(enc, src, t, &self.w, out)
    }

    /// The whole clipped linear: `out = clamp(clamp(x) · Wᵀ)`.
    fn forward(
        &self,
        enc: &mut Encoder<'_>,
        x: &GpuBuffer,
        t: usize,
        out: &GpuBuffer,
        tmp: &GpuBuffer,
    ) -> Result<(), GpuError> {
        self.matmul(enc, x, t, out, tmp)?;
        match self.output {
            Some((lo, hi)) => elementwise::clamp(enc, out, t * self.w.rows, lo, hi),
            None => Ok(()),
        }
    }
}

struct Conv {
    w: GpuBuffer,
    norm: GpuBuffer,
    in_ch: usize,
    out_ch: usize,
    eps: f32,
}

impl Conv {
    fn new(ctx: &GpuContext, c: &ConvNormLayer) -> Self {
        Self {
            w: GpuBuffer::from_f32(ctx, &ops::conv_weight_tap_major(&c.weight, c.out_ch)),
            norm: GpuBuffer::from_f32(ctx, &c.norm),
            in_ch: c.in_ch,
            out_ch: c.out_ch,
            eps: c.eps,
        }
    }

    /// Convolution + LayerNorm + ReLU of `x [frames, freqs, in_ch]` into `y`.
    fn forward(
        &self,
        enc: &mut Encoder<'_>,
        x: &GpuBuffer,
        (frames, freqs): (usize, usize),
        flags: &GpuBuffer,
        flag_stride: usize,
        y: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let shape = Conv2dShape {
            frames,
            freqs,
            in_ch: self.in_ch,
            out_ch: self.out_ch,
            flag_stride,
        };
        ops::conv2d_s2(enc, x, shape, flags, &self.w, y)?;
        let (to, fo) = shape.out_dims();
        ops::layer_norm_relu(enc, y, to * fo, self.out_ch, &self.norm, self.eps)
    }
}

struct Ffn {
    pre: GpuBuffer,
    up: Linear,
    down: Linear,
    post: GpuBuffer,
}

impl Ffn {
    fn new(ctx: &GpuContext, f: &FeedForward<'_>) -> Result<Self, GpuError> {
        Ok(Self {
            pre: GpuBuffer::from_f32(ctx, &f.pre),
            up: Linear::new(ctx, &f.up)?,
            down: Linear::new(ctx, &f.down)?,
            post: GpuBuffer::from_f32(ctx, &f.post),
        })
    }
}

struct Lconv {
    pre: GpuBuffer,
    start: Linear,
    taps: GpuBuffer,
    conv_norm: GpuBuffer,
    end: Linear,
}

struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    post: Linear,
    q_factors: GpuBuffer,
    rel_k: GpuBuffer,
}

struct Layer {
    ffn1: Ffn,
    norm_pre_attn: GpuBuffer,
    attn: Attn,
    norm_post_attn: GpuBuffer,
    lconv: Lconv,
    ffn2: Ffn,
    norm_out: GpuBuffer,
}

impl Layer {
    fn new(ctx: &GpuContext, l: &ConformerLayer<'_>) -> Result<Self, GpuError> {
        let f32b = |v: &[f32]| GpuBuffer::from_f32(ctx, v);
        let LightConv {
            pre,
            start,
            taps,
            conv_norm,
            end,
        } = &l.lconv;
        let a = &l.attn;
        Ok(Self {
            ffn1: Ffn::new(ctx, &l.ffn1)?,
            norm_pre_attn: f32b(&l.norm_pre_attn),
            attn: Attn {
                q: Linear::new(ctx, &a.q)?,
                k: Linear::new(ctx, &a.k)?,
                v: Linear::new(ctx, &a.v)?,
                post: Linear::new(ctx, &a.post)?,
                q_factors: f32b(&a.q_factors),
                rel_k: f32b(&a.rel_k),
            },
            norm_post_attn: f32b(&l.norm_post_attn),
            lconv: Lconv {
                pre: f32b(pre),
                start: Linear::new(ctx, start)?,
                taps: f32b(taps),
                conv_norm: f32b(conv_norm),
                end: Linear::new(ctx, end)?,
            },
            ffn2: Ffn::new(ctx, &l.ffn2)?,
            norm_out: f32b(&l.norm_out),
        })
    }
}

/// Activations of one clip of `t` sub-sampled frames.
struct Scratch {
    x: GpuBuffer,
    h: GpuBuffer,
    a: GpuBuffer,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    o: GpuBuffer,
    /// Feed-forward inner values, and the light convolution's `[t, 2·hidden]`.
    mid: GpuBuffer,
    /// Clamped inputs of the clipped linears.
    tmp: GpuBuffer,
}

/// The device buffers of a clip of up to `frames` feature frames. Kept between clips and grown
/// when a longer one comes, so every clip records the same buffers and the encoder's bind groups
/// are reused (30 s clips all have the same length but the last).
struct ClipBuffers {
    frames: usize,
    feats: GpuBuffer,
    flags: GpuBuffer,
    conv0: GpuBuffer,
    conv1: GpuBuffer,
    s: Scratch,
    /// Valid frame indices (as f32), the valid frames, `output_proj`'s and the embedder's output.
    idx: GpuBuffer,
    xv: GpuBuffer,
    out: GpuBuffer,
    emb: GpuBuffer,
}

/// Device copies of an [`AudioTower`]'s weights and of its embedder's projection.
pub struct AudioGpu {
    ctx: Arc<GpuContext>,
    cfg: AudioConfig,
    mels: usize,
    conv: [Conv; 2],
    input_proj: Linear,
    layers: Vec<Layer>,
    output_proj: Linear,
    output_bias: GpuBuffer,
    embed: GpuWeight,
    /// Widest row any clipped linear reads, and the widest it writes (scratch sizes).
    widest_in: usize,
    widest_mid: usize,
    buffers: Mutex<Option<ClipBuffers>>,
}

impl AudioGpu {
    /// Uploads the tower's weights (and `model.embed_audio`) to `ctx`'s device.
    pub fn new(ctx: Arc<GpuContext>, tower: &AudioTower<'_>) -> Result<AudioGpu, EncoderError> {
        let c = &*ctx;
        let sub = &tower.subsample;
        let layers = tower
            .layers
            .iter()
            .map(|l| Layer::new(c, l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(gpu_err)?;
        let embed_w = tower
            .file
            .tensor(&format!("{EMBEDDER}.embedding_projection.weight"))?;
        if embed_w.cols() != tower.cfg.output_dims {
            return Err(EncoderError::Invalid(format!(
                "{EMBEDDER}.embedding_projection.weight has {} inputs, the tower gives {}",
                embed_w.cols(),
                tower.cfg.output_dims
            )));
        }
        let widest_mid = tower
            .layers
            .iter()
            .flat_map(|l| [&l.ffn1.up, &l.ffn2.up, &l.lconv.start])
            .map(|l| l.out_dim())
            .max()
            .unwrap_or(0);
        let widest_in = widest_mid
            .max(sub.input_proj.in_dim())
            .max(tower.cfg.hidden);
        let output_proj = ClippedLinear {
            weight: tower.output_proj,
            input_min: f32::NEG_INFINITY,
            input_max: f32::INFINITY,
            output_min: f32::NEG_INFINITY,
            output_max: f32::INFINITY,
        };
        Ok(AudioGpu {
            conv: [Conv::new(c, &sub.layer0), Conv::new(c, &sub.layer1)],
            input_proj: Linear::new(c, &sub.input_proj).map_err(gpu_err)?,
            layers,
            output_proj: Linear::new(c, &output_proj).map_err(gpu_err)?,
            output_bias: GpuBuffer::from_f32(c, &tower.output_bias),
            embed: GpuWeight::upload(c, &embed_w).map_err(gpu_err)?,
            cfg: tower.cfg.clone(),
            mels: tower.mels,
            widest_in,
            widest_mid,
            buffers: Mutex::new(None),
            ctx,
        })
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Width of the returned embeddings (the text hidden size).
    pub fn text_hidden(&self) -> usize {
        self.embed.rows
    }

    /// [`AudioTower::encode`] on the GPU: soft tokens of one clip, already projected into the
    /// text hidden size, `[valid sub-sampled frames, text_hidden]` row-major.
    pub fn encode(&self, features: &LogMelFeatures) -> Result<Vec<f32>, EncoderError> {
        let (frames, mels) = (features.frames, self.mels);
        if features.values.len() != frames * mels || features.mask.len() != frames {
            return Err(EncoderError::Invalid(format!(
                "audio features: {} values and {} mask entries do not make {frames} frames of \
                 {mels} mel bins",
                features.values.len(),
                features.mask.len(),
            )));
        }
        // Valid frames after the two stride-2 subsamplings: every 4th frame's mask entry.
        let valid: Vec<usize> = features
            .mask
            .iter()
            .step_by(4)
            .enumerate()
            .filter_map(|(i, &m)| m.then_some(i))
            .collect();
        if valid.is_empty() {
            return Ok(Vec::new());
        }
        self.run(features, &valid).map_err(gpu_err)
    }

    /// `(t1, f1, t2, f2)`: frames and mel bins after the first and the second convolution.
    fn dims(&self, frames: usize) -> (usize, usize, usize, usize) {
        let (t1, f1) = (frames.div_ceil(2), self.mels.div_ceil(2));
        (t1, f1, t1.div_ceil(2), f1.div_ceil(2))
    }

    fn alloc(&self, frames: usize) -> Result<ClipBuffers, GpuError> {
        let zeros = |n: usize| GpuBuffer::zeros(&self.ctx, n, ElemType::F32);
        let (t1, f1, t, f2) = self.dims(frames);
        let [c0, c1] = &self.conv;
        // The first convolution's output is the largest buffer (49 MB for a 30 s clip at E2B).
        let largest = [
            t1 * f1 * c0.out_ch,
            t * self.widest_in.max(self.widest_mid),
            frames * self.mels,
        ];
        let limit = self.ctx.max_binding_bytes();
        if largest.iter().any(|&n| n as u64 * 4 > limit) {
            return Err(GpuError::Unsupported(format!(
                "a clip of {frames} feature frames needs buffers over the device's {limit}-byte \
                 binding limit; split it into 30 s clips"
            )));
        }
        let hid = self.cfg.hidden;
        Ok(ClipBuffers {
            frames,
            feats: zeros(frames * self.mels),
            flags: zeros(frames),
            conv0: zeros(t1 * f1 * c0.out_ch),
            conv1: zeros(t * f2 * c1.out_ch),
            s: Scratch {
                x: zeros(t * hid),
                h: zeros(t * hid),
                a: zeros(t * hid),
                q: zeros(t * hid),
                k: zeros(t * hid),
                v: zeros(t * hid),
                o: zeros(t * hid),
                mid: zeros(t * self.widest_mid),
                tmp: zeros(t * self.widest_in),
            },
            idx: zeros(t),
            xv: zeros(t * hid),
            out: zeros(t * self.cfg.output_dims),
            emb: zeros(t * self.embed.rows),
        })
    }

    fn run(&self, features: &LogMelFeatures, valid: &[usize]) -> Result<Vec<f32>, GpuError> {
        let ctx = &*self.ctx;
        let cfg = &self.cfg;
        let mut held = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let b = match held.take() {
            Some(b) if b.frames >= features.frames => held.insert(b),
            _ => held.insert(self.alloc(features.frames)?),
        };
        let (t1, f1, t, _) = self.dims(features.frames);
        let (hid, s) = (cfg.hidden, &b.s);
        b.feats.write_f32(ctx, 0, &features.values)?;
        let flags: Vec<f32> = features.mask.iter().map(|&m| f32::from(m)).collect();
        b.flags.write_f32(ctx, 0, &flags)?;
        let idx: Vec<f32> = valid.iter().map(|&i| i as f32).collect();
        b.idx.write_f32(ctx, 0, &idx)?;

        let mut enc = Encoder::new(ctx);
        let e = &mut enc;
        let [c0, c1] = &self.conv;
        c0.forward(
            e,
            &b.feats,
            (features.frames, self.mels),
            &b.flags,
            1,
            &b.conv0,
        )?;
        c1.forward(e, &b.conv0, (t1, f1), &b.flags, 2, &b.conv1)?;
        self.input_proj.forward(e, &b.conv1, t, &s.x, &s.tmp)?;
        for layer in &self.layers {
            self.layer(e, layer, s, t, &b.flags)?;
            // the GPU starts on this layer while the next one is recorded
            e.flush()?;
        }

        // Only the valid frames go on: output_proj (+ bias), the embedder's norm and projection.
        let (n, od) = (valid.len(), cfg.output_dims);
        ops::gather_rows(e, &s.x, &b.idx, n, hid, &b.xv)?;
        self.output_proj.forward(e, &b.xv, n, &b.out, &s.tmp)?;
        ops::bias_rows(e, &b.out, n, od, &self.output_bias)?;
        norm::rmsnorm(e, &b.out, n, od, None, 1e-6, false)?;
        matmul::matmul(e, &b.out, n, &self.embed, &b.emb)?;
        enc.submit()?;
        ctx.read_f32_n(&b.emb, n * self.embed.rows)
    }

    /// One conformer layer on `s.x` (as `ConformerLayer::forward`).
    fn layer(
        &self,
        e: &mut Encoder<'_>,
        l: &Layer,
        s: &Scratch,
        t: usize,
        flags: &GpuBuffer,
    ) -> Result<(), GpuError> {
        let cfg = &self.cfg;
        let hid = cfg.hidden;
        let clip = |w| ClipNorm {
            w,
            eps: cfg.eps,
            clip: cfg.gradient_clipping,
            silu: false,
        };
        self.ffn(e, &l.ffn1, s, t)?;

        ops::clip_rmsnorm_to(
            e,
            &s.x,
            &s.h,
            t,
            hid,
            clip(&l.norm_pre_attn),
            NormInto::Store,
        )?;
        let at = &l.attn;
        at.q.forward(e, &s.h, t, &s.q, &s.tmp)?;
        at.k.forward(e, &s.h, t, &s.k, &s.tmp)?;
        at.v.forward(e, &s.h, t, &s.v, &s.tmp)?;
        let shape = LocalAttn {
            frames: t,
            heads: cfg.heads,
            head_dim: cfg.head_dim(),
            past: cfg.context_left - 1,
            positions: cfg.rel_positions(),
            chunk: cfg.chunk,
            context: cfg.context_size(),
            logit_cap: cfg.logit_cap,
            invalid_logit: cfg.invalid_logit,
            k_scale: ((1.0 + std::f64::consts::E).ln() / std::f64::consts::LN_2) as f32,
        };
        let bufs = AttnBuffers {
            q: &s.q,
            k: &s.k,
            v: &s.v,
            rel_k: &at.rel_k,
            q_factors: &at.q_factors,
            flags,
            flag_stride: 4,
            out: &s.o,
        };
        ops::local_attention(e, &shape, &bufs)?;
        at.post.forward(e, &s.o, t, &s.a, &s.tmp)?;
        let post = clip(&l.norm_post_attn);
        ops::clip_rmsnorm_to(e, &s.a, &s.x, t, hid, post, NormInto::Add(1.0))?;

        let lc = &l.lconv;
        let plain = ClipNorm {
            clip: f32::INFINITY,
            ..clip(&lc.pre)
        };
        ops::clip_rmsnorm_to(e, &s.x, &s.h, t, hid, plain, NormInto::Store)?;
        lc.start.forward(e, &s.h, t, &s.mid, &s.tmp)?;
        ops::glu_dwconv(e, &s.mid, t, hid, &lc.taps, cfg.conv_kernel, &s.o)?;
        let conv_norm = ClipNorm {
            silu: true,
            ..clip(&lc.conv_norm)
        };
        ops::clip_rmsnorm(e, &s.o, t, hid, conv_norm)?;
        lc.end.forward(e, &s.o, t, &s.a, &s.tmp)?;
        elementwise::add(e, &s.x, &s.a, t * hid)?;

        self.ffn(e, &l.ffn2, s, t)?;
        ops::clip_rmsnorm(e, &s.x, t, hid, clip(&l.norm_out))
    }

    /// `x += residual_weight · norm(ffw2(silu(ffw1(norm(x)))))`.
    fn ffn(&self, e: &mut Encoder<'_>, f: &Ffn, s: &Scratch, t: usize) -> Result<(), GpuError> {
        let cfg = &self.cfg;
        let nw = |w| ClipNorm {
            w,
            eps: cfg.eps,
            clip: cfg.gradient_clipping,
            silu: false,
        };
        ops::clip_rmsnorm_to(e, &s.x, &s.h, t, cfg.hidden, nw(&f.pre), NormInto::Store)?;
        f.up.matmul(e, &s.h, t, &s.mid, &s.tmp)?;
        let (lo, hi) = f.up.output.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        ops::clamp_silu(e, &s.mid, t * f.up.w.rows, lo, hi)?;
        f.down.forward(e, &s.mid, t, &s.a, &s.tmp)?;
        let into = NormInto::Add(cfg.residual_weight);
        ops::clip_rmsnorm_to(e, &s.a, &s.x, t, cfg.hidden, nw(&f.post), into)
    }
}
