//! The `.cellm` single-file model format (see FORMAT.md at the repository root).
//!
//! Layout: a 32-byte preamble (magic, version, header length, data offset), a UTF-8 JSON
//! [`Header`] padded with spaces to its reserved length, then the data section where every tensor
//! starts 64-byte aligned. [`CellmFile`] memory-maps and validates a file; [`CellmWriter`] streams
//! tensors into a temporary file and renames it into place only when complete.
//! [`update_header`] rewrites the header in its reserved space (e.g. to store measured fidelity).

mod header;
mod reader;
mod writer;

pub use header::*;
pub use reader::CellmFile;
pub use writer::{CellmWriter, TensorPlan, update_header};

/// First 8 bytes of every `.cellm` file.
pub const MAGIC: [u8; 8] = *b"CELLM\0\r\n";
/// Length of the fixed preamble: magic, version, flags, header_len, data_offset.
pub const PREAMBLE_LEN: usize = 32;
/// Format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every tensor's first byte, relative to the file start.
pub const ALIGNMENT: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is a folder or a device, not a .cellm file (a Hugging Face folder is converted with \
         `cellm convert FOLDER -o model.cellm`)"
    )]
    NotAFile(String),
    #[error("{0} is not a .cellm file (bad magic bytes)")]
    BadMagic(String),
    #[error("{path} has format version {found}; this build reads version {expected}")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path} is truncated: {what}")]
    Truncated { path: String, what: String },
    #[error("{path}: invalid header: {what}")]
    Header { path: String, what: String },
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        path: String,
        tensor: String,
        what: String,
    },
    #[error("tensor '{0}' is not in the model")]
    MissingTensor(String),
    #[error("conversion cancelled")]
    Cancelled,
}
