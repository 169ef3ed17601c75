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
    /// The planned (or written) file would not load: the text stack refused it.
    #[error(transparent)]
    Model(#[from] cellm_engine::models::ModelError),
    /// The planned (or written) file would not load: a tower refused it.
    #[error(transparent)]
    Encoder(#[from] cellm_encoders::EncoderError),
    #[error("conversion cancelled")]
    Cancelled,
}
