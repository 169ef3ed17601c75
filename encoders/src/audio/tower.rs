//! The Gemma 4 audio tower (USM-style conformer, `Gemma4AudioModel`) and its embedder: log-mel
//! features -> sub-sampling convolutions -> conformer layers -> `output_proj` -> valid frames ->
//! `embed_audio` (spec §5.3–5.6). Linear layers run through the engine's matmul, so f32, f16,
//! bf16, q8 and q4 weights all work; everything else is computed in f32.

mod attention;
mod config;
mod conformer;
#[cfg(feature = "gpu")]
pub mod gpu;
mod subsample;

pub use config::AudioConfig;

use super::features::{LogMelExtractor, LogMelFeatures};
use crate::EncoderError;
use crate::embed::embed_soft_tokens;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::matmul;
use cellm_engine::session::{MediaEmbedding, MediaKind};
use cellm_engine::tensor::TensorView;
use conformer::ConformerLayer;
use std::path::Path;
use subsample::Subsample;

const TOWER: &str = "model.audio_tower";
const EMBEDDER: &str = "model.embed_audio";

/// A loaded audio tower; borrows the weights from the memory-mapped file.
pub struct AudioTower<'a> {
    file: &'a CellmFile,
    cfg: AudioConfig,
    subsample: Subsample<'a>,
    layers: Vec<ConformerLayer<'a>>,
    output_proj: TensorView<'a>,
    output_bias: Vec<f32>,
    mels: usize,
}

/// Intermediate values of one [`AudioTower::encode_traced`] run, for parity tests.
#[derive(Clone, Debug, Default)]
pub struct AudioTrace {
    /// `[frames, hidden]` after `input_proj_linear`, every sub-sampled frame.
    pub subsample: Vec<f32>,
    /// Valid sub-sampled frames.
    pub mask: Vec<bool>,
    /// `[frames, hidden]` after each conformer layer.
    pub layers: Vec<Vec<f32>>,
    /// `[frames, output_dims]` after `output_proj`, every frame (invalid ones included).
    pub tower_out: Vec<f32>,
}

