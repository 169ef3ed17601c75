//! Key/value cache of the text stack, stored as f16 (default), f32, or int8 / int4 with one
//! symmetric scale per head and position ([`KvPrecision`]).
//!
//! One [`LayerCache`] per layer that computes its own K/V; KV-sharing consumers (Gemma 4) read the
//! producer's cache. Full-attention layers grow with the context (up to its limit). Sliding layers
//! keep a ring of `window + max_chunk - 1` slots: enough for every query of a chunk of at most
//! `max_chunk` new tokens to see its whole window, and independent of the context length.
//! Position `p` lives in slot `p % slots` (for growing layers that is simply `p`).
//!
//! Quantized caches can first rotate each head's K and V rows by a fixed randomized Hadamard
//! transform ([`KvRotation::Hadamard`]): attention rotates the query the same way (q·k is
//! unchanged, the transform being orthogonal) and rotates the weighted sum of values back. The
//! rotation spreads outlier channels over the whole head, so one large channel no longer sets
//! the scale of all the others.

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
    /// int8, one f32 scale per head and position (about a quarter of f32).
    Q8,
    /// int4 (-7..=7, two per byte), one f32 scale per group of [`Q4_GROUP`] elements of a head
    /// and position (per head when the head size is not a multiple of it): fifteen levels
    /// under one scale per 256-wide head lose too much.
    Q4,
}

impl KvPrecision {
    pub const ALL: [KvPrecision; 4] = [
        KvPrecision::F32,
        KvPrecision::F16,
        KvPrecision::Q8,
        KvPrecision::Q4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvPrecision::F16 => "f16",
            KvPrecision::F32 => "f32",
            KvPrecision::Q8 => "q8",
            KvPrecision::Q4 => "q4",
        }
    }

    /// Bytes one position takes in one layer (K and V) with `kv_heads` heads of `head_dim`.
    pub fn bytes_per_token(self, kv_heads: usize, head_dim: usize) -> usize {
        let per_head = match self {
            KvPrecision::F32 => head_dim * 4,
            KvPrecision::F16 => head_dim * 2,
            KvPrecision::Q8 => head_dim + 4,
            KvPrecision::Q4 => head_dim.div_ceil(2) + 4 * (head_dim / q4_group(head_dim)),
        };
        2 * kv_heads * per_head
    }

    /// q8 or q4.
    pub fn is_quantized(self) -> bool {
        matches!(self, KvPrecision::Q8 | KvPrecision::Q4)
    }
}

impl std::fmt::Display for KvPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvPrecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvPrecision::F32),
            "f16" => Ok(KvPrecision::F16),
            "q8" | "int8" => Ok(KvPrecision::Q8),
            "q4" | "int4" => Ok(KvPrecision::Q4),
            other => Err(format!(
                "unknown KV precision '{other}' (expected f32, f16, q8 or q4)"
            )),
        }
    }
}

/// Elements per int4 scale in a [`KvPrecision::Q4`] cache.
pub const Q4_GROUP: usize = 32;

/// The int4 scale group for heads of `head_dim`: [`Q4_GROUP`] when it divides the head, else
/// the whole head.
pub fn q4_group(head_dim: usize) -> usize {
    if head_dim > Q4_GROUP && head_dim.is_multiple_of(Q4_GROUP) {
        Q4_GROUP
    } else {
        head_dim.max(1)
    }
}

/// Optional rotation of K/V rows before they are quantized (ignored for f16/f32 caches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvRotation {
    #[default]
    None,
    /// Fixed random signs followed by a normalized fast Walsh-Hadamard transform.
    Hadamard,
}

/// A randomized Hadamard transform of one head row: `x -> H (D x)` with `D` a fixed diagonal of
/// random signs and `H` the normalized Walsh-Hadamard matrix of size `block`, applied to each
/// `block` of the row (`block` is the largest power of two dividing the head size), so the
/// whole map is orthogonal.
#[derive(Clone, Debug)]
pub struct Hadamard {
    signs: Vec<f32>,
    block: usize,
}

