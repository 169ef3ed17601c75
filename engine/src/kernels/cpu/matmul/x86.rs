//! x86-64 SIMD kernels: AVX2 + FMA + F16C for every dtype, AVX-512 VNNI for q8/q4.
//!
//! Every kernel computes `R` weight rows against a tile of `T` (1..=4) tokens, so the weight
//! bytes are loaded and decoded once per tile and each activation load serves `R` rows; the
//! R*T independent accumulators hide the FMA latency. The AVX2 float kernel (one row) keeps two
//! accumulators per token instead.
#![allow(clippy::needless_range_loop)] // register arrays indexed by token/row read best as loops

use super::float::FloatWeights;
use super::quant::QuantWeights;
use super::{Isa, OutPtr, QActs};
use crate::tensor::DType;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Runs `$kernel::<T>(.., ti)` over all tokens of row `$r` in tiles of 4 and stores the results.
macro_rules! token_tiles {
    ($t:expr, $dst:expr, $r:expr, |$ti:ident, $tile:ident| $call:expr) => {{
        let mut $ti = 0;
        while $ti + 4 <= $t {
            let v: [f32; 4] = {
                const $tile: usize = 4;
                $call
            };
            for (j, v) in v.into_iter().enumerate() {
                $dst.set($ti + j, $r, v);
            }
            $ti += 4;
        }
        match $t - $ti {
            3 => {
                const $tile: usize = 3;
                let v: [f32; 3] = $call;
                for (j, v) in v.into_iter().enumerate() {
                    $dst.set($ti + j, $r, v);
                }
            }
            2 => {
                const $tile: usize = 2;
                let v: [f32; 2] = $call;
                for (j, v) in v.into_iter().enumerate() {
                    $dst.set($ti + j, $r, v);
                }
            }
            1 => {
                const $tile: usize = 1;
                let v: [f32; 1] = $call;
                $dst.set($ti, $r, v[0]);
            }
            _ => {}
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// q8 / q4

/// # Safety
/// `isa` must be supported by this CPU (it comes from `isa::detected()` or below).
pub(crate) unsafe fn quant_rows(
    isa: Isa,
    w: &QuantWeights<'_>,
    a: &QActs,
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    let q4 = w.dtype == DType::Q4;
    // SAFETY: features checked by the caller; slices are bounds-checked at row level here.
    unsafe {
        match (isa, q4) {
            (Isa::Avx512Vnni, true) => rows_vnni::<true>(w, a, t, r0, r1, dst),
            (Isa::Avx512Vnni, false) => rows_vnni::<false>(w, a, t, r0, r1, dst),
            (_, true) => rows_avx2::<true>(w, a, t, r0, r1, dst),
            (_, false) => rows_avx2::<false>(w, a, t, r0, r1, dst),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_to_f32(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// Rows per tile of the AVX2 kernel in decode (t = 1): each activation load serves 4 rows.
const AVX2_DECODE_ROWS: usize = 4;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<const Q4: bool>(
    w: &QuantWeights<'_>,
    a: &QActs,
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    let mut r = r0;
    // SAFETY (all calls): row slices have the exact layout lengths for a.k = w.k; ti + T <= t.
    unsafe {
        if t == 1 {
            const R: usize = AVX2_DECODE_ROWS;
            while r + R <= r1 {
                let rows: [_; R] = std::array::from_fn(|i| w.row(r + i));
                let v = dot_avx2::<Q4, R, 1>(&rows, w.gs, a, 0);
                for (i, v) in v.iter().enumerate() {
                    dst.set(0, r + i, v[0]);
                }
                r += R;
            }
        }
        for r in r..r1 {
            let rows = [w.row(r)];
            token_tiles!(t, dst, r, |ti, T| dot_avx2::<Q4, 1, T>(&rows, w.gs, a, ti)
                [0]);
        }
    }
}

/// `R` rows against tokens `ti..ti+T`, AVX2 `maddubs`: q4 nibbles as stored (value + 8, the
/// offset removed per block through `acts.corr`), q8 with llama.cpp's sign trick
/// (`maddubs(|w|, sign(a, w))`). Scales 8 blocks at a time: `d = weight scale * activation
/// scale` in one vector per (row, token), each block broadcasting its lane with one permute.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_avx2<const Q4: bool, const R: usize, const T: usize>(
    rows: &[(&[u8], &[f16]); R],
    gs: usize,
    a: &QActs,
    ti: usize,
) -> [[f32; T]; R] {
    let (nb, k) = (a.nb, a.k);
    debug_assert!(
        rows.iter()
            .all(|(wr, ws)| wr.len() == if Q4 { k / 2 } else { k } && ws.len() == k / gs)
    );
    debug_assert!((ti + T) * k <= a.qs.len());
    let bpg = gs / 32;
    let ones = _mm256_set1_epi16(1);
    let m4 = _mm_set1_epi8(0x0f);
    let one = _mm256_set1_epi32(1);
    let (qp, sp) = (a.qs.as_ptr(), a.scale.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut c = 0;
    // SAFETY (whole loop): blocks c..c+nbc are inside each row and each token's activations.
    unsafe {
        while c < nb {
            let nbc = (nb - c).min(8);
            let full = nbc == 8;
            let mut asc = [_mm256_setzero_ps(); T];
            for j in 0..T {
                let p = sp.add((ti + j) * nb + c);
                asc[j] = if full {
                    _mm256_loadu_ps(p)
                } else {
                    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                    _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(nbc as i32), lanes))
                };
            }
            let mut d = [[_mm256_setzero_ps(); T]; R];
            let mut corr = [_mm256_setzero_ps(); T];
            if Q4 {
                for j in 0..T {
                    let p = a.corr.as_ptr().add((ti + j) * nb + c);
                    corr[j] = if full {
                        _mm256_loadu_ps(p)
                    } else {
                        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                        _mm256_maskload_ps(
                            p,
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(nbc as i32), lanes),
                        )
                    };
                }
            }
            for (i, (_, ws)) in rows.iter().enumerate() {
                let wp = ws.as_ptr();
                let wsc = match (full, bpg) {
                    (true, 1) => _mm256_cvtph_ps(_mm_loadu_si128(wp.add(c) as *const __m128i)),
                    (true, 2) => {
                        let v = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(
                            wp.add(c / 2) as *const __m128i,
                        )));
                        _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3))
                    }
                    _ => {
                        let mut buf = [0f32; 8];
                        for (l, v) in buf.iter_mut().enumerate().take(nbc) {
                            *v = f16_to_f32(*ws.get_unchecked((c + l) / bpg));
                        }
                        _mm256_loadu_ps(buf.as_ptr())
                    }
                };
                for j in 0..T {
                    d[i][j] = _mm256_mul_ps(wsc, asc[j]);
                    if Q4 {
                        // nibbles are value + 8: remove 8 * sum(a) per block (see `acts`)
                        acc[i][j] = _mm256_fmadd_ps(d[i][j], corr[j], acc[i][j]);
                    }
                }
            }
            let mut idx = _mm256_setzero_si256();
            for l in 0..nbc {
                let b = c + l;
                let mut av = [_mm256_setzero_si256(); T];
                for j in 0..T {
                    av[j] = _mm256_loadu_si256(qp.add((ti + j) * k + b * 32) as *const __m256i);
                }
                for (i, (wr, _)) in rows.iter().enumerate() {
                    let wp = wr.as_ptr();
                    // q4: unsigned nibbles straight into maddubs (15 * 127 * 2 cannot saturate);
                    // q8: |w| times sign-adjusted activations
                    let (wu, wv) = if Q4 {
                        let v = _mm_loadu_si128(wp.add(b * 16) as *const __m128i);
                        let lo = _mm_and_si128(v, m4);
                        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
                        (_mm256_set_m128i(hi, lo), _mm256_setzero_si256())
                    } else {
                        let v = _mm256_loadu_si256(wp.add(b * 32) as *const __m256i);
                        (_mm256_sign_epi8(v, v), v)
                    };
                    for j in 0..T {
                        let aj = if Q4 {
                            av[j]
                        } else {
                            _mm256_sign_epi8(av[j], wv)
                        };
                        let p = _mm256_maddubs_epi16(wu, aj);
                        let s = _mm256_madd_epi16(p, ones);
                        let dl = _mm256_permutevar8x32_ps(d[i][j], idx);
                        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dl, acc[i][j]);
                    }
                }
                idx = _mm256_add_epi32(idx, one);
            }
            c += nbc;
        }
    }
    let mut res = [[0f32; T]; R];
    for i in 0..R {
        for j in 0..T {
            res[i][j] = hsum256(acc[i][j]);
        }
    }
    res
}

