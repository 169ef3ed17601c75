//! GGUF (v3) files: metadata, tensor infos, dequantization, and the mapping of llama.cpp's Gemma
//! tensor names onto Hugging Face names.
//!
//! [`parse`] reads the container, [`dequant`] decodes ggml block formats to f32, [`names`] and
//! [`config`] translate llama.cpp's Gemma 3 names and metadata to Hugging Face ones,
//! [`gemma4_names`] and [`gemma4_config`] do the same for Gemma 4 and its mmproj (vision and audio
//! towers), [`vocab`] builds the tokenizer, and [`GgufSource`] ties them into a
//! [`crate::source::Source`].

pub mod config;
pub mod dequant;
pub mod gemma4_config;
pub mod gemma4_names;
pub mod names;
pub mod parse;
mod source;
pub mod types;
pub mod vocab;

#[cfg(test)]
mod tests;

pub use parse::{GgufFile, GgufValue, TensorInfo};
pub use source::{GgufSource, find_mmproj};
pub use types::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{0}")]
    Invalid(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
