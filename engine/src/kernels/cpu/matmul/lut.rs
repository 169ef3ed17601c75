//! lut4/lut6 (palettized) row kernels: scalar reference, AVX2 and AVX-512.
//!
//! Weights are decoded to f32 in registers by table lookups into the row group's palette (held
//! as f32) and multiplied with the f32 activations (no activation quantization, so the result is
//! the dequantized dot product up to f32 summation order). Decode (t = 1) fuses lookup and FMA;
//! prefill decodes [`PREFILL_ROWS`] rows at a time into an f32 buffer and runs the f32 kernel
//! (register-tiled rows x tokens) on it.
//!
//! Lookups: AVX-512 `vpermps` holds 16 entries in one register (lut4: one permute per 16
//! weights; lut6: two `vpermt2ps` over 32 entries each and a blend on index bit 5). AVX2
//! `vpermps` holds 8: lut4 uses two permutes and a blend on bit 3, lut6 a gather from the
//! 64-entry palette (L1-resident).

use super::float::{self, FloatWeights};
use super::{Isa, OutPtr};
use crate::tensor::lut::{palette_len, row_bytes, unpack_row};
use crate::tensor::{DType, TensorView};
use std::cell::RefCell;

/// A lut4/lut6 weight matrix.
pub(crate) struct LutWeights<'a> {
    pub dtype: DType,
    pub idx: &'a [u8],
    pub pal: &'a [half::f16],
    pub k: usize,
    pub gs: usize,
}

impl<'a> LutWeights<'a> {
    pub fn new(w: &TensorView<'a>) -> Self {
        let (idx, pal) = w.lut_parts().expect("lut dtype has parts");
        Self {
            dtype: w.dtype,
            idx,
            pal,
            k: w.cols(),
            gs: w.group_size,
        }
    }

    fn row(&self, r: usize) -> &'a [u8] {
        let rb = row_bytes(self.dtype, self.k);
        &self.idx[r * rb..(r + 1) * rb]
    }

    /// Writes row `r`'s palette as f32 into `out` (64 entries; unused ones zero).
    fn palette(&self, isa: Isa, r: usize, out: &mut [f32; 64]) {
        let n = palette_len(self.dtype);
        let g = r / self.gs;
        let src = &self.pal[g * n..(g + 1) * n];
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 {
            // SAFETY: F16C comes with the AVX2 level; src holds n (16 or 64) values.
            unsafe { x86::palette_f16c(src, out) };
            return;
        }
        let _ = isa;
        // (half's software conversion: a palette per few rows makes this visible in decode)
        for (o, p) in out.iter_mut().zip(src) {
            *o = p.to_f32();
        }
    }
}

/// Rows decoded per step of the prefill path (16 rows of 2048 f32 = 128 KiB, L2-resident).
const PREFILL_ROWS: usize = 16;

thread_local! {
    /// Decoded weight rows per thread (prefill path).
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Computes rows `r0..r1` for the `t` tokens of `x` ([t, k]) into `dst`.
pub(crate) fn rows(
    isa: Isa,
    w: &LutWeights<'_>,
    x: &[f32],
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    let k = w.k;
    let run = |buf: &mut Vec<f32>| {
        let mut pal = [0f32; 64];
        let mut pal_group = usize::MAX;
        let mut load = |r: usize, pal: &mut [f32; 64]| {
            if r / w.gs != pal_group {
                pal_group = r / w.gs;
                w.palette(isa, r, pal);
            }
        };
        if t == 1 {
            buf.resize(k, 0.0);
            for r in r0..r1 {
                load(r, &mut pal);
                let wr = w.row(r);
                let v = match dot_row(isa, w.dtype, wr, &pal, x) {
                    Some(v) => v,
                    None => {
                        decode_row(isa, w.dtype, wr, &pal, buf);
                        dot_scalar(buf, x)
                    }
                };
                dst.set(0, r, v);
            }
            return;
        }
        buf.resize(PREFILL_ROWS * k, 0.0);
        let mut a = r0;
        while a < r1 {
            let b = (a + PREFILL_ROWS).min(r1);
            for r in a..b {
                load(r, &mut pal);
                let out = &mut buf[(r - a) * k..(r - a + 1) * k];
                decode_row(isa, w.dtype, w.row(r), &pal, out);
            }
            // output rows a..b are rows 0..b-a of the decoded block
            let shifted = OutPtr {
                // SAFETY: dst.n0 <= a < dst.n0 + dst.stride: inside the caller's output rows
                ptr: unsafe { dst.ptr.add(a - dst.n0) },
                stride: dst.stride,
                n0: 0,
            };
            let wf = FloatWeights::F32(&buf[..(b - a) * k]);
            if isa == Isa::Scalar {
                float::rows_scalar(&wf, x, t, k, 0, b - a, shifted);
            } else {
                float::rows(isa, &wf, x, t, k, 0, b - a, shifted);
            }
            a = b;
        }
    };
    ROW.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run(&mut buf),
        Err(_) => run(&mut Vec::new()),
    });
}

