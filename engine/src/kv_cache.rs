//! Key/value cache of the text stack, stored as f16 (default) or f32 ([`KvPrecision`]).
//!
//! One [`LayerCache`] per layer that computes its own K/V; KV-sharing consumers (Gemma 4) read the
//! producer's cache. Full-attention layers grow with the context (up to its limit). Sliding layers
//! keep a ring of `window + max_chunk - 1` slots: enough for every query of a chunk of at most
//! `max_chunk` new tokens to see its whole window, and independent of the context length.
//! Position `p` lives in slot `p % slots` (for growing layers that is simply `p`).

use crate::models::config::{KvRole, TextConfig};
use half::f16;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("the context holds {limit} tokens; {tokens} were needed")]
    ContextFull { tokens: usize, limit: usize },
}

/// Storage type of cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPrecision {
    /// Half the memory and bandwidth; the default.
    #[default]
    F16,
    /// Exact float32 attention inputs (reference comparisons).
    F32,
}

/// A growable buffer of cached rows in either precision.
#[derive(Debug)]
enum KvBuf {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl KvBuf {
    fn new(p: KvPrecision) -> Self {
        match p {
            KvPrecision::F16 => KvBuf::F16(Vec::new()),
            KvPrecision::F32 => KvBuf::F32(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            KvBuf::F16(v) => v.len(),
            KvBuf::F32(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvBuf::F16(v) => v.len() * 2,
            KvBuf::F32(v) => v.len() * 4,
        }
    }

    fn resize(&mut self, n: usize) {
        match self {
            KvBuf::F16(v) => v.resize(n, f16::ZERO),
            KvBuf::F32(v) => v.resize(n, 0.0),
        }
    }

    fn store(&mut self, at: usize, src: &[f32]) {
        match self {
            KvBuf::F16(v) => {
                for (o, x) in v[at..at + src.len()].iter_mut().zip(src) {
                    *o = f16::from_f32(*x);
                }
            }
            KvBuf::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }
}

/// Cached K and V of one layer: `[slot][kv_dim]` rows.
#[derive(Debug)]
pub struct LayerCache {
    k: KvBuf,
    v: KvBuf,
    kv_dim: usize,
    /// Ring size for sliding layers; `None` for layers that grow with the context.
    ring: Option<usize>,
}

impl LayerCache {
    fn slots(&self) -> usize {
        self.ring.unwrap_or(self.k.len() / self.kv_dim.max(1))
    }

    fn reserve(&mut self, positions: usize) {
        let slots = self.ring.unwrap_or(positions);
        let need = slots * self.kv_dim;
        if self.k.len() < need {
            // Grow geometrically so that decode steps do not reallocate every token.
            let new = match self.ring {
                Some(_) => need,
                None => need.max(self.k.len() * 2),
            };
            self.k.resize(new);
            self.v.resize(new);
        }
    }
}

/// Cached rows in one of the storage precisions.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F16 { k: &'a [f16], v: &'a [f16] },
    F32 { k: &'a [f32], v: &'a [f32] },
}

/// A read-only view of one layer's cached K/V for the attention kernel.
#[derive(Clone, Copy, Debug)]
pub struct KvSlots<'a> {
    pub rows: KvRows<'a>,
    /// Position `p` is stored in slot `p % slots`.
    pub slots: usize,
}

#[derive(Debug)]
pub struct KvCache {
    caches: Vec<Option<LayerCache>>,
    /// For each layer, the layer whose cache it reads.
    source: Vec<usize>,
    len: usize,
    limit: usize,
    max_chunk: usize,
}

impl KvCache {
    /// An empty cache for `cfg`, holding at most `limit` positions, fed at most `max_chunk` new
    /// tokens per forward call.
    pub fn new(cfg: &TextConfig, limit: usize, max_chunk: usize, precision: KvPrecision) -> Self {
        let max_chunk = max_chunk.max(1);
        let mut caches = Vec::with_capacity(cfg.layers.len());
        let mut source = Vec::with_capacity(cfg.layers.len());
        for (i, l) in cfg.layers.iter().enumerate() {
            match l.kv {
                KvRole::Own => {
                    caches.push(Some(LayerCache {
                        k: KvBuf::new(precision),
                        v: KvBuf::new(precision),
                        kv_dim: l.num_kv_heads * l.head_dim,
                        ring: l.window.map(|w| (w + max_chunk - 1).min(limit.max(1))),
                    }));
                    source.push(i);
                }
                KvRole::Reuse(p) => {
                    caches.push(None);
                    source.push(p);
                }
            }
        }
        Self {
            caches,
            source,
            len: 0,
            limit,
            max_chunk,
        }
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Bytes held by the cache buffers.
    pub fn bytes(&self) -> usize {
        self.caches
            .iter()
            .flatten()
            .map(|c| c.k.bytes() + c.v.bytes())
            .sum()
    }

    /// Makes room for positions `pos0 .. pos0 + t` (call before writing them).
    pub fn reserve(&mut self, pos0: usize, t: usize) -> Result<(), KvError> {
        let end = pos0 + t;
        if end > self.limit {
            return Err(KvError::ContextFull {
                tokens: end,
                limit: self.limit,
            });
        }
        for c in self.caches.iter_mut().flatten() {
            c.reserve(end);
        }
        Ok(())
    }

    /// Stores K and V rows (`t` rows of kv_dim each) of `layer` for positions `pos0..pos0+t`.
    pub fn write(&mut self, layer: usize, pos0: usize, t: usize, k: &[f32], v: &[f32]) {
        let c = self.caches[layer]
            .as_mut()
            .expect("write to a layer that reuses another layer's cache");
        let d = c.kv_dim;
        let slots = c.slots();
        for i in 0..t {
            let s = (pos0 + i) % slots;
            c.k.store(s * d, &k[i * d..(i + 1) * d]);
            c.v.store(s * d, &v[i * d..(i + 1) * d]);
        }
    }

    /// The K/V `layer` attends over (its own, or its producer's).
    pub fn slots(&self, layer: usize) -> KvSlots<'_> {
        let c = self.caches[self.source[layer]]
            .as_ref()
            .expect("KV source layer has a cache");
        let rows = match (&c.k, &c.v) {
            (KvBuf::F16(k), KvBuf::F16(v)) => KvRows::F16 { k, v },
            (KvBuf::F32(k), KvBuf::F32(v)) => KvRows::F32 { k, v },
            _ => unreachable!("K and V share one precision"),
        };
        KvSlots {
            rows,
            slots: c.slots(),
        }
    }

