//! Activations quantized to int8 per block of 32, once per matmul call.
//!
//! Block `b` of token `ti`: the 32 values `qs[ti*k + 32b ..][..32]` with `x ≈ q * scale[ti*nb + b]`,
//! `scale = max|x| / 127` (q in -127..=127, never -128, so the AVX2 sign trick is exact).
//!
//! For the AVX-512 VNNI level (and the AVX2 q4 kernel, for `corr` only) two more things: `dpbusd` multiplies unsigned by signed bytes, so
//! the kernels use q4 nibbles as stored (value + 8) and q8 values flipped to value + 128, and
//! `corr[ti*nb + b] = -offset * sum(q of the block)` (as f32, exact) removes that offset once
//! per block. And for q4, each pair of blocks (b, b+1) is stored as
//! `[b 0..16 | b+1 0..16 | b 16..32 | b+1 16..32]`, the order in which one broadcast load and
//! one shift unpack 32 weight bytes (an odd last block stays in natural order).

use super::Isa;
use crate::tensor::DType;
use std::cell::RefCell;

pub(crate) struct QActs {
    pub k: usize,
    pub nb: usize,
    pub qs: Vec<i8>,
    pub scale: Vec<f32>,
    pub corr: Vec<f32>,
    /// q4 pairs interleaved as described above.
    pub interleaved: bool,
}

impl QActs {
    const fn empty() -> Self {
        Self {
            k: 0,
            nb: 0,
            qs: Vec::new(),
            scale: Vec::new(),
            corr: Vec::new(),
            interleaved: false,
        }
    }

    /// The 32 quantized values of block `b` of token `ti` (natural order only).
    #[inline(always)]
    pub fn block(&self, ti: usize, b: usize) -> &[i8] {
        debug_assert!(!self.interleaved);
        &self.qs[ti * self.k + b * 32..][..32]
    }

    fn fill(&mut self, isa: Isa, dtype: DType, x: &[f32], t: usize, k: usize) {
        let nb = k / 32;
        self.k = k;
        self.nb = nb;
        // resize only grows the buffers the first time a shape is seen: no allocation after
        self.qs.resize(t * k, 0);
        self.scale.resize(t * nb, 0.0);
        let vnni = isa == Isa::Avx512Vnni;
        self.interleaved = vnni && dtype == DType::Q4;
        // the AVX2 q4 kernel also multiplies the unsigned nibbles directly (maddubs)
        let need_corr = vnni || (isa == Isa::Avx2 && dtype == DType::Q4);
        if need_corr {
            self.corr.resize(t * nb, 0.0);
        }
        let offset = if dtype == DType::Q4 { 8.0 } else { 128.0 };
        for ti in 0..t {
            let xr = &x[ti * k..(ti + 1) * k];
            let qr = &mut self.qs[ti * k..(ti + 1) * k];
            let mut b = 0;
            while b < nb {
                let pair = self.interleaved && b + 1 < nb;
                let mut q = [[0i8; 32]; 2];
                for (h, qh) in q.iter_mut().enumerate().take(if pair { 2 } else { 1 }) {
                    let i = ti * nb + b + h;
                    let (s, sum) = quantize_block(&xr[(b + h) * 32..][..32], qh);
                    self.scale[i] = s;
                    if need_corr {
                        self.corr[i] = -offset * sum as f32;
                    }
                }
                let dst = &mut qr[b * 32..];
                if pair {
                    dst[..16].copy_from_slice(&q[0][..16]);
                    dst[16..32].copy_from_slice(&q[1][..16]);
                    dst[32..48].copy_from_slice(&q[0][16..]);
                    dst[48..64].copy_from_slice(&q[1][16..]);
                    b += 2;
                } else {
                    dst[..32].copy_from_slice(&q[0]);
                    b += 1;
                }
            }
        }
    }
}

/// Symmetric int8 of one block: returns (scale, sum of q).
#[inline]
fn quantize_block(xb: &[f32], q: &mut [i8; 32]) -> (f32, i32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    // round half to even by the 1.5*2^23 trick: vectorizes without SSE4.1's roundps
    const MAGIC: f32 = 12_582_912.0;
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(xb) {
        let r = ((v * inv + MAGIC) - MAGIC).clamp(-127.0, 127.0) as i32;
        *q = r as i8;
        sum += r;
    }
    (amax / 127.0, sum)
}

thread_local! {
    static SCRATCH: RefCell<QActs> = const { RefCell::new(QActs::empty()) };
}

/// Quantizes `x` ([t, k], k % 32 == 0) into this thread's reusable buffers and runs `f` on them.
pub(crate) fn with_quantized<R>(
    isa: Isa,
    dtype: DType,
    x: &[f32],
    t: usize,
    k: usize,
    f: impl FnOnce(&QActs) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut a) => {
            a.fill(isa, dtype, x, t, k);
            f(&a)
        }
        // re-entered (a rayon worker that stole another matmul while waiting): use a fresh buffer
        Err(_) => {
            let mut a = QActs::empty();
            a.fill(isa, dtype, x, t, k);
            f(&a)
        }
    })
}
