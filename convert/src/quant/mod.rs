//! Quantization: which dtype each tensor gets ([`profile`]) and row-block encoding
//! ([`encode`]).

pub mod auto;
pub mod awq;
pub mod encode;
pub mod kmeans;
pub mod profile;
pub mod select;
pub mod sensitivity;

pub use profile::{Profile, QuantSpec, TensorDecision};