impl Hadamard {
    /// The rotation for rows of `dim`, from a fixed seed (same for every run and layer).
    pub fn new(dim: usize) -> Self {
        let block = if dim == 0 {
            1
        } else {
            1 << dim.trailing_zeros()
        };
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let signs = (0..dim)
            .map(|_| {
                // xorshift64*: any fixed pseudo-random sign pattern works.
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                if s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 63 == 0 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        Self { signs, block }
    }

    pub fn dim(&self) -> usize {
        self.signs.len()
    }

    fn fwht(&self, x: &mut [f32]) {
        let norm = 1.0 / (self.block as f32).sqrt();
        for b in x.chunks_exact_mut(self.block) {
            let mut h = 1;
            while h < b.len() {
                for i in (0..b.len()).step_by(2 * h) {
                    for j in i..i + h {
                        let (u, v) = (b[j], b[j + h]);
                        b[j] = u + v;
                        b[j + h] = u - v;
                    }
                }
                h *= 2;
            }
            b.iter_mut().for_each(|v| *v *= norm);
        }
    }

    /// `x <- H D x` (one head row).
    pub fn apply(&self, x: &mut [f32]) {
        debug_assert_eq!(x.len(), self.dim());
        x.iter_mut().zip(&self.signs).for_each(|(v, s)| *v *= s);
        self.fwht(x);
    }

    /// The inverse, `x <- D H x` (H is its own inverse once normalized).
    pub fn invert(&self, x: &mut [f32]) {
        debug_assert_eq!(x.len(), self.dim());
        self.fwht(x);
        x.iter_mut().zip(&self.signs).for_each(|(v, s)| *v *= s);
    }
}

/// Symmetric quantization of one head row to int8: returns the scale (`max|x| / 127`).
pub fn quantize_q8(x: &[f32], out: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Symmetric quantization of one head row to int4 in -7..=7, stored + 8 two per byte: byte `i`
/// holds element `i` in its low nibble and element `i + h` in its high one, `h = ceil(d / 2)`
/// (halves rather than neighbours, so both unpack into contiguous runs). Returns the scale.
pub fn quantize_q4(x: &[f32], out: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 7.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let q = |v: f32| ((v * inv).round().clamp(-7.0, 7.0) as i32 + 8) as u8;
    let h = x.len().div_ceil(2);
    for (i, o) in out.iter_mut().enumerate().take(h) {
        let lo = x.get(i).map_or(8, |&v| q(v));
        let hi = x.get(i + h).map_or(8, |&v| q(v));
        *o = lo | (hi << 4);
    }
    scale
}

/// Dequantizes one int4 head row of `out.len()` elements (see [`quantize_q4`]).
pub fn dequantize_q4(q: &[u8], scale: f32, out: &mut [f32]) {
    let h = out.len().div_ceil(2);
    for (i, o) in out.iter_mut().enumerate() {
        let n = if i < h { q[i] & 15 } else { q[i - h] >> 4 };
        *o = (n as i32 - 8) as f32 * scale;
    }
}

/// A growable buffer of cached rows in one of the precisions. Quantized buffers hold one scale
/// per `head_dim` elements.
#[derive(Debug)]
enum KvBuf {
    F16(Vec<f16>),
    F32(Vec<f32>),
    Q8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        head_dim: usize,
    },
    /// `head_dim` here is the scale group ([`q4_group`]), not the head size.
    Q4 {
        q: Vec<u8>,
        scales: Vec<f32>,
        head_dim: usize,
    },
}

impl KvBuf {
    fn new(p: KvPrecision, head_dim: usize) -> Self {
        match p {
            KvPrecision::F16 => KvBuf::F16(Vec::new()),
            KvPrecision::F32 => KvBuf::F32(Vec::new()),
            KvPrecision::Q8 => KvBuf::Q8 {
                q: Vec::new(),
                scales: Vec::new(),
                head_dim,
            },
            KvPrecision::Q4 => KvBuf::Q4 {
                q: Vec::new(),
                scales: Vec::new(),
                head_dim: q4_group(head_dim),
            },
        }
    }

    /// Elements held.
    fn len(&self) -> usize {
        match self {
            KvBuf::F16(v) => v.len(),
            KvBuf::F32(v) => v.len(),
            KvBuf::Q8 {
                scales, head_dim, ..
            }
            | KvBuf::Q4 {
                scales, head_dim, ..
            } => scales.len() * head_dim,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvBuf::F16(v) => v.len() * 2,
            KvBuf::F32(v) => v.len() * 4,
            KvBuf::Q8 { q, scales, .. } => q.len() + scales.len() * 4,
            KvBuf::Q4 { q, scales, .. } => q.len() + scales.len() * 4,
        }
    }

    /// Resizes to `n` elements (a multiple of the head size).
    /// The caller grows geometrically, so the capacity is exactly what is asked for.
    fn resize(&mut self, n: usize) {
        fn exact<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) {
            v.reserve_exact(n.saturating_sub(v.len()));
            v.resize(n, fill);
        }
        match self {
            KvBuf::F16(v) => exact(v, n, f16::ZERO),
            KvBuf::F32(v) => exact(v, n, 0.0),
            KvBuf::Q8 {
                q,
                scales,
                head_dim,
            } => {
                exact(q, n, 0);
                exact(scales, n / *head_dim, 0.0);
            }
            KvBuf::Q4 {
                q,
                scales,
                head_dim,
            } => {
                exact(scales, n / *head_dim, 0.0);
                let bytes = scales.len() * head_dim.div_ceil(2);
                exact(q, bytes, 0x88);
            }
        }
    }

    /// Stores one row of whole heads at element `at`; quantized buffers rotate each head first
    /// when `rot` is given.
    fn store(&mut self, at: usize, src: &[f32], rot: Option<&Hadamard>, tmp: &mut Vec<f32>) {
        match self {
            KvBuf::F16(v) => {
                for (o, x) in v[at..at + src.len()].iter_mut().zip(src) {
                    *o = f16::from_f32(*x);
                }
            }
            KvBuf::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            KvBuf::Q8 {
                q,
                scales,
                head_dim,
            } => {
                let d = *head_dim;
                for (h, x) in src.chunks_exact(d).enumerate() {
                    let x = rotated(x, rot, tmp);
                    let e = at + h * d;
                    scales[e / d] = quantize_q8(x, &mut q[e..e + d]);
                }
            }
            KvBuf::Q4 {
                q,
                scales,
                head_dim: g,
            } => {
                // Rotate whole heads, then quantize each group of `g` elements.
                let x = match rot {
                    Some(r) => {
                        tmp.clear();
                        tmp.extend_from_slice(src);
                        tmp.chunks_exact_mut(r.dim()).for_each(|h| r.apply(h));
                        &tmp[..]
                    }
                    None => src,
                };
                let g = *g;
                let bytes = g.div_ceil(2);
                for (i, x) in x.chunks_exact(g).enumerate() {
                    let row = at / g + i;
                    scales[row] = quantize_q4(x, &mut q[row * bytes..(row + 1) * bytes]);
                }
            }
        }
    }
}

/// `x`, or its rotation (computed in `tmp`).
fn rotated<'a>(x: &'a [f32], rot: Option<&Hadamard>, tmp: &'a mut Vec<f32>) -> &'a [f32] {
    match rot {
        Some(r) => {
            tmp.clear();
            tmp.extend_from_slice(x);
            r.apply(tmp);
            tmp
        }
        None => x,
    }
}

/// Cached K and V of one layer: `[slot][kv_dim]` rows.
#[derive(Debug)]
pub struct LayerCache {
    k: KvBuf,
    v: KvBuf,
    kv_dim: usize,
    /// Rotation applied to each head row before quantizing (quantized caches only).
    rot: Option<Hadamard>,
    /// Ring size for sliding layers; `None` for layers that grow with the context.
    ring: Option<usize>,
}

impl LayerCache {
    fn slots(&self) -> usize {
        self.ring.unwrap_or(self.k.len() / self.kv_dim.max(1))
    }

