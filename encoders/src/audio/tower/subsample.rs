//! `subsample_conv_projection`: two Conv2d 3×3 stride 2 pad 1 (no bias), each preceded by zeroing
//! the invalid time frames and followed by a channel LayerNorm (weight, no bias) and ReLU; then the
//! (freq, channel) flatten and `input_proj_linear` (spec §5.3).
//!
//! Activations are kept channel-last (`[time, freq, channel]`), so the LayerNorm runs over
//! contiguous values and the final flatten (`f·C + c`) is a no-op. The convolutions are im2col +
//! engine matmul over a few output frames at a time (bounded scratch on 30 s clips).

use crate::EncoderError;
use crate::clipped::ClippedLinear;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::matmul;
use cellm_engine::tensor::{DType, TensorView};

/// Output frames per im2col batch.
const FRAMES_PER_BATCH: usize = 16;

pub(crate) struct ConvNormLayer {
    /// `[out, in·3·3]`, (in, ky, kx) order as PyTorch stores `[out, in, 3, 3]`.
    pub(crate) weight: Vec<f32>,
    shape: [usize; 2],
    pub(crate) norm: Vec<f32>,
    pub(crate) in_ch: usize,
    pub(crate) out_ch: usize,
    pub(crate) eps: f32,
}

impl ConvNormLayer {
    fn load(file: &CellmFile, prefix: &str, in_ch: usize, eps: f32) -> Result<Self, EncoderError> {
        let w = file.tensor(&format!("{prefix}.conv.weight"))?;
        let out_ch = w.shape.first().copied().unwrap_or(0);
        if w.shape != [out_ch, in_ch, 3, 3] || out_ch == 0 {
            return Err(EncoderError::Invalid(format!(
                "{prefix}.conv.weight has shape {:?}, expected [C, {in_ch}, 3, 3]",
                w.shape
            )));
        }
        let norm = file.tensor(&format!("{prefix}.norm.weight"))?.to_f32_vec();
        if norm.len() != out_ch {
            return Err(EncoderError::Invalid(format!(
                "{prefix}.norm.weight has {} values for {out_ch} channels",
                norm.len()
            )));
        }
        Ok(Self {
            weight: w.to_f32_vec(),
            shape: [out_ch, in_ch * 9],
            norm,
            in_ch,
            out_ch,
            eps,
        })
    }

    /// `x [t_in, f_in, in_ch]` (invalid frames already zeroed) -> `[⌈t_in/2⌉, ⌈f_in/2⌉, out_ch]`.
    fn forward(&self, x: &[f32], t_in: usize, f_in: usize) -> Vec<f32> {
        let (t_out, f_out) = (t_in.div_ceil(2), f_in.div_ceil(2));
        let k = self.shape[1];
        let w = TensorView {
            dtype: DType::F32,
            shape: &self.shape,
            group_size: 0,
            data: f32_bytes(&self.weight),
        };
        let mut out = vec![0f32; t_out * f_out * self.out_ch];
        let mut cols = Vec::new();
        for t0 in (0..t_out).step_by(FRAMES_PER_BATCH) {
            let t1 = (t0 + FRAMES_PER_BATCH).min(t_out);
            let rows = (t1 - t0) * f_out;
            cols.clear();
            cols.resize(rows * k, 0.0);
            for t in t0..t1 {
                for f in 0..f_out {
                    let patch = &mut cols[((t - t0) * f_out + f) * k..][..k];
                    for ky in 0..3 {
                        // Input row 2t + ky - 1; padding rows stay zero.
                        let Some(ti) = (2 * t + ky).checked_sub(1).filter(|&v| v < t_in) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let Some(fi) = (2 * f + kx).checked_sub(1).filter(|&v| v < f_in) else {
                                continue;
                            };
                            let src = &x[(ti * f_in + fi) * self.in_ch..][..self.in_ch];
                            for (c, &v) in src.iter().enumerate() {
                                patch[c * 9 + ky * 3 + kx] = v;
                            }
                        }
                    }
                }
            }
            let dst = &mut out[t0 * f_out * self.out_ch..t1 * f_out * self.out_ch];
            matmul(&cols, rows, &w, dst);
        }
        for px in out.chunks_exact_mut(self.out_ch) {
            layer_norm_relu(px, &self.norm, self.eps);
        }
        out
    }
}

