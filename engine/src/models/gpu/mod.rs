//! Whole-model GPU backends: the [`TextModel`] trait run on the wgpu op set
//! ([`crate::kernels::gpu`]).
//!
//! Weights are uploaded once in their stored dtype; activations and the KV cache stay on the
//! device. Each forward chunk records one [`Encoder`](crate::kernels::gpu::Encoder), submits it
//! once and reads back only the logits. Embedding rows for the input tokens are gathered on the
//! CPU from the memory map (one row per token) and uploaded with the chunk.
//!
//! Gemma 3 and Gemma 4 run here; [`load`] returns an error for other families, and the session
//! then falls back to the CPU.

mod ahead;
mod blocks;
mod gemma3_gpu;
mod gemma4_gpu;
mod head;
mod kv;
mod state;

use super::{ModelError, TextModel};
use crate::format::CellmFile;
use crate::kernels::gpu::{GpuContext, GpuError};
use crate::kv_cache::KvPrecision;

pub use gemma3_gpu::Gemma3Gpu;
pub use gemma4_gpu::Gemma4Gpu;

impl From<GpuError> for ModelError {
    fn from(e: GpuError) -> Self {
        ModelError::Gpu(e.to_string())
    }
}

/// Whether the adapter is a real GPU (discrete or integrated), not a software rasterizer such
/// as lavapipe (device type "Cpu"). `auto` picks the GPU only then.
pub fn is_hardware(ctx: &GpuContext) -> bool {
    matches!(
        ctx.adapter().device_type.as_str(),
        "DiscreteGpu" | "IntegratedGpu"
    )
}

/// Builds the GPU text model the header names, uploading its weights to `ctx`'s device.
/// `kv` selects the device KV cache storage: f32 stays f32, everything else is f16 (the GPU
/// attention reads f16 or f32 rings only).
pub fn load<'a>(
    file: &'a CellmFile,
    ctx: GpuContext,
    kv: KvPrecision,
) -> Result<Box<dyn TextModel + 'a>, ModelError> {
    let h = file.header();
    match h.family.as_str() {
        "gemma3" | "gemma3_text" => Ok(Box::new(Gemma3Gpu::new(file, ctx, kv)?)),
        "gemma4" | "gemma4_text" => Ok(Box::new(Gemma4Gpu::new(file, ctx, kv)?)),
        other => Err(ModelError::Gpu(format!(
            "no GPU text stack for family '{other}' yet"
        ))),
    }
}
