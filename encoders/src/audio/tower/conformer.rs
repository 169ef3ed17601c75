//! One conformer layer (`Gemma4AudioLayer`, spec §5.4): macaron feed-forwards with a residual
//! weight, local attention, the light convolution module, and the output norm.

use super::attention::Attention;
use super::config::AudioConfig;
use crate::EncoderError;
use crate::clipped::ClippedLinear;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::rmsnorm;

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A `[dim]` norm weight.
fn norm_weight(file: &CellmFile, name: &str, dim: usize) -> Result<Vec<f32>, EncoderError> {
    let w = file.tensor(name)?.to_f32_vec();
    if w.len() != dim {
        return Err(EncoderError::Invalid(format!(
            "{name} has {} values, expected {dim}",
            w.len()
        )));
    }
    Ok(w)
}

fn linear<'a>(
    file: &'a CellmFile,
    name: &str,
    in_dim: usize,
    out_dim: usize,
) -> Result<ClippedLinear<'a>, EncoderError> {
    let l = ClippedLinear::load(file, name)?;
    if l.in_dim() != in_dim || l.out_dim() != out_dim {
        return Err(EncoderError::Invalid(format!(
            "{name} is [{}, {}], expected [{out_dim}, {in_dim}]",
            l.out_dim(),
            l.in_dim()
        )));
    }
    Ok(l)
}

/// `clamp(x, ±clip)` then RMSNorm with weight `w` (Gemma 4: × w).
fn clip_norm(x: &mut [f32], w: &[f32], cfg: &AudioConfig) {
    let c = cfg.gradient_clipping;
    x.iter_mut().for_each(|v| *v = v.clamp(-c, c));
    rmsnorm(x, cfg.hidden, Some(w), cfg.eps, false);
}

pub(crate) struct FeedForward<'a> {
    pub(crate) pre: Vec<f32>,
    pub(crate) up: ClippedLinear<'a>,
    pub(crate) down: ClippedLinear<'a>,
    pub(crate) post: Vec<f32>,
}

impl<'a> FeedForward<'a> {
    fn load(file: &'a CellmFile, p: &str, cfg: &AudioConfig) -> Result<Self, EncoderError> {
        let h = cfg.hidden;
        let up = ClippedLinear::load(file, &format!("{p}.ffw_layer_1"))?;
        if up.in_dim() != h || up.out_dim() == 0 {
            return Err(EncoderError::Invalid(format!(
                "{p}.ffw_layer_1 takes {} values, hidden is {h}",
                up.in_dim()
            )));
        }
        let inner = up.out_dim();
        Ok(Self {
            pre: norm_weight(file, &format!("{p}.pre_layer_norm.weight"), h)?,
            down: linear(file, &format!("{p}.ffw_layer_2"), inner, h)?,
            up,
            post: norm_weight(file, &format!("{p}.post_layer_norm.weight"), h)?,
        })
    }

    /// `x += residual_weight · norm(ffw2(silu(ffw1(norm(x)))))`.
    fn forward(&self, x: &mut [f32], t: usize, cfg: &AudioConfig) {
        let mut h = x.to_vec();
        clip_norm(&mut h, &self.pre, cfg);
        let mut mid = vec![0f32; t * self.up.out_dim()];
        self.up.forward(&h, t, &mut mid);
        mid.iter_mut().for_each(|v| *v = silu(*v));
        self.down.forward(&mid, t, &mut h);
        clip_norm(&mut h, &self.post, cfg);
        for (a, b) in x.iter_mut().zip(&h) {
            *a += b * cfg.residual_weight;
        }
    }
}

pub(crate) struct LightConv<'a> {
    pub(crate) pre: Vec<f32>,
    pub(crate) start: ClippedLinear<'a>,
    /// `[hidden, kernel]` depthwise taps.
    pub(crate) taps: Vec<f32>,
    pub(crate) conv_norm: Vec<f32>,
    pub(crate) end: ClippedLinear<'a>,
}

