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
//!   bytes of parameters. [`Encoder::flush`] (every few layers) and [`Encoder::submit`] write the
//!   parameters into one shared uniform buffer and submit a command buffer, so the GPU runs the
//!   first layers while the host records the rest. Bind groups are cached across submits (keyed by
//!   pipeline, buffers and parameter offset): a model records the same dispatches every token, so
//!   after the first token none is created. Nothing is read back except what the caller asks
//!   for with [`GpuContext::read_f32`] (the logits).
//! - Ops run in recording order; wgpu inserts the barriers between dispatches that share buffers.
//! - Fused ops keep the dispatch count down (each dispatch and barrier costs ~5 us on the GPU):
//!   post-norm + residual add + next pre-norm (`norm::rmsnorm_add_norm`), q/k norm + RoPE
//!   (`rope::rmsnorm_rope`), gate/up + GELU (`matmul::matmul_glu`), K and V stores with the v norm
//!   (`attention::store_kv_pair`), chunk attention in one dispatch per layer. Decode steps also
//!   run q/k/v as one dispatch (`matmul::matmul3`) and fold each residual add with its post-norm
//!   (and the next pre-norm) into the prologue of the matvec that reads the stream next
//!   (`matmul::AddNorm`, `matmul_x_pro.wgsl`; the stream alternates between two buffers), about
//!   270 dispatches per Gemma 4 E2B token instead of ~440.
//! - `sources::assembled_shaders` lists every assembled WGSL source with its `override` values;
//!   `tests/gpu_shaders_translate.rs` translates each with naga's MSL and HLSL back ends.
//! - `CELLM_GPU_PROFILE=1` prints submits, dispatches and host/wait times when the context drops;
//!   `=2` also times every dispatch with timestamp queries and prints a per-kernel table.

//! # Numerics
//! Every kernel accumulates in f32. Quantized matmuls dequantize the weights in the shader and
//! multiply float activations (no int8 activations as on the CPU), so they match the scalar
//! dequantize reference to f32 rounding. f16 KV caches are read through `unpack2x16float`, so
//! no `shader-f16` support is needed.
//!
//! # Speed
//! Whole model, H200 (Vulkan), random int4 weights, `cellm bench --backend gpu --prompt-tokens 128
//! --gen-tokens 128`: Gemma 4 E2B shape decode 164 tok/s, prefill 1320 tok/s; Gemma 3 270M shape
//! decode 430, prefill 3960. Decode matvecs (`examples/gpu_bench.rs --e2b --q4`) reach 250-680
//! GB/s on E2B shapes, far below the card's 4.8 TB/s: small matrices are bound by launch and
//! reduction latency, which is where the next gains are. Lane reductions use subgroup shuffles
//! where the adapter has subgroups at least LANES wide (`CELLM_GPU_NO_SUBGROUPS=1` disables),
//! else workgroup memory. lavapipe runs the same shaders at well under 1 GB/s: it is for parity
//! tests, never for speed.
//!
//! # Files
//! One file per op with its WGSL next to it (`*.wgsl`, `include_str!`), its checks, its dispatch
//! sizes and a test against the CPU kernel; tests skip (with a note) where no adapter exists.

mod buffer;
mod device;
mod encoder;

pub mod attention;
pub mod bandwidth;
pub mod elementwise;
pub mod gemm;
pub mod matmul;
pub mod matmul_lut;
pub mod norm;
pub mod rope;
pub mod softmax;
mod sources;
pub mod towers;

pub use buffer::{ElemType, GpuBuffer, GpuWeight, ReadBack};
pub use device::{AdapterSummary, GpuContext};
pub use encoder::Encoder;
#[doc(hidden)]
pub use sources::{AssembledShader, assembled_shaders};

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

/// `source` with the workgroup reductions of `block_reduce.wgsl` appended.
pub(crate) fn with_block_reduce(source: &str) -> String {
    format!("{source}\n{}", include_str!("block_reduce.wgsl"))
}

/// `source` with the q/k norm + RoPE helpers of norm_rope.wgsl and the block reductions.
pub(crate) fn with_norm_rope(source: &str) -> String {
    with_block_reduce(&format!("{source}\n{}", include_str!("norm_rope.wgsl")))
}

pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>) -> GpuError {
    GpuError::Shape {
        op,
        msg: msg.into(),
    }
}

#[cfg(test)]
pub(crate) mod test_util;
