//! `out[t, n] = sum_k x[t, k] * w[n, k]` for every weight dtype.
//!
//! Structure: the caller's rayon pool splits the output rows `n` into chunks ([`par_rows`]);
//! each chunk walks its weight rows in tiles of R rows x T tokens: decode (t = 1) uses 4 rows x 1
//! token (one activation load serves 4 rows, 4 independent accumulator chains), prefill 2 rows
//! x 4 tokens on AVX-512 (1 x 4 on AVX2), so each weight row is decoded once per 4 tokens and
//! stays in L1 across the token tiles (prefill is compute-bound, decode memory-bound).
//!
//! q8/q4 weights: the activations are quantized once per call to int8 per block of 32 (one f32
//! scale per block, see [`acts`]) and the kernels use integer dot products (AVX2 `maddubs`,
//! AVX-512 VNNI `dpbusd`, NEON widening multiplies). Float weights are converted on the fly
//! (F16C, bf16 shift) into FMAs (AVX2 or AVX-512).
//! Numerics: f32 weights give the f32 dot product up to summation order (|err| <= 1e-5 of
//! sum|x*w|); q8/q4 add the error of the int8 activations, bounded by sum|w| * step/2 per block;
//! the RMS relative error of a whole output vector is about 1e-2 on random data with outliers
//! and a few 1e-3 on smooth data (see the tests).

mod acts;
mod float;
mod fused;
mod lut;
#[cfg(target_arch = "aarch64")]
mod neon;
mod quant;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::isa::{self, Isa};
use crate::tensor::{DType, TensorView};
use rayon::prelude::*;

pub(crate) use acts::QActs;
pub use fused::matmul_many;

/// `out[t, n] = sum_k x[t, k] * w[n, k]`; `x` is [t, k] row-major f32, `w` [n, k] of any dtype,
/// `out` [t, n]. t == 1 is the decode matvec.
pub fn matmul(x: &[f32], t: usize, w: &TensorView<'_>, out: &mut [f32]) {
    matmul_rows(x, t, w, 0, w.rows(), out)
}

/// Like [`matmul`] but only output rows `n0..n1` of `w`, into `out` [t, n1 - n0] (vocab slices).
pub fn matmul_rows(x: &[f32], t: usize, w: &TensorView<'_>, n0: usize, n1: usize, out: &mut [f32]) {
    matmul_rows_isa(isa::detected(), x, t, w, n0, n1, out)
}

/// [`matmul`] at a chosen SIMD level ("scalar", "avx2", "avx512vnni"; anything else or a level
/// this CPU lacks means the detected one). For benchmarks comparing the code paths.
#[doc(hidden)]
pub fn matmul_at_level(level: &str, x: &[f32], t: usize, w: &TensorView<'_>, out: &mut [f32]) {
    let best = isa::detected();
    let want = match level {
        "scalar" => Isa::Scalar,
        "avx2" if best != Isa::Neon => Isa::Avx2.min(best),
        _ => best,
    };
    matmul_rows_isa(want, x, t, w, 0, w.rows(), out)
}

pub(crate) fn matmul_rows_isa(
    isa: Isa,
    x: &[f32],
    t: usize,
    w: &TensorView<'_>,
    n0: usize,
    n1: usize,
    out: &mut [f32],
) {
    let k = w.cols();
    assert_eq!(
        x.len(),
        t * k,
        "matmul: x has {} values, expected t*k = {t}*{k}",
        x.len()
    );
    assert!(
        n0 <= n1 && n1 <= w.rows(),
        "matmul: rows {n0}..{n1} out of 0..{}",
        w.rows()
    );
    let nn = n1 - n0;
    assert_eq!(
        out.len(),
        t * nn,
        "matmul: out has {} values, expected {t}*{nn}",
        out.len()
    );
    if t == 0 || nn == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let dst = OutPtr {
        ptr: out.as_mut_ptr(),
        stride: nn,
        n0,
    };
    match w.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            let wf = float::FloatWeights::new(w);
            par_rows(n0, n1, k, t, |r0, r1| {
                float::rows(isa, &wf, x, t, k, r0, r1, dst)
            });
        }
        DType::Q8 | DType::Q4 => {
            let (values, scales) = w.quant_parts().expect("quantized dtype has parts");
            let wq = quant::QuantWeights {
                dtype: w.dtype,
                values,
                scales,
                k,
                gs: w.group_size,
            };
            acts::with_quantized(isa, w.dtype, x, t, k, |a| {
                par_rows(n0, n1, k, t, |r0, r1| quant::rows(isa, &wq, a, r0, r1, dst));
            });
        }
        DType::Lut4 | DType::Lut6 => {
            let wl = lut::LutWeights::new(w);
            par_rows(n0, n1, k, t, |r0, r1| {
                lut::rows(isa, &wl, x, t, r0, r1, dst)
            });
        }
    }
}

/// Where results go: `out[ti * stride + (row - n0)]`. Chunks running on different threads
/// write disjoint columns of the same buffer, which a slice split cannot express when t > 1.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    ptr: *mut f32,
    stride: usize,
    n0: usize,
}

// SAFETY: every parallel chunk writes only the columns of its own row range.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Stores the result for token `ti` and weight row `row`.
    #[inline(always)]
    pub(crate) fn set(self, ti: usize, row: usize, v: f32) {
        // SAFETY: matmul_rows_isa checked out.len() == t * stride, callers pass ti < t and
        // n0 <= row < n0 + stride; disjointness across threads as above.
        unsafe { *self.ptr.add(ti * self.stride + row - self.n0) = v }
    }
}

/// Splits rows `n0..n1` into chunks big enough to be worth a task (about 64k multiply-adds) and
/// runs `f(r0, r1)` on the caller's rayon pool; small problems stay on the calling thread.
fn par_rows(n0: usize, n1: usize, k: usize, t: usize, f: impl Fn(usize, usize) + Sync) {
    let nn = n1 - n0;
    let threads = rayon::current_num_threads().max(1);
    let min_chunk = (65536 / (k * t).max(1)).clamp(4, 256);
    let chunk = nn.div_ceil(threads * 4).max(min_chunk);
    if threads == 1 || chunk >= nn {
        f(n0, n1);
        return;
    }
    let chunks = nn.div_ceil(chunk);
    (0..chunks).into_par_iter().for_each(|c| {
        let r0 = n0 + c * chunk;
        f(r0, (r0 + chunk).min(n1));
    });
}