/// Rows per tile of the VNNI kernel: decode (t = 1) shares each activation load over 4 rows;
/// prefill uses 2 rows x 4 tokens (16 live accumulators and scale vectors of 32 registers).
const VNNI_DECODE_ROWS: usize = 4;
const VNNI_PREFILL_ROWS: usize = 2;
/// How far ahead (bytes of weight rows) the decode kernel prefetches.
const VNNI_PREFETCH_BYTES: usize = 2048;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_vnni<const Q4: bool>(
    w: &QuantWeights<'_>,
    a: &QActs,
    t: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    // SAFETY (all calls): row slices have the layout lengths for a.k = w.k, tokens < t, and
    // a.corr is filled and q4 pairs interleaved for this level.
    let mut r = r0;
    unsafe {
        if t == 1 {
            const R: usize = VNNI_DECODE_ROWS;
            // decode streams the whole matrix once: for q4, software prefetch a few tiles ahead
            // keeps enough misses in flight (the hardware prefetcher alone reached ~half the
            // bandwidth); q8 rows are long enough for the hardware prefetcher and measured no gain
            let row_bytes = if Q4 { w.k / 2 } else { w.k }.max(1);
            let tile_bytes = R * row_bytes;
            let ahead = VNNI_PREFETCH_BYTES.div_ceil(tile_bytes).max(1) * tile_bytes;
            let gpr = w.k / w.gs;
            let (vp, sp) = (w.values.as_ptr(), w.scales.as_ptr());
            while r + R <= r1 {
                let start = r * row_bytes + ahead;
                let mut off = if Q4 { 0 } else { tile_bytes };
                while off < tile_bytes {
                    _mm_prefetch::<_MM_HINT_T0>(vp.wrapping_add(start + off) as *const i8);
                    off += 64;
                }
                let (s0, s1) = (
                    (r + ahead / row_bytes) * gpr,
                    (r + R + ahead / row_bytes) * gpr,
                );
                let mut sl = if Q4 { s0 } else { s1 };
                while sl < s1 {
                    _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add(sl) as *const i8);
                    sl += 32;
                }
                let rows: [_; R] = std::array::from_fn(|i| w.row(r + i));
                let v = dot_vnni::<Q4, R, 1>(&rows, w.gs, a, 0);
                for (i, v) in v.iter().enumerate() {
                    dst.set(0, r + i, v[0]);
                }
                r += R;
            }
        } else {
            const R: usize = VNNI_PREFILL_ROWS;
            while r + R <= r1 {
                let rows: [_; R] = std::array::from_fn(|i| w.row(r + i));
                tiles_vnni::<Q4, R>(&rows, w.gs, a, t, r, dst);
                r += R;
            }
        }
        while r < r1 {
            tiles_vnni::<Q4, 1>(&[w.row(r)], w.gs, a, t, r, dst);
            r += 1;
        }
    }
}