    /// Marks positions `..len` as valid after a forward call wrote them.
    pub fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// Whether the cache can be cut back to its first `n` positions and then extended: the
    /// sliding rings must still hold the window before `n`.
    pub fn can_truncate(&self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.caches.iter().flatten().all(|c| match c.ring {
            // The ring holds positions len - slots .. len; position n - window + 1 must be there.
            Some(slots) => {
                let window = slots + 1 - self.max_chunk;
                (n + 1).saturating_sub(window) >= self.len.saturating_sub(slots)
            }
            None => true,
        })
    }

    /// Keeps the first `n` positions (prefix reuse); falls back to empty when the rings no
    /// longer hold what `n` needs. Returns the kept length.
    pub fn truncate(&mut self, n: usize) -> usize {
        self.len = if self.can_truncate(n) { n } else { 0 };
        self.len
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config;

    fn cfg() -> TextConfig {
        config::gemma3(&serde_json::json!({
            "hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 8,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
            "vocab_size": 16, "sliding_window": 4, "sliding_window_pattern": 2
        }))
        .unwrap()
    }

    #[test]
    fn sliding_ring_does_not_grow_and_full_layer_does() {
        let c = cfg();
        let mut kv = KvCache::new(&c, 100, 2, KvPrecision::F16);
        for p in 0..50 {
            kv.reserve(p, 1).unwrap();
            kv.write(0, p, 1, &[p as f32; 4], &[p as f32; 4]);
            kv.write(1, p, 1, &[p as f32; 4], &[p as f32; 4]);
            kv.set_len(p + 1);
        }
        let s0 = kv.slots(0);
        assert_eq!(s0.slots, 5);
        let KvRows::F16 { k: k0, .. } = s0.rows else {
            panic!("f16 cache")
        };
        assert_eq!(k0.len(), 5 * 4);
        // Position 49 is in slot 49 % 5 = 4.
        assert_eq!(k0[4 * 4].to_f32(), 49.0);
        let s1 = kv.slots(1);
        assert!(s1.slots >= 50);
        let KvRows::F16 { k: k1, .. } = s1.rows else {
            panic!("f16 cache")
        };
        assert_eq!(k1[10 * 4].to_f32(), 10.0);
        assert!(matches!(
            kv.reserve(99, 2),
            Err(KvError::ContextFull {
                tokens: 101,
                limit: 100
            })
        ));
        assert!(kv.can_truncate(49));
        assert!(!kv.can_truncate(30));
        assert_eq!(kv.truncate(30), 0);
    }
}
