//! Errors of media decoding and the encoder towers.

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable WAV file: {why}")]
    BadWav { path: String, why: String },
    #[error("{path} has no audio samples")]
    EmptyAudio { path: String },
    #[error("audio of {secs:.0} s is longer than the {limit_secs:.0} s this build accepts")]
    AudioTooLong { secs: f64, limit_secs: f64 },
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Format(#[from] cellm_engine::format::FormatError),
    #[error("{path} is not a readable image: {why}")]
    BadImage { path: String, why: String },
    #[error("{path} is {width}x{height} pixels, larger than this build accepts ({limit})")]
    ImageTooLarge {
        path: String,
        width: u64,
        height: u64,
        limit: String,
    },
    #[error("model config: {0}")]
    Config(String),
}
