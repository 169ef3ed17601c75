//! Shared helpers of the GPU op tests: one context for the whole test binary, random inputs.

use super::GpuContext;
use std::sync::OnceLock;

/// The shared context, or None (with a note on stderr) where no adapter exists: the tests then
/// return early so CI without Vulkan stays green.
pub fn ctx() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => {
            eprintln!("gpu tests run on {}", c.adapter());
            Some(c)
        }
        Err(e) => {
            eprintln!("SKIP gpu tests: {e}");
            None
        }
    })
    .as_ref()
}

/// Deterministic values in [-1, 1).
pub fn random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Asserts every `got[i]` is within `rel` of `want[i]`, relative to `want`'s largest magnitude
/// (floored at `floor`, so an all-zero reference still compares).
pub fn assert_close_rel(got: &[f32], want: &[f32], rel: f32, floor: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let scale = want.iter().fold(floor, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * scale, "{what} [{i}]: {g} vs {w}");
    }
}
