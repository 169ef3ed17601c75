//! Quantization: which dtype each tensor gets ([`profile`]) and row-block encoding
//! ([`encode`]).

pub mod encode;
pub mod profile;

pub use profile::{Profile, QuantSpec, TensorDecision};
