//! Gemma 4 log-mel features, computed as transformers' `Gemma4AudioFeatureExtractor`:
//! 16 kHz mono input, padded to a multiple of 128 samples, 160 zeros prepended ("semicausal"),
//! frames of 320 samples every 160 (windows of 321 of which the last sample only feeds the mask),
//! periodic Hann window, |rfft(512)|, HTK mel filters (128, 0..8 kHz, no normalisation),
//! natural log with a 0.001 floor. Frames whose window ends in padding are zeroed.

use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_MELS: usize = 128;
const FRAME_LEN: usize = 320;
const HOP: usize = 160;
const FFT_LEN: usize = 512;
const N_BINS: usize = FFT_LEN / 2 + 1;
const MEL_FLOOR: f64 = 1e-3;
const PAD_MULTIPLE: usize = 128;
/// The reference truncates a clip at 30 s; longer audio is split into clips of this length.
pub const MAX_CLIP_SAMPLES: usize = 480_000;

/// Features of one clip: `[frames, 128]` row-major, and which frames are real.
#[derive(Clone, Debug)]
pub struct LogMelFeatures {
    pub frames: usize,
    pub values: Vec<f32>,
    pub mask: Vec<bool>,
}

pub struct LogMelExtractor {
    window: Vec<f32>,
    /// [N_BINS, N_MELS] row-major, f64 as in the reference.
    filters: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl Default for LogMelExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMelExtractor {
    pub fn new() -> Self {
        // Periodic Hann: np.hanning(321)[:-1], cast to f32.
        let window = (0..FRAME_LEN)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / FRAME_LEN as f64).cos())
                    as f32
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT_LEN);
        Self {
            window,
            filters: htk_mel_filters(N_BINS, N_MELS, 0.0, 8000.0, SAMPLE_RATE),
            fft,
        }
    }

    /// Features of one clip of at most [`MAX_CLIP_SAMPLES`] samples at 16 kHz (longer input is
    /// truncated, as the reference does; use [`LogMelExtractor::extract_clips`] to keep it all).
    pub fn extract(&self, samples: &[f32]) -> LogMelFeatures {
        let real = samples.len().min(MAX_CLIP_SAMPLES);
        let padded_len = real.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
        // 160 leading zeros, the samples, then zero padding.
        let total = HOP + padded_len;
        let mut wave = vec![0f32; total];
        wave[HOP..HOP + real].copy_from_slice(&samples[..real]);
        let frames = if total > FRAME_LEN {
            (total - (FRAME_LEN + 1)) / HOP + 1
        } else {
            0
        };
        let mut values = vec![0f32; frames * N_MELS];
        let mut mask = vec![false; frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut magnitude = vec![0f64; N_BINS];
        for f in 0..frames {
            let start = f * HOP;
            // Mask: the last sample of the 321-window must be a real sample.
            let end = start + FRAME_LEN;
            mask[f] = end >= HOP && end < HOP + real;
            if !mask[f] {
                continue;
            }
            input.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..FRAME_LEN {
                input[i] = (wave[start + i] * self.window[i]) as f64;
            }
            // Lengths are fixed by construction, so the FFT cannot fail.
            let _ = self.fft.process(&mut input, &mut spectrum);
            for (m, c) in magnitude.iter_mut().zip(&spectrum) {
                *m = c.norm();
            }
            let row = &mut values[f * N_MELS..(f + 1) * N_MELS];
            for (j, out) in row.iter_mut().enumerate() {
                let mut acc = 0f64;
                for (b, m) in magnitude.iter().enumerate() {
                    acc += m * self.filters[b * N_MELS + j];
                }
                *out = (acc + MEL_FLOOR).ln() as f32;
            }
        }
        LogMelFeatures {
            frames,
            values,
            mask,
        }
    }

    /// Splits long audio into consecutive 30 s clips and extracts each.
    pub fn extract_clips(&self, samples: &[f32]) -> Vec<LogMelFeatures> {
        if samples.is_empty() {
            return Vec::new();
        }
        samples
            .chunks(MAX_CLIP_SAMPLES)
            .map(|c| self.extract(c))
            .collect()
    }
}

/// Number of audio soft tokens the tower makes from `frames` feature frames with this mask: the
/// two stride-2 convolutions each keep every other mask entry (spec §5.2).
pub fn soft_token_count(mask: &[bool]) -> usize {
    let once: Vec<bool> = mask.iter().step_by(2).copied().collect();
    once.iter().step_by(2).filter(|&&m| m).count()
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// Triangular filters on the HTK mel scale, as transformers' `mel_filter_bank(norm=None,
/// mel_scale="htk")`: [n_bins, n_mels] row-major.
fn htk_mel_filters(n_bins: usize, n_mels: usize, fmin: f64, fmax: f64, rate: usize) -> Vec<f64> {
    let (mmin, mmax) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mmin + (mmax - mmin) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let nyquist = (rate / 2) as f64;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| nyquist * i as f64 / (n_bins - 1) as f64)
        .collect();
    let mut out = vec![0f64; n_bins * n_mels];
    for (b, &f) in fft_freqs.iter().enumerate() {
        for m in 0..n_mels {
            let down = -(pts[m] - f) / (pts[m + 1] - pts[m]);
            let up = (pts[m + 2] - f) / (pts[m + 2] - pts[m + 1]);
            out[b * n_mels + m] = down.min(up).max(0.0);
        }
    }
    out
}
