//! cellm-convert: reads Hugging Face folders and GGUF files one tensor at a time and writes
//! `.cellm` files through `cellm_engine::format::CellmWriter`.
//!
//! Flow: [`open_source`] -> [`source::Source`] (HF names, f32 values) -> [`quant::profile`]
//! decides each tensor's dtype -> [`quant::encode`] -> [`convert()`] streams into the writer.

pub mod convert;
pub mod error;
pub mod fidelity;
pub mod plan_check;
pub mod provenance;
pub mod quant;
pub mod source;

pub use convert::{
    ConvertOptions, ConvertSummary, Phase, Progress, SYNTHETIC_PREFIX, convert, open_source,
    open_source_with_mmproj, plan,
};
pub use error::ConvertError;
pub use quant::{Profile, QuantSpec};