/// `R` rows starting at `r` against all `t` tokens in tiles of up to 4.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn tiles_vnni<const Q4: bool, const R: usize>(
    rows: &[(&[u8], &[f16]); R],
    gs: usize,
    a: &QActs,
    t: usize,
    r: usize,
    dst: OutPtr,
) {
    macro_rules! tile {
        ($ti:expr, $T:literal) => {{
            // SAFETY: $ti + $T <= t (see the caller).
            let v = unsafe { dot_vnni::<Q4, R, $T>(rows, gs, a, $ti) };
            for (i, v) in v.iter().enumerate() {
                for (j, v) in v.iter().enumerate() {
                    dst.set($ti + j, r + i, *v);
                }
            }
        }};
    }
    let mut ti = 0;
    while ti + 4 <= t {
        tile!(ti, 4);
        ti += 4;
    }
    match t - ti {
        3 => tile!(ti, 3),
        2 => tile!(ti, 2),
        1 => tile!(ti, 1),
        _ => {}
    }
}

/// `R` weight rows against tokens `ti..ti+T`, AVX-512 VNNI, two blocks per 512-bit step:
/// unsigned weights (q4 nibbles as stored, q8 xor 0x80) times signed activations with `dpbusd`
/// (see `acts` for the offset correction and the q4 pair order).
///
/// Scales are handled 16 blocks at a time: `d = weight scale * activation scale` for 16 blocks
/// in one vector per (row, token), then each step picks its two blocks' lanes with one permute.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
#[allow(unused_assignments)] // the last step's `idx` update
unsafe fn dot_vnni<const Q4: bool, const R: usize, const T: usize>(
    rows: &[(&[u8], &[f16]); R],
    gs: usize,
    a: &QActs,
    ti: usize,
) -> [[f32; T]; R] {
    let (nb, k) = (a.nb, a.k);
    debug_assert!(
        rows.iter()
            .all(|(wr, ws)| wr.len() == if Q4 { k / 2 } else { k } && ws.len() == k / gs)
    );
    debug_assert!((ti + T) * k <= a.qs.len() && (ti + T) * nb <= a.corr.len());
    debug_assert!(a.interleaved == Q4);
    let bpg = gs / 32;
    let m4 = _mm512_set1_epi8(0x0f);
    let flip = _mm512_set1_epi8(-128);
    // q4: the broadcast 32 bytes shifted by 0 (low 256 bits) or 4 (high 256 bits)
    let shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    // which of the step's two blocks each i32 lane belongs to
    let pat = if Q4 {
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1)
    } else {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    };
    // lane i of a 16-block chunk -> its scale group (bpg 2 and 4; others go through memory)
    let gidx = match bpg {
        2 => _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
        _ => _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
    };
    let two = _mm512_set1_epi32(2);
    let (qp, sp, cp) = (a.qs.as_ptr(), a.scale.as_ptr(), a.corr.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut tail = [[0f32; T]; R];
    let mut c = 0;
    // SAFETY (whole loop): blocks c..c+nbc are inside each row; masked loads touch only those.
    unsafe {
        while c < nb {
            let nbc = (nb - c).min(16);
            let m16: __mmask16 = if nbc == 16 { 0xffff } else { (1u16 << nbc) - 1 };
            let mut d = [[_mm512_setzero_ps(); T]; R];
            let mut asc = [_mm512_setzero_ps(); T];
            for j in 0..T {
                let o = (ti + j) * nb + c;
                asc[j] = _mm512_maskz_loadu_ps(m16, sp.add(o));
            }
            for (i, (_, ws)) in rows.iter().enumerate() {
                let wsc = match bpg {
                    1 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                        m16,
                        ws.as_ptr().add(c) as *const _,
                    )),
                    2 | 4 => {
                        let ng = nbc.div_ceil(bpg);
                        let v = _mm_maskz_loadu_epi16(
                            ((1u16 << ng) - 1) as u8,
                            ws.as_ptr().add(c / bpg) as *const _,
                        );
                        _mm512_permutexvar_ps(gidx, _mm512_castps256_ps512(_mm256_cvtph_ps(v)))
                    }
                    _ => {
                        let mut buf = [0f32; 16];
                        for (l, v) in buf.iter_mut().enumerate().take(nbc) {
                            *v = ws.get_unchecked((c + l) / bpg).to_f32();
                        }
                        _mm512_loadu_ps(buf.as_ptr())
                    }
                };
                for j in 0..T {
                    let o = (ti + j) * nb + c;
                    d[i][j] = _mm512_mul_ps(wsc, asc[j]);
                    // the offset correction goes straight into the accumulator
                    acc[i][j] =
                        _mm512_fmadd_ps(d[i][j], _mm512_maskz_loadu_ps(m16, cp.add(o)), acc[i][j]);
                }
            }
            let mut idx = pat;
            let mut p = 0;
            while p + 2 <= nbc {
                let b = c + p;
                let mut av = [_mm512_setzero_si512(); T];
                for j in 0..T {
                    av[j] = _mm512_loadu_si512(qp.add((ti + j) * k + b * 32) as *const _);
                }
                for (i, (wr, _)) in rows.iter().enumerate() {
                    let wp = wr.as_ptr();
                    let wv = if Q4 {
                        let z =
                            _mm512_broadcast_i64x4(_mm256_loadu_si256(wp.add(b * 16) as *const _));
                        _mm512_and_si512(_mm512_srlv_epi16(z, shift), m4)
                    } else {
                        _mm512_xor_si512(_mm512_loadu_si512(wp.add(b * 32) as *const _), flip)
                    };
                    for j in 0..T {
                        let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av[j]);
                        let dl = _mm512_permutexvar_ps(idx, d[i][j]);
                        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dl, acc[i][j]);
                    }
                }
                idx = _mm512_add_epi32(idx, two);
                p += 2;
            }
            if p < nbc {
                // odd last block (natural order): 256-bit VNNI
                let b = c + p;
                let lane = _mm512_set1_epi32(p as i32);
                for (i, (wr, _)) in rows.iter().enumerate() {
                    let wp = wr.as_ptr();
                    let wv = if Q4 {
                        let v = _mm_loadu_si128(wp.add(b * 16) as *const __m128i);
                        let m = _mm_set1_epi8(0x0f);
                        _mm256_set_m128i(
                            _mm_and_si128(_mm_srli_epi16(v, 4), m),
                            _mm_and_si128(v, m),
                        )
                    } else {
                        _mm256_xor_si256(
                            _mm256_loadu_si256(wp.add(b * 32) as *const __m256i),
                            _mm256_set1_epi8(-128),
                        )
                    };
                    for j in 0..T {
                        let av =
                            _mm256_loadu_si256(qp.add((ti + j) * k + b * 32) as *const __m256i);
                        let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, av);
                        let dl = _mm512_castps512_ps256(_mm512_permutexvar_ps(lane, d[i][j]));
                        tail[i][j] += hsum256(_mm256_mul_ps(_mm256_cvtepi32_ps(s), dl));
                    }
                }
            }
            c += nbc;
        }
    }
    let mut res = [[0f32; T]; R];
    for i in 0..R {
        for j in 0..T {
            res[i][j] = _mm512_reduce_add_ps(acc[i][j]) + tail[i][j];
        }
    }
    res
}

