//! GGUF (v3) files: metadata, tensor infos, dequantization, and the mapping of llama.cpp's Gemma
//! tensor names onto Hugging Face names.

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{0}")]
    Invalid(String),
}
