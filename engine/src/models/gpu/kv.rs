//! The KV cache on the device: one K and one V buffer per caching layer, `[slot][kv_dim]`,
//! position `p` in slot `p % slots`. Sliding layers keep a ring of `window + chunk - 1` slots
//! (the same sizes as [`crate::kv_cache::KvCache`], so its prefix-reuse rule holds here too);
//! full layers grow geometrically up to the context limit, keeping slot = position.

use crate::kernels::gpu::{ElemType, Encoder, GpuBuffer, GpuContext, GpuError};

pub struct LayerKv {
    pub k: GpuBuffer,
    pub v: GpuBuffer,
    pub slots: usize,
    kv_dim: usize,
    /// Fixed ring size for sliding layers.
    ring: Option<usize>,
}

pub struct GpuKv {
    pub layers: Vec<LayerKv>,
    elem: ElemType,
}

/// Smallest capacity given to a full-attention layer, so short chats do not reallocate.
const MIN_SLOTS: usize = 256;

impl GpuKv {
    /// `layers`: (kv_dim, window) of each caching layer; `limit` and `chunk` as the session's
    /// [`crate::kv_cache::KvCache`].
    pub fn new(
        ctx: &GpuContext,
        layers: &[(usize, Option<usize>)],
        limit: usize,
        chunk: usize,
        elem: ElemType,
    ) -> GpuKv {
        let limit = limit.max(1);
        let layers = layers
            .iter()
            .map(|&(kv_dim, window)| {
                let ring = window.map(|w| (w + chunk.max(1) - 1).min(limit));
                let slots = ring.unwrap_or(MIN_SLOTS.min(limit));
                LayerKv {
                    k: GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                    v: GpuBuffer::zeros(ctx, slots * kv_dim, elem),
                    slots,
                    kv_dim,
                    ring,
                }
            })
            .collect();
        GpuKv { layers, elem }
    }

    /// Grows full-attention layers to hold positions `..end` (at most `limit`), copying what
    /// they hold; true when a layer was reallocated.
    pub fn reserve(
        &mut self,
        ctx: &GpuContext,
        end: usize,
        limit: usize,
    ) -> Result<bool, GpuError> {
        let mut enc = Encoder::new(ctx);
        for l in &mut self.layers {
            if l.ring.is_some() || l.slots >= end {
                continue;
            }
            let slots = end.max(l.slots * 2).min(limit.max(end));
            let (k, v) = (
                GpuBuffer::zeros(ctx, slots * l.kv_dim, self.elem),
                GpuBuffer::zeros(ctx, slots * l.kv_dim, self.elem),
            );
            let n = l.slots * l.kv_dim;
            enc.copy(&l.k, 0, &k, 0, n)?;
            enc.copy(&l.v, 0, &v, 0, n)?;
            (l.k, l.v, l.slots) = (k, v, slots);
        }
        if enc.is_empty() {
            return Ok(false);
        }
        enc.submit()?;
        Ok(true)
    }

    /// Most slots any layer holds (sizes the attention scratch).
    pub fn max_slots(&self) -> usize {
        self.layers.iter().map(|l| l.slots).max().unwrap_or(1)
    }
}