// ---------------------------------------------------------------------------------------------
// f32 / f16 / bf16

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn float_rows(
    isa: Isa,
    w: &FloatWeights<'_>,
    x: &[f32],
    t: usize,
    k: usize,
    r0: usize,
    r1: usize,
    dst: OutPtr,
) {
    // SAFETY: features checked by the caller; x.len() == t * k and each weight slice holds
    // rows * k elements (checked by matmul_rows_isa / TensorView::new).
    unsafe {
        match (isa >= Isa::Avx512Vnni, w) {
            (true, FloatWeights::F32(v)) => rows512_f32(v, x, t, k, r0, r1, dst),
            (true, FloatWeights::F16(v)) => rows512_f16(v, x, t, k, r0, r1, dst),
            (true, FloatWeights::BF16(v)) => rows512_bf16(v, x, t, k, r0, r1, dst),
            (false, FloatWeights::F32(v)) => rows_f32(v, x, t, k, r0, r1, dst),
            (false, FloatWeights::F16(v)) => rows_f16(v, x, t, k, r0, r1, dst),
            (false, FloatWeights::BF16(v)) => rows_bf16(v, x, t, k, r0, r1, dst),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_f32(p: *const f32) -> __m256 {
    unsafe { _mm256_loadu_ps(p) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_f16(p: *const f16) -> __m256 {
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_bf16(p: *const bf16) -> __m256 {
    // bf16 is the top half of an f32: widen to 32 bits and shift into place
    unsafe {
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
    }
}

macro_rules! float_kernel {
    ($rows:ident, $dot:ident, $ty:ty, $load:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $rows(
            w: &[$ty],
            x: &[f32],
            t: usize,
            k: usize,
            r0: usize,
            r1: usize,
            dst: OutPtr,
        ) {
            for r in r0..r1 {
                let wr = &w[r * k..(r + 1) * k];
                // SAFETY: wr.len() == k, x.len() == t * k, ti + T <= t.
                token_tiles!(t, dst, r, |ti, T| unsafe { $dot::<T>(wr, x, k, ti) });
            }
        }

        /// One float row against tokens `ti..ti+T`, 16 weights per step.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn $dot<const T: usize>(wr: &[$ty], x: &[f32], k: usize, ti: usize) -> [f32; T] {
            debug_assert!(wr.len() == k && (ti + T) * k <= x.len());
            let (wp, xp) = (wr.as_ptr(), x.as_ptr());
            let mut acc0 = [_mm256_setzero_ps(); T];
            let mut acc1 = [_mm256_setzero_ps(); T];
            let mut i = 0;
            // SAFETY: i + 16 <= k keeps every load inside wr and the token rows of x.
            unsafe {
                while i + 16 <= k {
                    let w0 = $load(wp.add(i));
                    let w1 = $load(wp.add(i + 8));
                    for j in 0..T {
                        let xr = xp.add((ti + j) * k + i);
                        acc0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr), acc0[j]);
                        acc1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr.add(8)), acc1[j]);
                    }
                    i += 16;
                }
            }
            let mut res = [0f32; T];
            for j in 0..T {
                res[j] = hsum256(_mm256_add_ps(acc0[j], acc1[j]));
                let xr = &x[(ti + j) * k..(ti + j + 1) * k];
                for l in i..k {
                    res[j] += wr[l].to_f32() * xr[l];
                }
            }
            res
        }
    };
}

trait ToF32: Copy {
    fn to_f32(self) -> f32;
}
impl ToF32 for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

float_kernel!(rows_f32, dot_f32, f32, load_f32);
float_kernel!(rows_f16, dot_f16, f16, load_f16);
float_kernel!(rows_bf16, dot_bf16, bf16, load_bf16);

// AVX-512 float kernels: R rows x T tokens per tile (decode 4 x 1, prefill 2 x 4), 16 weights
// per step, so each x load serves R rows and each converted weight vector T tokens.

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn load16_f32(p: *const f32) -> __m512 {
    unsafe { _mm512_loadu_ps(p) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn load16_f16(p: *const f16) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn load16_bf16(p: *const bf16) -> __m512 {
    unsafe {
        let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))
    }
}

macro_rules! float512_kernel {
    ($rows:ident, $tiles:ident, $dot:ident, $ty:ty, $load:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn $rows(
            w: &[$ty],
            x: &[f32],
            t: usize,
            k: usize,
            r0: usize,
            r1: usize,
            dst: OutPtr,
        ) {
            let row = |r: usize| &w[r * k..(r + 1) * k];
            let mut r = r0;
            // SAFETY (all calls): rows have k elements, x has t * k, tiles stay below t.
            unsafe {
                if t == 1 {
                    while r + 4 <= r1 {
                        let rows: [&[$ty]; 4] = std::array::from_fn(|i| row(r + i));
                        let v = $dot::<4, 1>(&rows, x, k, 0);
                        for (i, v) in v.iter().enumerate() {
                            dst.set(0, r + i, v[0]);
                        }
                        r += 4;
                    }
                } else {
                    while r + 2 <= r1 {
                        $tiles::<2>(&[row(r), row(r + 1)], x, t, k, r, dst);
                        r += 2;
                    }
                }
                while r < r1 {
                    $tiles::<1>(&[row(r)], x, t, k, r, dst);
                    r += 1;
                }
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        #[inline]
        unsafe fn $tiles<const R: usize>(
            rows: &[&[$ty]; R],
            x: &[f32],
            t: usize,
            k: usize,
            r: usize,
            dst: OutPtr,
        ) {
            macro_rules! tile {
                ($ti:expr, $T:literal) => {{
                    // SAFETY: $ti + $T <= t.
                    let v = unsafe { $dot::<R, $T>(rows, x, k, $ti) };
                    for (i, v) in v.iter().enumerate() {
                        for (j, v) in v.iter().enumerate() {
                            dst.set($ti + j, r + i, *v);
                        }
                    }
                }};
            }
            let mut ti = 0;
            while ti + 4 <= t {
                tile!(ti, 4);
                ti += 4;
            }
            match t - ti {
                3 => tile!(ti, 3),
                2 => tile!(ti, 2),
                1 => tile!(ti, 1),
                _ => {}
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        #[inline]
        unsafe fn $dot<const R: usize, const T: usize>(
            rows: &[&[$ty]; R],
            x: &[f32],
            k: usize,
            ti: usize,
        ) -> [[f32; T]; R] {
            debug_assert!(rows.iter().all(|r| r.len() == k) && (ti + T) * k <= x.len());
            let xp = x.as_ptr();
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            let mut i = 0;
            // SAFETY: i + 16 <= k keeps every load inside the rows and the token rows of x.
            unsafe {
                while i + 16 <= k {
                    let mut xv = [_mm512_setzero_ps(); T];
                    for j in 0..T {
                        xv[j] = _mm512_loadu_ps(xp.add((ti + j) * k + i));
                    }
                    for (r, row) in rows.iter().enumerate() {
                        let wv = $load(row.as_ptr().add(i));
                        for j in 0..T {
                            acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
                        }
                    }
                    i += 16;
                }
            }
            let mut res = [[0f32; T]; R];
            for (r, row) in rows.iter().enumerate() {
                for j in 0..T {
                    res[r][j] = _mm512_reduce_add_ps(acc[r][j]);
                    let xr = &x[(ti + j) * k..(ti + j + 1) * k];
                    for l in i..k {
                        res[r][j] += row[l].to_f32() * xr[l];
                    }
                }
            }
            res
        }
    };
}

float512_kernel!(rows512_f32, tiles512_f32, dot512_f32, f32, load16_f32);
float512_kernel!(rows512_f16, tiles512_f16, dot512_f16, f16, load16_f16);
float512_kernel!(rows512_bf16, tiles512_bf16, dot512_bf16, bf16, load16_bf16);
