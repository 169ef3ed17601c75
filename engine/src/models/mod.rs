//! Text stacks of the supported model families, one file each ([`gemma3`], [`gemma4`]), behind
//! the [`TextModel`] trait. [`load_model`] picks the family from the file header.

pub mod attention;
pub mod common;
pub mod config;
pub mod gemma3;
pub mod gemma4;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod weights;

use crate::format::{CellmFile, FormatError};
use crate::kv_cache::{KvCache, KvError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("unsupported model family '{0}' (this build runs gemma3 and gemma4)")]
    UnsupportedFamily(String),
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor '{name}' holds {value} at index {index}; weights must be finite")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    TokenOutOfRange { id: usize, vocab: usize },
    #[error("media rows: {0}")]
    Media(String),
    #[error("GPU backend: {0}")]
    Gpu(String),
    #[error("{0} is not supported by this model")]
    NotSupported(String),
}

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's ([vocab]).
    Last,
    /// Every position's ([tokens, vocab]).
    All,
}

/// Soft tokens from an encoder that replace the embeddings of some input positions.
#[derive(Clone, Copy, Debug)]
pub struct MediaRows<'m> {
    /// Index of each replaced token within the `tokens` of the forward call, increasing.
    pub positions: &'m [usize],
    /// `[positions.len(), hidden]` row-major, already projected to the text hidden size.
    pub rows: &'m [f32],
}

/// Memory a loaded text model holds besides the mapped file, for the session's breakdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelMemory {
    /// Host activation buffers (hidden states, attention, MLP; grown by chunk size).
    pub scratch_bytes: u64,
    /// Host buffer of the logits handed to the caller.
    pub logits_bytes: u64,
    /// Weights on the device (GPU backend).
    pub device_weight_bytes: u64,
    /// Other device buffers: KV cache, activations (GPU backend).
    pub device_state_bytes: u64,
}

/// A decoder-only text model run on the CPU kernels.
pub trait TextModel: Send {
    /// What the model holds in memory now (see [`ModelMemory`]); zeros when not tracked.
    fn memory(&self) -> ModelMemory {
        ModelMemory::default()
    }

    /// The resolved configuration.
    fn config(&self) -> &config::TextConfig;

    /// Runs `tokens` at positions `pos0..`, appending their K/V to `cache` (whose length must be
    /// `pos0`), and returns the requested logits. Prompts longer than the cache's chunk size are
    /// processed in chunks.
    fn forward(
        &mut self,
        tokens: &[u32],
        media: Option<MediaRows<'_>>,
        pos0: usize,
        cache: &mut KvCache,
        want: Logits,
    ) -> Result<&[f32], ModelError>;

    /// Bytes of weights read to decode one token (every matrix once; one embedding row).
    fn weight_bytes_per_token(&self) -> usize;

    /// Like [`TextModel::forward`] without media, but returns the final-normed hidden states of
    /// every position (`[tokens, hidden]`, the LM head's input) instead of logits: for callers
    /// that need only some vocabulary rows (the quantization sensitivity scan).
    fn forward_hidden(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<&[f32], ModelError> {
        let _ = (tokens, pos0, cache);
        Err(ModelError::NotSupported("hidden-state output".into()))
    }

    /// [`TextModel::forward_hidden`] that also stores the residual stream entering each decoder
    /// layer in `taps` (`[layers][tokens][hidden]`), for [`TextModel::forward_hidden_from`].
    fn forward_hidden_taps(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
        taps: &mut Vec<f32>,
    ) -> Result<&[f32], ModelError> {
        let _ = (tokens, pos0, cache, taps);
        Err(ModelError::NotSupported("hidden-state taps".into()))
    }

    /// [`TextModel::forward_hidden`] from decoder layer `layer` on, given the residual stream
    /// `x` (`[tokens, hidden]`) entering it: layers before it are skipped (their cache rows are
    /// left as they are), so a change in layer `layer` is re-evaluated at a fraction of the cost.
    fn forward_hidden_from(
        &mut self,
        layer: usize,
        x: &[f32],
        pos0: usize,
        cache: &mut KvCache,
    ) -> Result<&[f32], ModelError> {
        let _ = (layer, x, pos0, cache);
        Err(ModelError::NotSupported("hidden-state input".into()))
    }
}

/// Builds the text model the header names.
pub fn load_model<'a>(file: &'a CellmFile) -> Result<Box<dyn TextModel + 'a>, ModelError> {
    let h = file.header();
    match h.family.as_str() {
        "gemma3" | "gemma3_text" => Ok(Box::new(gemma3::Model::new(file)?)),
        "gemma4" | "gemma4_text" => Ok(Box::new(gemma4::Model::new(file)?)),
        other => Err(ModelError::UnsupportedFamily(other.to_string())),
    }
}

/// Builds the text model the header names with `overrides` replacing file tensors of the same
/// name (CPU only; the file itself is untouched).
pub fn load_model_with<'a>(
    file: &'a CellmFile,
    overrides: &'a weights::TensorOverrides,
) -> Result<Box<dyn TextModel + 'a>, ModelError> {
    let w = weights::Weights::text_stack(file).with_overrides(overrides);
    match file.header().family.as_str() {
        "gemma3" | "gemma3_text" => Ok(Box::new(gemma3::Model::with_weights(file, w)?)),
        "gemma4" | "gemma4_text" => Ok(Box::new(gemma4::Model::with_weights(file, w)?)),
        other => Err(ModelError::UnsupportedFamily(other.to_string())),
    }
}

/// Largest number of new tokens one chunk of a forward call holds: bounded by the sliding window
/// (the KV rings are sized window + chunk - 1) and by a fixed cap that keeps scratch small.
pub fn chunk_size(cfg: &config::TextConfig) -> usize {
    const CAP: usize = 512;
    match cfg.max_window() {
        0 => CAP,
        w => w.min(CAP),
    }
}
