//! q8/q4 row kernels: dispatch per ISA and the scalar reference.

use super::{Isa, OutPtr, QActs};
use crate::tensor::DType;
use half::f16;

pub(crate) struct QuantWeights<'a> {
    pub dtype: DType,
    pub values: &'a [u8],
    pub scales: &'a [f16],
    pub k: usize,
    pub gs: usize,
}

impl<'a> QuantWeights<'a> {
    /// Payload bytes and scales of row `r`.
    #[inline(always)]
    pub fn row(&self, r: usize) -> (&'a [u8], &'a [f16]) {
        let gpr = self.k / self.gs;
        let bytes = if self.dtype == DType::Q4 {
            self.k / 2
        } else {
            self.k
        };
        (
            &self.values[r * bytes..(r + 1) * bytes],
            &self.scales[r * gpr..(r + 1) * gpr],
        )
    }
}

/// Computes rows `r0..r1` for every token of `a` into `dst`.
pub(crate) fn rows(isa: Isa, w: &QuantWeights<'_>, a: &QActs, r0: usize, r1: usize, dst: OutPtr) {
    let t = a.qs.len() / a.k;
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `isa` never exceeds isa::detected(), so the target features are present.
        unsafe { super::x86::quant_rows(isa, w, a, t, r0, r1, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::Neon {
        super::neon::quant_rows(w, a, t, r0, r1, dst);
        return;
    }
    let _ = isa;
    rows_scalar(w, a, t, r0, r1, dst);
}

pub(crate) fn rows_scalar(
    w: &QuantWeights<'_>,
    a: &QActs,
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    for r in r0..r1 {
        let (wr, ws) = w.row(r);
        for ti in 0..t {
            dst.set(ti, r, row_dot_scalar(w.dtype, wr, ws, w.gs, a, ti));
        }
    }
}

/// Scalar reference: integer dot per block of 32, scaled by weight group and activation block.
fn row_dot_scalar(dtype: DType, wr: &[u8], ws: &[f16], gs: usize, a: &QActs, ti: usize) -> f32 {
    let mut acc = 0f32;
    for b in 0..a.nb {
        let q = a.block(ti, b);
        let isum: i32 = if dtype == DType::Q4 {
            let wb = &wr[b * 16..b * 16 + 16];
            (0..16)
                .map(|j| {
                    ((wb[j] & 15) as i32 - 8) * q[j] as i32
                        + ((wb[j] >> 4) as i32 - 8) * q[j + 16] as i32
                })
                .sum()
        } else {
            let wb = &wr[b * 32..b * 32 + 32];
            (0..32).map(|j| (wb[j] as i8) as i32 * q[j] as i32).sum()
        };
        acc += isum as f32 * (ws[b * 32 / gs].to_f32() * a.scale[ti * a.nb + b]);
    }
    acc
}
