//! cellm-convert: reads Hugging Face folders and GGUF files one tensor at a time and writes
//! `.cellm` files through `cellm_engine::format::CellmWriter`.

pub mod error;
pub mod source;

pub use error::ConvertError;
