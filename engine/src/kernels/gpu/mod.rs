//! GPU backend: the CPU op set ([`super::cpu`]) as wgpu compute shaders (WGSL), runnable on
//! Vulkan, Metal and DX12, and on mesa's software Vulkan (lavapipe) in CI.
//!
//! # How a model uses it
//! - [`GpuContext::new`] once: picks a high-performance adapter, enables `shader-f16` when offered,
//!   and returns [`GpuError::NoAdapter`] (never a panic) where there is none.
//! - Weights: [`GpuWeight::upload`] copies a [`TensorView`](crate::tensor::TensorView) once, in
//!   its stored form (q4/q8 packed bytes and f16 scales, f16, f32; bf16 becomes f32), split by rows
//!   into several buffers when it exceeds the adapter's storage-binding limit (a 262144-row LM head).
//! - Activations, KV caches and scratch live in [`GpuBuffer`]s allocated once per session.
//! - Per token, the model records every op into one [`Encoder`] (`matmul::matmul(&mut enc, ..)`,
//!   `norm::rmsnorm(&mut enc, ..)`, ...). Recording only notes the pipeline, the buffers and a few
//!   bytes of parameters; [`Encoder::submit`] packs all parameters into one uniform buffer, builds
//!   the bind groups and one compute pass, and submits a single command buffer. Nothing is read
//!   back except what the caller asks for with [`GpuContext::read_f32`] (the logits).
//! - Ops run in recording order; wgpu inserts the barriers between dispatches that share buffers.
//!
//! # Numerics
//! Every kernel accumulates in f32. Quantized matmuls dequantize the weights in the shader and
//! multiply float activations (no int8 activations as on the CPU), so they match the scalar
//! dequantize reference to f32 rounding. f16 KV caches are read through `unpack2x16float`, so
//! no `shader-f16` support is needed.
//!
//! # Speed (decode matvec, `examples/gpu_bench.rs`, effective weight GB/s)
//! H100 (Vulkan, 3.35 TB/s peak): LM head [262144x640] q4 1380, q8 1850, f16 2320 (69%);
//! [6144x1536] and [1536x6144]: q4 ~380, q8 ~940, f16 ~1430-1600. q4 is bound by the in-shader
//! unpacking and the 8 activation loads per 16 weight bytes, not by memory; small matrices also
//! pay a few microseconds per dispatch. lavapipe runs the same shaders at well under 1 GB/s:
//! it is for parity tests, never for speed.
//!
//! # Files
//! One file per op with its WGSL next to it (`*.wgsl`, `include_str!`), its checks, its dispatch
//! sizes and a test against the CPU kernel; tests skip (with a note) where no adapter exists.

mod buffer;
mod device;
mod encoder;

pub mod attention;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod softmax;

pub use buffer::{ElemType, GpuBuffer, GpuWeight};
pub use device::{AdapterSummary, GpuContext};
pub use encoder::Encoder;

/// Errors of the GPU backend. A missing adapter is an ordinary error, so callers can fall back.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    #[error("the GPU adapter refused a device: {0}")]
    RequestDevice(String),
    #[error("GPU op '{op}': {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("not supported on the GPU backend: {0}")]
    Unsupported(String),
    #[error("GPU device error: {0}")]
    Device(String),
    #[error("GPU read-back failed: {0}")]
    Map(String),
}

pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>) -> GpuError {
    GpuError::Shape {
        op,
        msg: msg.into(),
    }
}

#[cfg(test)]
pub(crate) mod test_util;
