//! Errors of the converter.

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unsupported architecture '{0}': cellm converts Gemma 3 (text) and Gemma 4 checkpoints"
    )]
    UnsupportedArchitecture(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Gguf(#[from] crate::source::gguf::GgufError),
    #[error(transparent)]
    Format(#[from] cellm_engine::format::FormatError),
    #[error(transparent)]
    Tensor(#[from] cellm_engine::tensor::TensorError),
    #[error("conversion cancelled")]
    Cancelled,
}
