//! What a GPU decoder keeps beside its layers: the upload helpers for its weights and the device
//! state sized from the session's cache (KV rings and attention scratch).

use super::head::GpuHead;
use super::kv::GpuKv;
use crate::kernels::gpu::{ElemType, GpuBuffer, GpuContext, GpuError, GpuWeight};
use crate::kv_cache::KvCache;
use crate::models::ModelError;
use crate::models::weights::Weights;
use crate::tensor::TensorView;

/// Uploads the `[out, inp]` matrix `{name}.weight` in its stored dtype; adds its bytes to
/// `bytes` (the weights a token reads).
pub(super) fn linear(
    ctx: &GpuContext,
    w: &Weights<'_>,
    name: &str,
    out: usize,
    inp: usize,
    bytes: &mut usize,
) -> Result<GpuWeight, ModelError> {
    let t = w.get(&format!("{name}.weight"), &[out, inp])?;
    *bytes += t.data.len();
    upload(ctx, &t)
}

/// Uploads `t` and waits for the copy: wgpu keeps the host staging copy of a buffer written at
/// creation until a submit completes, so without this the whole model would sit in host memory
/// twice over until the first forward.
pub(super) fn upload(ctx: &GpuContext, t: &TensorView<'_>) -> Result<GpuWeight, ModelError> {
    let w = GpuWeight::upload(ctx, t)?;
    ctx.queue().submit(std::iter::empty());
    ctx.wait()?;
    Ok(w)
}

/// Uploads the `n`-vector `{name}.weight` as f32 (norm weights).
pub(super) fn vector(
    ctx: &GpuContext,
    w: &Weights<'_>,
    name: &str,
    n: usize,
) -> Result<GpuBuffer, ModelError> {
    Ok(GpuBuffer::from_f32(
        ctx,
        &w.vector(&format!("{name}.weight"), n)?,
    ))
}

/// The error of recording before the first forward allocated the device buffers.
pub(super) fn missing() -> GpuError {
    GpuError::Unsupported("device buffers not allocated".into())
}

/// Device state that depends on the session's cache (sizes learnt at the first forward).
pub(super) struct DeviceState {
    pub kv: GpuKv,
    pub scratch: GpuBuffer,
    limit: usize,
    chunk: usize,
    /// Changes whenever a buffer above is made again (work recorded ahead is then stale).
    pub generation: u64,
}

/// Source of [`DeviceState::generation`] values, unique across states.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How a model's device state is laid out: (kv_dim, window) of each KV layer, its element type
/// and the number of query heads.
pub(super) struct StateSpec<'s> {
    pub kv_dims: &'s [(usize, Option<usize>)],
    pub kv_elem: ElemType,
    pub heads: usize,
}

impl DeviceState {
    /// The state for `cache` in `slot`: made again when the cache's limit or chunk size changed
    /// (the head then takes chunks of that many rows), its KV reserved up to position `end` and
    /// its attention scratch grown for chunks ending there.
    pub(super) fn ensure<'s>(
        slot: &'s mut Option<DeviceState>,
        ctx: &GpuContext,
        spec: &StateSpec<'_>,
        head: &mut GpuHead,
        cache: &KvCache,
        end: usize,
    ) -> Result<&'s mut DeviceState, ModelError> {
        let (limit, chunk) = (cache.limit(), cache.max_chunk());
        if slot
            .as_ref()
            .is_none_or(|s| s.limit != limit || s.chunk != chunk)
        {
            let kv = GpuKv::new(ctx, spec.kv_dims, limit, chunk, spec.kv_elem);
            // Logits of several rows (`cellm compare`) go through the head a few rows at a time.
            head.set_max_rows(ctx, chunk);
            *slot = Some(DeviceState {
                scratch: GpuBuffer::zeros(ctx, 1, ElemType::F32),
                kv,
                limit,
                chunk,
                generation: next_generation(),
            });
        }
        let Some(s) = slot.as_mut() else {
            return Err(ModelError::Gpu("device state missing".into()));
        };
        let mut changed = s.kv.reserve(ctx, end, limit)?;
        // Grow the attention scratch for chunks of up to `chunk` rows ending at `end` (doubling,
        // so a growing context reallocates rarely).
        let need = chunk * spec.heads * end.min(s.kv.max_slots()).max(1);
        if s.scratch.len < need {
            s.scratch = GpuBuffer::zeros(ctx, need.max(2 * s.scratch.len), ElemType::F32);
            changed = true;
        }
        if changed {
            s.generation = next_generation();
        }
        Ok(s)
    }
}