/// `sum_c pal[idx[c]] * x[c]` for one row, fused (SIMD levels); None where there is no fused
/// kernel (the caller decodes the row and dots it).
fn dot_row(isa: Isa, dtype: DType, wr: &[u8], pal: &[f32; 64], x: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `isa` never exceeds isa::detected(); wr holds x.len()/32 blocks.
        return Some(unsafe {
            if isa >= Isa::Avx512Vnni {
                x86::dot_row_avx512(dtype, wr, pal, x)
            } else {
                x86::dot_row_avx2(dtype, wr, pal, x)
            }
        });
    }
    let _ = (isa, dtype, wr, pal, x);
    None
}

/// Decodes one row into f32 weights.
fn decode_row(isa: Isa, dtype: DType, wr: &[u8], pal: &[f32; 64], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: as in dot_row; out.len() == cols.
        unsafe {
            if isa >= Isa::Avx512Vnni {
                x86::decode_row_avx512(dtype, wr, pal, out)
            } else {
                x86::decode_row_avx2(dtype, wr, pal, out)
            }
        };
        return;
    }
    let _ = isa;
    decode_row_scalar(dtype, wr, pal, out);
}

/// Scalar reference decode (one 32-block at a time, no allocation).
pub(crate) fn decode_row_scalar(dtype: DType, wr: &[u8], pal: &[f32; 64], out: &mut [f32]) {
    let bb = row_bytes(dtype, 32);
    let mut idx = [0u8; 32];
    for (ob, wb) in out.chunks_exact_mut(32).zip(wr.chunks_exact(bb)) {
        unpack_row(dtype, wb, &mut idx);
        for (o, &i) in ob.iter_mut().zip(&idx) {
            *o = pal[i as usize];
        }
    }
}

