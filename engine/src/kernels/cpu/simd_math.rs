//! Vectorized `exp` and `tanh` for AVX2 + FMA (Cephes single-precision approximations, about
//! 1-2 ulp for exp, relative 2e-7 for tanh), used by softmax, soft-capping and GELU where a
//! scalar libm call per element would cost more than the matmul it follows (the 262k-logit
//! soft-cap, the MLP's GELU).

#[cfg(target_arch = "x86_64")]
#[allow(clippy::excessive_precision)] // Cephes coefficients as published
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// `exp(x)` per lane; lanes below -87.3 (including -inf) give exactly 0, above 88.7 +inf.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.336_54);
        let hi = _mm256_set1_ps(88.722_83);
        let xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        // x = n ln2 + r, ln2 split in two parts for an exact reduction
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_2e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.000_000_1e-1));
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        // times 2^n through the exponent bits (n in -126..=128 after the clamp)
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        let mut out = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
        // n = 128 overflows the exponent field: compute as y * 2^127 * 2
        let big = _mm256_cmp_ps(n, _mm256_set1_ps(127.5), _CMP_GT_OQ);
        if _mm256_movemask_ps(big) != 0 {
            let e127 = _mm256_castsi256_ps(_mm256_set1_epi32(254 << 23));
            let alt = _mm256_mul_ps(_mm256_mul_ps(y, e127), _mm256_set1_ps(2.0));
            out = _mm256_blendv_ps(out, alt, big);
        }
        let under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
        _mm256_andnot_ps(under, out)
    }

    /// `tanh(x)` per lane: odd polynomial below |x| 0.625, `1 - 2 / (exp(2|x|) + 1)` above.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub fn tanh8(x: __m256) -> __m256 {
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        let ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        // small |x|
        let z = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(-5.704_988_7e-3);
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.063_908_9e-2));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.373_971_6e-2));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.333_144_2e-1));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.333_328_2e-1));
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        // large |x| (exp saturates to +inf for |x| > 44: 2 / inf = 0 gives exactly 1)
        let e = exp8(_mm256_add_ps(ax, ax));
        let large = _mm256_sub_ps(
            _mm256_set1_ps(1.0),
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, _mm256_set1_ps(1.0))),
        );
        let large = _mm256_or_ps(large, sign);
        let is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625), _CMP_LT_OQ);
        _mm256_blendv_ps(large, small, is_small)
    }

    /// `x[i] = exp(x[i] - m)`, returns the sum.
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let mv = _mm256_set1_ps(m);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: c has exactly 8 elements.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut sum: f32 = lanes.iter().sum();
        for v in chunks.into_remainder() {
            *v = (*v - m).exp();
            sum += *v;
        }
        sum
    }

    /// `x = cap * tanh(x / cap)`.
    #[target_feature(enable = "avx2,fma")]
    pub fn softcap(x: &mut [f32], cap: f32) {
        let (c, inv) = (_mm256_set1_ps(cap), _mm256_set1_ps(1.0 / cap));
        let mut chunks = x.chunks_exact_mut(8);
        for ch in &mut chunks {
            // SAFETY: ch has exactly 8 elements.
            unsafe {
                let v = _mm256_loadu_ps(ch.as_ptr());
                _mm256_storeu_ps(
                    ch.as_mut_ptr(),
                    _mm256_mul_ps(c, tanh8(_mm256_mul_ps(v, inv))),
                );
            }
        }
        for v in chunks.into_remainder() {
            *v = cap * (*v / cap).tanh();
        }
    }

    /// `gate = gelu_tanh(gate) * up` (equal lengths checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
        let k0 = _mm256_set1_ps(0.797_884_6);
        let k1 = _mm256_set1_ps(0.044715);
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let mut g = gate.chunks_exact_mut(8);
        let mut u = up.chunks_exact(8);
        for (gc, uc) in (&mut g).zip(&mut u) {
            // SAFETY: both chunks have exactly 8 elements.
            unsafe {
                let x = _mm256_loadu_ps(gc.as_ptr());
                let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                let inner = _mm256_mul_ps(k0, _mm256_fmadd_ps(k1, x3, x));
                let gl = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, tanh8(inner)));
                _mm256_storeu_ps(
                    gc.as_mut_ptr(),
                    _mm256_mul_ps(gl, _mm256_loadu_ps(uc.as_ptr())),
                );
            }
        }
        for (gv, uv) in g.into_remainder().iter_mut().zip(u.remainder()) {
            *gv = super::super::activation::gelu_tanh(*gv) * uv;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::x86;
    use crate::kernels::cpu::isa::{self, Isa};

    fn grid() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0237).collect();
        v.extend([
            0.0, -0.0, 1e-8, -1e-8, 1e-4, 0.6249, 0.6251, -0.625, 44.0, -44.0, 87.0, 88.5,
        ]);
        v.extend([-87.0, -87.3, -87.4, -100.0, -1e30, 1e30, f32::NEG_INFINITY]);
        v
    }

    #[test]
    fn exp_matches_f64() {
        if isa::detected() < Isa::Avx2 {
            return;
        }
        let xs = grid();
        let mut y = xs.clone();
        // SAFETY: AVX2 checked above.
        unsafe { x86::exp_sub_sum(&mut y, 0.0) };
        for (x, y) in xs.iter().zip(&y) {
            let e = (*x as f64).exp();
            if *x < -87.34 {
                // 0 from the SIMD lanes, a denormal from the scalar tail
                assert!(*y < 1e-37, "exp({x}) = {y}");
                continue;
            }
            if *x > 88.72 {
                continue; // beyond f32 (softmax and tanh never ask)
            }
            assert!(
                ((*y as f64) - e).abs() <= 3e-7 * e + 1e-38,
                "exp({x}) = {y} vs {e}"
            );
        }
        // the returned sum, shifted by m
        let mut z: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
        let want: f64 = z.iter().map(|v| (*v as f64 - 3.0).exp()).sum();
        let sum = unsafe { x86::exp_sub_sum(&mut z, 3.0) };
        assert!(
            ((sum as f64) - want).abs() <= 1e-5 * want,
            "{sum} vs {want}"
        );
    }

    #[test]
    fn tanh_softcap_gelu_match_f64() {
        if isa::detected() < Isa::Avx2 {
            return;
        }
        let xs: Vec<f32> = grid().into_iter().filter(|v| v.is_finite()).collect();
        let mut y = xs.clone();
        // SAFETY: AVX2 checked above.
        unsafe { x86::softcap(&mut y, 1.0) };
        for (x, y) in xs.iter().zip(&y) {
            let e = (*x as f64).tanh();
            assert!(
                ((*y as f64) - e).abs() <= 4e-7 * e.abs() + 1e-37,
                "tanh({x}) = {y} vs {e}"
            );
        }
        let mut y = xs.clone();
        unsafe { x86::softcap(&mut y, 30.0) };
        for (x, y) in xs.iter().zip(&y) {
            let e = 30.0 * (*x as f64 / 30.0).tanh();
            assert!(
                ((*y as f64) - e).abs() <= 5e-7 * e.abs() + 1e-30,
                "softcap({x})"
            );
        }
        let small: Vec<f32> = xs.iter().map(|v| v.clamp(-20.0, 20.0)).collect();
        let mut g = small.clone();
        let up: Vec<f32> = (0..g.len()).map(|i| 1.0 + (i % 5) as f32 * 0.5).collect();
        unsafe { x86::gelu_mul(&mut g, &up) };
        for ((x, y), u) in small.iter().zip(&g).zip(&up) {
            let xd = *x as f64;
            let e = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh())
                * *u as f64;
            // 1 + tanh cancels for large negative x: f32 rounding of it, times 0.5 x up
            let tol = 1e-6 * e.abs() + 1e-7 * xd.abs() * *u as f64;
            assert!(((*y as f64) - e).abs() <= tol, "gelu({x}) = {y} vs {e}");
        }
    }
}
