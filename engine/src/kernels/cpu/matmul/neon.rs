//! aarch64 NEON q8/q4 kernel: a straightforward widening-multiply path (no `sdot`, which needs
//! the optional dotprod extension): per block, `vmull_s8`/`vmull_high_s8` products summed
//! pairwise into i32 (`vpadalq_s16`), one f32 scale product per block. Activations are the
//! natural-order int8 blocks of `acts`.

use super::quant::QuantWeights;
use super::{OutPtr, QActs};
use crate::tensor::DType;
use std::arch::aarch64::*;

pub(crate) fn quant_rows(
    w: &QuantWeights<'_>,
    a: &QActs,
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    let q4 = w.dtype == DType::Q4;
    let (nb, k, bpg) = (a.nb, a.k, w.gs / 32);
    for r in r0..r1 {
        let (wr, ws) = w.row(r);
        for ti in 0..t {
            let qa = &a.qs[ti * k..(ti + 1) * k];
            let sa = &a.scale[ti * nb..(ti + 1) * nb];
            let mut acc = 0f32;
            for b in 0..nb {
                // SAFETY: NEON is always present on aarch64; every load reads 16 bytes inside
                // the block's slice (wr: 16 or 32 bytes per block, qa: 32 bytes per block).
                let isum = unsafe {
                    let (w0, w1) = if q4 {
                        let v = vld1q_u8(wr.as_ptr().add(b * 16));
                        let eight = vdupq_n_s8(8);
                        (
                            vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), eight),
                            vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight),
                        )
                    } else {
                        let p = wr.as_ptr().add(b * 32) as *const i8;
                        (vld1q_s8(p), vld1q_s8(p.add(16)))
                    };
                    let ap = qa.as_ptr().add(b * 32);
                    let (a0, a1) = (vld1q_s8(ap), vld1q_s8(ap.add(16)));
                    // |products| <= 128 * 127, two per i16 lane: no overflow
                    let p0 = vmull_high_s8(w0, a0);
                    let p0 = vmlal_s8(p0, vget_low_s8(w0), vget_low_s8(a0));
                    let p1 = vmull_high_s8(w1, a1);
                    let p1 = vmlal_s8(p1, vget_low_s8(w1), vget_low_s8(a1));
                    let s = vpadalq_s16(vpaddlq_s16(p0), p1);
                    vaddvq_s32(s)
                };
                acc += isum as f32 * (ws[b / bpg].to_f32() * sa[b]);
            }
            dst.set(ti, r, acc);
        }
    }
}