impl<'a> AudioTower<'a> {
    /// Loads the tower of a Gemma 4 file; `Ok(None)` when the model has no audio tower.
    pub fn load(file: &'a CellmFile) -> Result<Option<Self>, EncoderError> {
        let probe = format!("{TOWER}.subsample_conv_projection.layer0.conv.weight");
        if !file.contains(&probe) {
            return Ok(None);
        }
        let cfg_json = file.header().config.get("audio_config").ok_or_else(|| {
            EncoderError::Config("the model has audio tower weights but no audio_config".into())
        })?;
        let cfg = AudioConfig::from_json(cfg_json)?;
        let subsample = Subsample::load(
            file,
            &format!("{TOWER}.subsample_conv_projection"),
            cfg.subsampling_channels,
            cfg.hidden,
            cfg.eps,
        )?;
        let layers = (0..cfg.layers)
            .map(|l| ConformerLayer::load(file, &format!("{TOWER}.layers.{l}"), &cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let output_proj = file.tensor(&format!("{TOWER}.output_proj.weight"))?;
        let output_bias = file
            .tensor(&format!("{TOWER}.output_proj.bias"))?
            .to_f32_vec();
        if output_proj.cols() != cfg.hidden
            || output_proj.rows() != cfg.output_dims
            || output_bias.len() != cfg.output_dims
        {
            return Err(EncoderError::Invalid(format!(
                "{TOWER}.output_proj is {:?} with {} biases, expected [{}, {}]",
                output_proj.shape,
                output_bias.len(),
                cfg.output_dims,
                cfg.hidden
            )));
        }
        // Features always come from LogMelExtractor (128 mel bins); Subsample checks the flatten.
        let mels = super::features::N_MELS;
        Ok(Some(Self {
            file,
            cfg,
            subsample,
            layers,
            output_proj,
            output_bias,
            mels,
        }))
    }

    pub fn config(&self) -> &AudioConfig {
        &self.cfg
    }

    /// Width of the returned embeddings (the text hidden size).
    pub fn text_hidden(&self) -> Result<usize, EncoderError> {
        Ok(self
            .file
            .tensor(&format!("{EMBEDDER}.embedding_projection.weight"))?
            .rows())
    }

    /// Soft tokens of one clip, already projected into the text hidden size:
    /// `[valid sub-sampled frames, text_hidden]` row-major.
    pub fn encode(&self, features: &LogMelFeatures) -> Result<Vec<f32>, EncoderError> {
        self.encode_traced(features, None)
    }

    /// [`AudioTower::encode`], also filling `trace` with the intermediate values.
    pub fn encode_traced(
        &self,
        features: &LogMelFeatures,
        mut trace: Option<&mut AudioTrace>,
    ) -> Result<Vec<f32>, EncoderError> {
        let frames = features.frames;
        if features.values.len() != frames * self.mels || features.mask.len() != frames {
            return Err(EncoderError::Invalid(format!(
                "audio features: {} values and {} mask entries for {frames} frames of {} mel bins",
                features.values.len(),
                features.mask.len(),
                self.mels
            )));
        }
        if frames == 0 {
            return Ok(Vec::new());
        }
        let sub = self
            .subsample
            .forward(&features.values, frames, self.mels, &features.mask)?;
        let t = sub.frames;
        let mut x = sub.hidden;
        if let Some(tr) = trace.as_deref_mut() {
            tr.subsample = x.clone();
            tr.mask = sub.mask.clone();
            tr.layers.clear();
        }
        for layer in &self.layers {
            layer.forward(&mut x, t, &sub.mask, &self.cfg);
            if let Some(tr) = trace.as_deref_mut() {
                tr.layers.push(x.clone());
            }
        }
        let od = self.cfg.output_dims;
        let mut out = vec![0f32; t * od];
        matmul(&x, t, &self.output_proj, &mut out);
        for row in out.chunks_exact_mut(od) {
            for (v, b) in row.iter_mut().zip(&self.output_bias) {
                *v += b;
            }
        }
        let valid: Vec<f32> = out
            .chunks_exact(od)
            .zip(&sub.mask)
            .filter(|(_, m)| **m)
            .flat_map(|(row, _)| row.iter().copied())
            .collect();
        if let Some(tr) = trace {
            tr.tower_out = out;
        }
        let n = valid.len() / od;
        embed_soft_tokens(self.file, EMBEDDER, &valid, n, od)
    }
}

/// Reads a WAV file, splits it into 30 s clips and encodes each: one [`MediaEmbedding`] per clip
/// (the prompt gets one `<|audio>` … `<audio|>` span per clip).
pub fn encode_audio_file(
    tower: &AudioTower<'_>,
    path: &Path,
) -> Result<Vec<MediaEmbedding>, EncoderError> {
    encode_audio_file_with(tower, path, &|clip| tower.encode(clip))
}

/// [`encode_audio_file`] with each clip run by `encode` (the CPU tower, or its GPU copy).
pub fn encode_audio_file_with(
    tower: &AudioTower<'_>,
    path: &Path,
    encode: &dyn Fn(&LogMelFeatures) -> Result<Vec<f32>, EncoderError>,
) -> Result<Vec<MediaEmbedding>, EncoderError> {
    let samples = super::load_wav_16k(path)?;
    let hidden = tower.text_hidden()?;
    let extractor = LogMelExtractor::new();
    let mut out = Vec::new();
    for clip in extractor.extract_clips(&samples) {
        let embeddings = encode(&clip)?;
        let tokens = embeddings.len() / hidden;
        // A short tail clip can give no token at all; it adds nothing to the prompt.
        if tokens > 0 {
            out.push(MediaEmbedding {
                kind: MediaKind::Audio,
                embeddings,
                tokens,
            });
        }
    }
    if out.is_empty() {
        return Err(EncoderError::Invalid(format!(
            "{}: {} samples at 16 kHz is too short to give any audio token",
            path.display(),
            samples.len()
        )));
    }
    Ok(out)
}