/// Plain sequential f32 dot (the reference summation).
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::DType;
    use std::arch::x86_64::*;

    /// f16 -> f32 of a palette (16 or 64 values) with F16C.
    ///
    /// # Safety
    /// AVX2/F16C present.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn palette_f16c(src: &[half::f16], out: &mut [f32; 64]) {
        for (i, c) in src.chunks_exact(8).enumerate().take(8) {
            // SAFETY: 8 f16 read from c, 8 f32 written inside out (i < 8).
            unsafe {
                let h = _mm_loadu_si128(c.as_ptr() as *const __m128i);
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), _mm256_cvtph_ps(h));
            }
        }
    }

    /// 8 indices of a 32-block from `p` (bytes zero-extended to i32).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn bytes8(p: *const u8) -> __m256i {
        // SAFETY: caller guarantees 8 readable bytes at p.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
    }

    /// The 32 indices of one block as 4 x 8 i32 (values 0..8, 8..16, 16..24, 24..32).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn indices_avx2<const LUT6: bool>(p: *const u8) -> [__m256i; 4] {
        // SAFETY: a block is 16 (lut4) or 24 (lut6) readable bytes at p.
        unsafe {
            let m15 = _mm256_set1_epi32(15);
            let a = bytes8(p);
            let b = bytes8(p.add(8));
            let mut v = [
                _mm256_and_si256(a, m15),
                _mm256_and_si256(b, m15),
                _mm256_srli_epi32(a, 4),
                _mm256_srli_epi32(b, 4),
            ];
            if LUT6 {
                let h = bytes8(p.add(16));
                let m3 = _mm256_set1_epi32(3);
                let hi = [
                    _mm256_and_si256(h, m3),
                    _mm256_and_si256(_mm256_srli_epi32(h, 2), m3),
                    _mm256_and_si256(_mm256_srli_epi32(h, 4), m3),
                    _mm256_srli_epi32(h, 6),
                ];
                for i in 0..4 {
                    v[i] = _mm256_or_si256(v[i], _mm256_slli_epi32(hi[i], 4));
                }
            }
            v
        }
    }

    /// Palette lookup of 8 indices (AVX2).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn lookup_avx2<const LUT6: bool>(
        idx: __m256i,
        lo: __m256,
        hi: __m256,
        pal: *const f32,
    ) -> __m256 {
        // SAFETY: indices are < 64 and pal holds 64 floats.
        unsafe {
            if LUT6 {
                _mm256_i32gather_ps::<4>(pal, idx)
            } else {
                let a = _mm256_permutevar8x32_ps(lo, idx);
                let b = _mm256_permutevar8x32_ps(hi, idx);
                // bit 3 of the index to the sign bit selects the upper half
                _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)))
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2+FMA present; `wr` holds `x.len() / 32` blocks of `dtype`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_row_avx2(dtype: DType, wr: &[u8], pal: &[f32; 64], x: &[f32]) -> f32 {
        // SAFETY: forwarded.
        unsafe {
            if dtype == DType::Lut6 {
                dot_avx2::<true>(wr, pal, x)
            } else {
                dot_avx2::<false>(wr, pal, x)
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2<const LUT6: bool>(wr: &[u8], pal: &[f32; 64], x: &[f32]) -> f32 {
        let bb = if LUT6 { 24 } else { 16 };
        let nb = x.len() / 32;
        debug_assert!(wr.len() >= nb * bb);
        // SAFETY: bounds as documented on dot_row_avx2.
        unsafe {
            let lo = _mm256_loadu_ps(pal.as_ptr());
            let hi = _mm256_loadu_ps(pal.as_ptr().add(8));
            let mut acc = [_mm256_setzero_ps(); 4];
            for b in 0..nb {
                let idx = indices_avx2::<LUT6>(wr.as_ptr().add(b * bb));
                let xp = x.as_ptr().add(b * 32);
                for i in 0..4 {
                    let w = lookup_avx2::<LUT6>(idx[i], lo, hi, pal.as_ptr());
                    acc[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * i)), acc[i]);
                }
            }
            hsum256(_mm256_add_ps(
                _mm256_add_ps(acc[0], acc[1]),
                _mm256_add_ps(acc[2], acc[3]),
            ))
        }
    }

    /// # Safety
    /// As [`dot_row_avx2`], with `out.len()` the row length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn decode_row_avx2(
        dtype: DType,
        wr: &[u8],
        pal: &[f32; 64],
        out: &mut [f32],
    ) {
        let lut6 = dtype == DType::Lut6;
        let bb = if lut6 { 24 } else { 16 };
        // SAFETY: bounds as documented.
        unsafe {
            let lo = _mm256_loadu_ps(pal.as_ptr());
            let hi = _mm256_loadu_ps(pal.as_ptr().add(8));
            for b in 0..out.len() / 32 {
                let p = wr.as_ptr().add(b * bb);
                let o = out.as_mut_ptr().add(b * 32);
                for i in 0..4 {
                    let w = if lut6 {
                        lookup_avx2::<true>(indices_avx2::<true>(p)[i], lo, hi, pal.as_ptr())
                    } else {
                        lookup_avx2::<false>(indices_avx2::<false>(p)[i], lo, hi, pal.as_ptr())
                    };
                    _mm256_storeu_ps(o.add(8 * i), w);
                }
            }
        }
    }

    /// The 32 indices of one block as 2 x 16 i32 (values 0..16, 16..32).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    #[inline]
    unsafe fn indices_avx512<const LUT6: bool>(p: *const u8) -> [__m512i; 2] {
        // SAFETY: a block is 16 (lut4) or 24 (lut6) readable bytes at p.
        unsafe {
            let m15 = _mm512_set1_epi32(15);
            let a = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
            let mut v = [_mm512_and_si512(a, m15), _mm512_srli_epi32(a, 4)];
            if LUT6 {
                let h8 = _mm_loadl_epi64(p.add(16) as *const __m128i);
                // high-bit bytes for values m and m+8 come from the same byte m
                let h = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(h8, h8));
                let m3 = _mm512_set1_epi32(3);
                let s01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
                let s23 = _mm512_add_epi32(s01, _mm512_set1_epi32(4));
                let h0 = _mm512_and_si512(_mm512_srlv_epi32(h, s01), m3);
                let h1 = _mm512_and_si512(_mm512_srlv_epi32(h, s23), m3);
                v[0] = _mm512_or_si512(v[0], _mm512_slli_epi32(h0, 4));
                v[1] = _mm512_or_si512(v[1], _mm512_slli_epi32(h1, 4));
            }
            v
        }
    }

    /// The palette as 4 registers of 16 (lut4 uses the first).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    #[inline]
    unsafe fn palette512(pal: &[f32; 64]) -> [__m512; 4] {
        // SAFETY: 64 floats.
        unsafe { std::array::from_fn(|i| _mm512_loadu_ps(pal.as_ptr().add(16 * i))) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    #[inline]
    unsafe fn lookup_avx512<const LUT6: bool>(idx: __m512i, p: &[__m512; 4]) -> __m512 {
        if LUT6 {
            let a = _mm512_permutex2var_ps(p[0], idx, p[1]);
            let b = _mm512_permutex2var_ps(p[2], idx, p[3]);
            let upper = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
            _mm512_mask_blend_ps(upper, a, b)
        } else {
            _mm512_permutexvar_ps(idx, p[0])
        }
    }

    /// # Safety
    /// AVX-512 F/BW/VL present; `wr` holds `x.len() / 32` blocks of `dtype`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn dot_row_avx512(
        dtype: DType,
        wr: &[u8],
        pal: &[f32; 64],
        x: &[f32],
    ) -> f32 {
        // SAFETY: forwarded.
        unsafe {
            if dtype == DType::Lut6 {
                dot_avx512::<true>(wr, pal, x)
            } else {
                dot_avx512::<false>(wr, pal, x)
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn dot_avx512<const LUT6: bool>(wr: &[u8], pal: &[f32; 64], x: &[f32]) -> f32 {
        let bb = if LUT6 { 24 } else { 16 };
        let nb = x.len() / 32;
        debug_assert!(wr.len() >= nb * bb);
        // SAFETY: bounds as documented on dot_row_avx512.
        unsafe {
            let p = palette512(pal);
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let (mut a2, mut a3) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let (w, xp) = (wr.as_ptr(), x.as_ptr());
            let mut b = 0;
            // two blocks per step: four independent FMA chains held in registers
            while b + 2 <= nb {
                let i0 = indices_avx512::<LUT6>(w.add(b * bb));
                let i1 = indices_avx512::<LUT6>(w.add((b + 1) * bb));
                let xb = xp.add(b * 32);
                a0 = _mm512_fmadd_ps(lookup_avx512::<LUT6>(i0[0], &p), _mm512_loadu_ps(xb), a0);
                a1 = _mm512_fmadd_ps(
                    lookup_avx512::<LUT6>(i0[1], &p),
                    _mm512_loadu_ps(xb.add(16)),
                    a1,
                );
                a2 = _mm512_fmadd_ps(
                    lookup_avx512::<LUT6>(i1[0], &p),
                    _mm512_loadu_ps(xb.add(32)),
                    a2,
                );
                a3 = _mm512_fmadd_ps(
                    lookup_avx512::<LUT6>(i1[1], &p),
                    _mm512_loadu_ps(xb.add(48)),
                    a3,
                );
                b += 2;
            }
            if b < nb {
                let i0 = indices_avx512::<LUT6>(w.add(b * bb));
                let xb = xp.add(b * 32);
                a0 = _mm512_fmadd_ps(lookup_avx512::<LUT6>(i0[0], &p), _mm512_loadu_ps(xb), a0);
                a1 = _mm512_fmadd_ps(
                    lookup_avx512::<LUT6>(i0[1], &p),
                    _mm512_loadu_ps(xb.add(16)),
                    a1,
                );
            }
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
        }
    }

    /// # Safety
    /// As [`dot_row_avx512`], with `out.len()` the row length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn decode_row_avx512(
        dtype: DType,
        wr: &[u8],
        pal: &[f32; 64],
        out: &mut [f32],
    ) {
        let lut6 = dtype == DType::Lut6;
        let bb = if lut6 { 24 } else { 16 };
        // SAFETY: bounds as documented.
        unsafe {
            let p = palette512(pal);
            for b in 0..out.len() / 32 {
                let src = wr.as_ptr().add(b * bb);
                let o = out.as_mut_ptr().add(b * 32);
                let w = if lut6 {
                    let idx = indices_avx512::<true>(src);
                    [
                        lookup_avx512::<true>(idx[0], &p),
                        lookup_avx512::<true>(idx[1], &p),
                    ]
                } else {
                    let idx = indices_avx512::<false>(src);
                    [
                        lookup_avx512::<false>(idx[0], &p),
                        lookup_avx512::<false>(idx[1], &p),
                    ]
                };
                _mm512_storeu_ps(o, w[0]);
                _mm512_storeu_ps(o.add(16), w[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::isa;
    use crate::kernels::cpu::matmul::matmul_rows_isa;
    use crate::tensor::encode;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 20001) as f32 / 10000.0 - 1.0
            })
            .collect()
    }

    /// Every ISA level against an f64 dot over the dequantized weights.
    #[test]
    fn lut_matmul_matches_reference() {
        for dtype in [DType::Lut4, DType::Lut6] {
            for &(n, k, t, gs) in &[
                (7usize, 32usize, 1usize, 1usize),
                (13, 96, 1, 4),
                (40, 256, 1, 8),
                (33, 160, 3, 5),
                (9, 64, 6, 100),
                (64, 640, 2, 64),
            ] {
                let shape = [n, k];
                let w = data(n * k, 1 + n as u32);
                let bytes = encode(dtype, &w, &shape, gs).unwrap();
                let view = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
                let wf = view.to_f32_vec();
                let x = data(t * k, 7 + k as u32);
                for level in isa::available() {
                    let mut out = vec![0f32; t * n];
                    matmul_rows_isa(level, &x, t, &view, 0, n, &mut out);
                    for ti in 0..t {
                        for r in 0..n {
                            let (mut want, mut mag) = (0f64, 0f64);
                            for c in 0..k {
                                let p = wf[r * k + c] as f64 * x[ti * k + c] as f64;
                                want += p;
                                mag += p.abs();
                            }
                            let got = out[ti * n + r] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * mag + 1e-6,
                                "{dtype} {level:?} n{n} k{k} t{t} gs{gs} [{ti},{r}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A row slice (n0..n1 not on a palette boundary) uses the right palettes.
    #[test]
    fn lut_row_slices() {
        let (n, k, gs) = (30usize, 64usize, 7usize);
        let shape = [n, k];
        let w = data(n * k, 3);
        let bytes = encode(DType::Lut4, &w, &shape, gs).unwrap();
        let view = TensorView::new(DType::Lut4, &shape, gs, &bytes).unwrap();
        for t in [1usize, 3] {
            let x = data(t * k, 9);
            let mut full = vec![0f32; t * n];
            crate::kernels::cpu::matmul::matmul(&x, t, &view, &mut full);
            let mut part = vec![0f32; t * 10];
            crate::kernels::cpu::matmul::matmul_rows(&x, t, &view, 11, 21, &mut part);
            for ti in 0..t {
                let want = &full[ti * n + 11..ti * n + 21];
                for (a, b) in part[ti * 10..(ti + 1) * 10].iter().zip(want) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "t={t}");
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::kernels::cpu::matmul::matmul_rows_isa;
    use crate::tensor::encode;

    /// `cargo test --release -p cellm-engine --lib lut_speed -- --ignored --nocapture`:
    /// decode matvec time (best of 20) of a [65536, 640] lut4/lut6 and q4 weight on one thread.
    #[test]
    #[ignore]
    fn lut_speed() {
        let (n, k) = (65536usize, 640usize);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.1).sin()).collect();
        for (dtype, gs) in [(DType::Lut4, 8), (DType::Lut6, 8), (DType::Q4, 32)] {
            let shape = [n, k];
            let bytes = encode(dtype, &w, &shape, gs).unwrap();
            let view = TensorView::new(dtype, &shape, gs, &bytes).unwrap();
            let mut out = vec![0f32; n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            for level in crate::kernels::cpu::isa::available() {
                pool.install(|| {
                    matmul_rows_isa(level, &x, 1, &view, 0, n, &mut out);
                    // minimum of 20 runs: the machine is shared
                    let dt = (0..20)
                        .map(|_| {
                            let t0 = std::time::Instant::now();
                            matmul_rows_isa(level, &x, 1, &view, 0, n, &mut out);
                            t0.elapsed().as_secs_f64()
                        })
                        .fold(f64::INFINITY, f64::min);
                    eprintln!(
                        "{dtype} {level:?}: {:.2} ms, {:.1} GB/s",
                        dt * 1e3,
                        bytes.len() as f64 / dt / 1e9
                    );
                });
            }
        }
    }
}
