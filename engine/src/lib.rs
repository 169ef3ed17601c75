//! cellm-engine: everything between a `.cellm` file and a stream of tokens.
//!
//! Data flow: [`format`] (memory-mapped file) -> [`tensor`] (typed views, quantized layouts)
//! -> [`models`] (Gemma 3 / Gemma 4 text stacks) using [`kernels`] -> [`sampler`] ->
//! [`tokenizer`] -> text, all driven by [`session`].

pub mod atomic_file;
pub mod backend_probe;
pub mod calibrate;
pub mod chat;
pub mod format;
pub mod kernels;
pub mod kv_cache;
pub mod memory;
pub mod models;
pub mod numerics;
pub mod sampler;
pub mod session;
pub mod tensor;
pub mod tokenizer;
mod tokenizer_bpe;
mod tokenizer_load;