/// LayerNorm over one pixel's channels (mean subtracted, biased variance, weight, no bias), then
/// ReLU.
fn layer_norm_relu(x: &mut [f32], w: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let r = 1.0 / (var + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = ((*v - mean) * r * w).max(0.0);
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub(crate) struct Subsample<'a> {
    pub(crate) layer0: ConvNormLayer,
    pub(crate) layer1: ConvNormLayer,
    pub(crate) input_proj: ClippedLinear<'a>,
}

/// Output of the sub-sampling stage.
pub(crate) struct Subsampled {
    /// `[frames, hidden]`.
    pub hidden: Vec<f32>,
    pub frames: usize,
    /// Valid frames after the two stride-2 mask subsamplings.
    pub mask: Vec<bool>,
}

impl<'a> Subsample<'a> {
    pub fn load(
        file: &'a CellmFile,
        prefix: &str,
        channels: [usize; 2],
        hidden: usize,
        eps: f32,
    ) -> Result<Self, EncoderError> {
        let layer0 = ConvNormLayer::load(file, &format!("{prefix}.layer0"), 1, eps)?;
        let layer1 = ConvNormLayer::load(file, &format!("{prefix}.layer1"), layer0.out_ch, eps)?;
        if layer0.out_ch != channels[0] || layer1.out_ch != channels[1] {
            return Err(EncoderError::Invalid(format!(
                "audio sub-sampling convolutions have {} / {} channels, config says {:?}",
                layer0.out_ch, layer1.out_ch, channels
            )));
        }
        let input_proj = ClippedLinear::load(file, &format!("{prefix}.input_proj_linear"))?;
        if input_proj.out_dim() != hidden {
            return Err(EncoderError::Invalid(format!(
                "{prefix}.input_proj_linear gives {} values, hidden size is {hidden}",
                input_proj.out_dim()
            )));
        }
        Ok(Self {
            layer0,
            layer1,
            input_proj,
        })
    }

    /// `features [frames, mels]` with its frame mask.
    pub fn forward(
        &self,
        features: &[f32],
        frames: usize,
        mels: usize,
        mask: &[bool],
    ) -> Result<Subsampled, EncoderError> {
        let mut x = features.to_vec();
        zero_invalid(&mut x, mask, mels);
        let h0 = self.layer0.forward(&x, frames, mels);
        let (t1, f1) = (frames.div_ceil(2), mels.div_ceil(2));
        let mask1: Vec<bool> = mask.iter().step_by(2).copied().collect();
        let mut h0 = h0;
        zero_invalid(&mut h0, &mask1, f1 * self.layer0.out_ch);
        let h1 = self.layer1.forward(&h0, t1, f1);
        let (t2, f2) = (t1.div_ceil(2), f1.div_ceil(2));
        let mask2: Vec<bool> = mask1.iter().step_by(2).copied().collect();
        let width = f2 * self.layer1.out_ch;
        if width != self.input_proj.in_dim() {
            return Err(EncoderError::Invalid(format!(
                "audio features of {mels} mel bins flatten to {width} values, \
                 input_proj_linear takes {}",
                self.input_proj.in_dim()
            )));
        }
        let mut hidden = vec![0f32; t2 * self.input_proj.out_dim()];
        self.input_proj.forward(&h1, t2, &mut hidden);
        Ok(Subsampled {
            hidden,
            frames: t2,
            mask: mask2,
        })
    }
}

/// Zeroes the rows (of `row_len` values) of invalid frames.
fn zero_invalid(x: &mut [f32], mask: &[bool], row_len: usize) {
    for (row, &m) in x.chunks_exact_mut(row_len).zip(mask) {
        if !m {
            row.fill(0.0);
        }
    }
}