    /// Room for positions `..positions`. A ring is also filled by use: until the context
    /// passes its size, position `p` sits in slot `p` (`p % slots == p`), so a short chat does
    /// not pay for the whole window.
    fn reserve(&mut self, positions: usize) {
        let (slots, cap) = match self.ring {
            Some(r) => (positions.min(r), r * self.kv_dim),
            None => (positions, usize::MAX),
        };
        let need = slots * self.kv_dim;
        if self.k.len() < need {
            // Grow geometrically so that decode steps do not reallocate every token.
            let new = need.max(self.k.len() * 2).min(cap);
            self.k.resize(new);
            self.v.resize(new);
        }
    }
}

/// Cached rows in one of the storage precisions. Quantized rows carry one scale per slot and
/// KV head (`scales[slot * kv_heads + head]`); when `rotation` is set, the stored rows are
/// rotated (see [`Hadamard`]): rotate queries the same way and rotate value sums back.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F16 {
        k: &'a [f16],
        v: &'a [f16],
    },
    F32 {
        k: &'a [f32],
        v: &'a [f32],
    },
    Q8 {
        k: &'a [i8],
        v: &'a [i8],
        k_scales: &'a [f32],
        v_scales: &'a [f32],
        rotation: Option<&'a Hadamard>,
    },
    /// Two elements per byte in groups of `group` elements (see [`quantize_q4`]), one scale per
    /// group: `scales[(slot * kv_heads + head) * head_dim / group + g]`.
    Q4 {
        k: &'a [u8],
        v: &'a [u8],
        k_scales: &'a [f32],
        v_scales: &'a [f32],
        group: usize,
        rotation: Option<&'a Hadamard>,
    },
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
        Self::with_rotation(cfg, limit, max_chunk, precision, KvRotation::None)
    }

    /// As [`KvCache::new`], with an optional rotation for quantized precisions.
    pub fn with_rotation(
        cfg: &TextConfig,
        limit: usize,
        max_chunk: usize,
        precision: KvPrecision,
        rotation: KvRotation,
    ) -> Self {
        let max_chunk = max_chunk.max(1);
        let mut caches = Vec::with_capacity(cfg.layers.len());
        let mut source = Vec::with_capacity(cfg.layers.len());
        for (i, l) in cfg.layers.iter().enumerate() {
            match l.kv {
                KvRole::Own => {
                    let rot = (precision.is_quantized() && rotation == KvRotation::Hadamard)
                        .then(|| Hadamard::new(l.head_dim));
                    caches.push(Some(LayerCache {
                        k: KvBuf::new(precision, l.head_dim),
                        v: KvBuf::new(precision, l.head_dim),
                        kv_dim: l.num_kv_heads * l.head_dim,
                        rot,
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
        let rot = c.rot.as_ref();
        let mut tmp = Vec::new();
        for i in 0..t {
            let s = (pos0 + i) % slots;
            c.k.store(s * d, &k[i * d..(i + 1) * d], rot, &mut tmp);
            c.v.store(s * d, &v[i * d..(i + 1) * d], rot, &mut tmp);
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
            (
                KvBuf::Q8 {
                    q: k, scales: ks, ..
                },
                KvBuf::Q8 {
                    q: v, scales: vs, ..
                },
            ) => KvRows::Q8 {
                k,
                v,
                k_scales: ks,
                v_scales: vs,
                rotation: c.rot.as_ref(),
            },
            (
                KvBuf::Q4 {
                    q: k,
                    scales: ks,
                    head_dim: group,
                },
                KvBuf::Q4 {
                    q: v, scales: vs, ..
                },
            ) => KvRows::Q4 {
                k,
                v,
                k_scales: ks,
                v_scales: vs,
                group: *group,
                rotation: c.rot.as_ref(),
            },
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

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                // A few large outliers, as real K rows have.
                if i % 37 == 5 { v * 20.0 } else { v }
            })
            .collect()
    }

    #[test]
    fn q8_and_q4_error_is_at_most_half_a_step() {
        for d in [4usize, 7, 64, 256] {
            let x = values(d, d as u64);
            let mut q8 = vec![0i8; d];
            let s8 = quantize_q8(&x, &mut q8);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((s8 - amax / 127.0).abs() <= 1e-7 * amax);
            for (a, &b) in x.iter().zip(&q8) {
                assert!(
                    (a - b as f32 * s8).abs() <= 0.5 * s8 * (1.0 + 1e-5),
                    "{a} {b}"
                );
            }
            let mut q4 = vec![0u8; d.div_ceil(2)];
            let s4 = quantize_q4(&x, &mut q4);
            let mut y = vec![0f32; d];
            dequantize_q4(&q4, s4, &mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= 0.5 * s4 * (1.0 + 1e-5), "{a} {b}");
            }
        }
        // An all-zero row has scale 0 and decodes to zeros.
        let mut q = [0i8; 4];
        assert_eq!(quantize_q8(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, [0; 4]);
    }

    #[test]
    fn hadamard_rotation_preserves_dot_products_and_inverts() {
        for d in [8usize, 96, 256] {
            let r = Hadamard::new(d);
            let (a, b) = (values(d, 1), values(d, 2));
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let (mut ra, mut rb) = (a.clone(), b.clone());
            r.apply(&mut ra);
            r.apply(&mut rb);
            let got: f64 = ra.iter().zip(&rb).map(|(x, y)| *x as f64 * *y as f64).sum();
            let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
                * b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            assert!(
                (got - want).abs() <= 1e-5 * norm.max(1.0),
                "{d}: {got} vs {want}"
            );
            r.invert(&mut ra);
            for (x, y) in ra.iter().zip(&a) {
                assert!((x - y).abs() < 1e-5, "{d}: inverse {x} vs {y}");
            }
            // Outliers get spread: the rotated max is well below the original's.
            let amax = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
            if d >= 64 {
                assert!(amax(&rb) < amax(&b), "{d}");
            }
        }
    }

    #[test]
    fn quantized_caches_store_scaled_rows_and_report_memory() {
        let c = cfg();
        for (p, per_token) in [
            (KvPrecision::Q8, 2 * (4 + 4)),
            (KvPrecision::Q4, 2 * (2 + 4)),
        ] {
            assert_eq!(p.bytes_per_token(1, 4), per_token);
            let mut kv = KvCache::new(&c, 16, 1, p);
            let row = [0.5f32, -1.0, 0.25, 0.0];
            for pos in 0..3 {
                kv.reserve(pos, 1).unwrap();
                kv.write(1, pos, 1, &row, &row);
                kv.write(0, pos, 1, &row, &row);
                kv.set_len(pos + 1);
            }
            let got: Vec<f32> = match kv.slots(1).rows {
                KvRows::Q8 { k, k_scales, .. } => {
                    k[8..12].iter().map(|&q| q as f32 * k_scales[2]).collect()
                }
                KvRows::Q4 { k, k_scales, .. } => {
                    let mut y = vec![0f32; 4];
                    dequantize_q4(&k[4..6], k_scales[2], &mut y);
                    y
                }
                _ => panic!("quantized rows expected"),
            };
            for (a, b) in got.iter().zip(&row) {
                assert!((a - b).abs() < 0.08, "{p}: {a} vs {b}");
            }
            assert!(kv.bytes() > 0);
        }
        assert_eq!("q4".parse::<KvPrecision>().unwrap(), KvPrecision::Q4);
        assert!("q5".parse::<KvPrecision>().is_err());
    }

    /// An int4 cache of 64-wide heads keeps one scale per 32 elements; each element is within
    /// half a step of its group's scale (in the rotated space when rotating).
    #[test]
    fn q4_cache_scales_each_group_of_32() {
        let c = config::gemma3(&serde_json::json!({
            "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 8,
            "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 64,
            "vocab_size": 16
        }))
        .unwrap();
        assert_eq!(q4_group(64), 32);
        assert_eq!(q4_group(16), 16);
        assert_eq!(KvPrecision::Q4.bytes_per_token(1, 256), 2 * (128 + 4 * 8));
        for rot in [KvRotation::None, KvRotation::Hadamard] {
            let mut kv = KvCache::with_rotation(&c, 4, 1, KvPrecision::Q4, rot);
            let row = values(128, 9);
            kv.reserve(0, 1).unwrap();
            kv.write(0, 0, 1, &row, &row);
            kv.set_len(1);
            let KvRows::Q4 {
                k,
                k_scales,
                group,
                rotation,
                ..
            } = kv.slots(0).rows
            else {
                panic!("q4 rows")
            };
            assert_eq!(group, 32);
            assert_eq!(k_scales.len() % 4, 0);
            let mut want = row.clone();
            if let Some(r) = rotation {
                want.chunks_exact_mut(64).for_each(|h| r.apply(h));
            }
            for gi in 0..4 {
                let mut y = vec![0f32; 32];
                dequantize_q4(&k[gi * 16..(gi + 1) * 16], k_scales[gi], &mut y);
                for (a, b) in y.iter().zip(&want[gi * 32..(gi + 1) * 32]) {
                    assert!(
                        (a - b).abs() <= 0.5 * k_scales[gi] * (1.0 + 1e-5),
                        "{rot:?}"
                    );
                }
            }
        }
    }
}
