//! Checkpoint sources. Every source presents tensors under their Hugging Face names and shapes
//! (PyTorch order, `[out, in]` for linears) and in Hugging Face conventions (e.g. Gemma 3 norm
//! weights without llama.cpp's +1), so everything downstream is source-agnostic.

pub mod gguf;
pub mod hf;
pub mod synthetic;
mod tokenizer_files;

use crate::error::ConvertError;
use cellm_engine::format::TokenizerInfo;
use std::ops::Range;
use std::path::PathBuf;

/// Name and shape of one tensor a source can provide.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceTensor {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape in PyTorch order.
    pub shape: Vec<usize>,
}

/// A checkpoint that can be read one tensor at a time.
pub trait Source: Send + Sync {
    /// "gemma3" or "gemma4".
    fn family(&self) -> &str;
    /// A Hugging Face style config.json (for GGUF: built from the metadata).
    fn config(&self) -> &serde_json::Value;
    /// Tokenizer (tokenizer.json as a string), chat template, special ids.
    fn tokenizer(&self) -> &TokenizerInfo;
    /// Every tensor to convert, in a stable order.
    fn tensors(&self) -> &[SourceTensor];
    /// One tensor as f32 (dequantized / converted), row-major in PyTorch order.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError>;
    /// Files the checkpoint was read from (for provenance hashes).
    fn source_files(&self) -> Vec<PathBuf>;

    /// True when [`Source::read_f32_rows`] is cheaper than reading the whole tensor, so the
    /// converter can stream huge tensors (e.g. the 2.3 G-element PLE table) in row blocks.
    fn supports_row_reads(&self) -> bool {
        false
    }
    /// Rows `rows` (rows = all dims but the last) of one tensor as f32. The default reads the
    /// whole tensor and slices it.
    fn read_f32_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>, ConvertError> {
        let shape = self
            .tensors()
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
            .ok_or_else(|| {
                ConvertError::Invalid(format!("tensor '{name}' is not in the source"))
            })?;
        let cols = cellm_engine::tensor::rows_cols(&shape).1;
        let all = self.read_f32(name)?;
        all.get(rows.start * cols..rows.end * cols)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| {
                ConvertError::Invalid(format!("rows {rows:?} out of range for '{name}'"))
            })
    }
    /// Remarks worth showing the user (e.g. "vision tower not converted").
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}