impl<'a> LightConv<'a> {
    fn load(file: &'a CellmFile, p: &str, cfg: &AudioConfig) -> Result<Self, EncoderError> {
        let h = cfg.hidden;
        let name = format!("{p}.depthwise_conv1d.weight");
        let dw = file.tensor(&name)?;
        if dw.shape != [h, 1, cfg.conv_kernel] {
            return Err(EncoderError::Invalid(format!(
                "{name} has shape {:?}, expected [{h}, 1, {}]",
                dw.shape, cfg.conv_kernel
            )));
        }
        Ok(Self {
            pre: norm_weight(file, &format!("{p}.pre_layer_norm.weight"), h)?,
            start: linear(file, &format!("{p}.linear_start"), h, 2 * h)?,
            taps: dw.to_f32_vec(),
            conv_norm: norm_weight(file, &format!("{p}.conv_norm.weight"), h)?,
            end: linear(file, &format!("{p}.linear_end"), h, h)?,
        })
    }

    fn forward(&self, x: &mut [f32], t: usize, cfg: &AudioConfig) {
        let (h, kw) = (cfg.hidden, cfg.conv_kernel);
        let mut n = x.to_vec();
        rmsnorm(&mut n, h, Some(&self.pre), cfg.eps, false);
        let mut wide = vec![0f32; t * 2 * h];
        self.start.forward(&n, t, &mut wide);
        // GLU over the last dim: first half · sigmoid(second half).
        let mut g = vec![0f32; t * h];
        for (dst, src) in g.chunks_exact_mut(h).zip(wide.chunks_exact(2 * h)) {
            let (a, b) = src.split_at(h);
            for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                *d = a * sigmoid(b);
            }
        }
        // Causal depthwise conv: y[t] = Σ_j w[j] · g[t − (K−1) + j], zeros before the start.
        let mut y = vec![0f32; t * h];
        for ti in 0..t {
            let row = &mut y[ti * h..(ti + 1) * h];
            for j in 0..kw {
                let Some(src_t) = (ti + j).checked_sub(kw - 1) else {
                    continue;
                };
                let src = &g[src_t * h..(src_t + 1) * h];
                for (c, (o, &s)) in row.iter_mut().zip(src).enumerate() {
                    *o += self.taps[c * kw + j] * s;
                }
            }
        }
        clip_norm(&mut y, &self.conv_norm, cfg);
        y.iter_mut().for_each(|v| *v = silu(*v));
        self.end.forward(&y, t, &mut n);
        for (a, b) in x.iter_mut().zip(&n) {
            *a += b;
        }
    }
}

pub(crate) struct ConformerLayer<'a> {
    pub(crate) ffn1: FeedForward<'a>,
    pub(crate) norm_pre_attn: Vec<f32>,
    pub(crate) attn: Attention<'a>,
    pub(crate) norm_post_attn: Vec<f32>,
    pub(crate) lconv: LightConv<'a>,
    pub(crate) ffn2: FeedForward<'a>,
    pub(crate) norm_out: Vec<f32>,
}

impl<'a> ConformerLayer<'a> {
    pub fn load(file: &'a CellmFile, p: &str, cfg: &AudioConfig) -> Result<Self, EncoderError> {
        let h = cfg.hidden;
        Ok(Self {
            ffn1: FeedForward::load(file, &format!("{p}.feed_forward1"), cfg)?,
            norm_pre_attn: norm_weight(file, &format!("{p}.norm_pre_attn.weight"), h)?,
            attn: Attention::load(file, &format!("{p}.self_attn"), cfg)?,
            norm_post_attn: norm_weight(file, &format!("{p}.norm_post_attn.weight"), h)?,
            lconv: LightConv::load(file, &format!("{p}.lconv1d"), cfg)?,
            ffn2: FeedForward::load(file, &format!("{p}.feed_forward2"), cfg)?,
            norm_out: norm_weight(file, &format!("{p}.norm_out.weight"), h)?,
        })
    }

    /// In place on `x [t, hidden]`; `valid` marks the frames keys may come from.
    pub fn forward(&self, x: &mut [f32], t: usize, valid: &[bool], cfg: &AudioConfig) {
        self.ffn1.forward(x, t, cfg);
        let mut h = x.to_vec();
        clip_norm(&mut h, &self.norm_pre_attn, cfg);
        let mut a = self.attn.forward(&h, t, valid, cfg);
        clip_norm(&mut a, &self.norm_post_attn, cfg);
        for (x, a) in x.iter_mut().zip(&a) {
            *x += a;
        }
        self.lconv.forward(x, t, cfg);
        self.ffn2.forward(x, t, cfg);
        clip_norm(x, &self.norm_out, cfg);
    }
}
