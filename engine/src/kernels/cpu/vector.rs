//! Small vector ops used by attention (scores, value sums), norms and residual adds.
//! `dot`/`axpy` and their f16 forms have AVX2 paths; the scalar loops are the reference.

#[cfg(target_arch = "x86_64")]
use super::isa::{self, Isa};
use half::f16;

/// `dst += src` element-wise.
pub fn add(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add: length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// `x *= s` element-wise.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// Dot product (attention scores).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if isa::detected() >= Isa::Avx2 {
        // SAFETY: AVX2/FMA/F16C detected; equal lengths checked.
        return unsafe { x86::dot(a, b) };
    }
    dot_scalar(a, b)
}

/// `y += a * x` (attention value sums).
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if isa::detected() >= Isa::Avx2 {
        // SAFETY: as in `dot`.
        return unsafe { x86::axpy(y, a, x) };
    }
    axpy_scalar(y, a, x)
}

/// Dot product of an f32 query with an f16 key row (KV cache).
pub fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
    assert_eq!(q.len(), k.len(), "dot_f16: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if isa::detected() >= Isa::Avx2 {
        // SAFETY: as in `dot`.
        return unsafe { x86::dot_f16(q, k) };
    }
    dot_f16_scalar(q, k)
}

/// `y += a * x` with an f16 value row (KV cache).
pub fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
    assert_eq!(y.len(), x.len(), "axpy_f16: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if isa::detected() >= Isa::Avx2 {
        // SAFETY: as in `dot`.
        return unsafe { x86::axpy_f16(y, a, x) };
    }
    axpy_f16_scalar(y, a, x)
}

pub(crate) fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, at) = a.split_at(a.len() / 8 * 8);
    let (bc, bt) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

fn axpy_scalar(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

fn dot_f16_scalar(q: &[f32], k: &[f16]) -> f32 {
    q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum()
}

fn axpy_f16_scalar(y: &mut [f32], a: f32, x: &[f16]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// Lengths must be equal (checked by the callers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: i + 32 <= n for every load.
        unsafe {
            while i + 32 <= n {
                for (u, acc) in acc.iter_mut().enumerate() {
                    let o = i + 8 * u;
                    *acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(o)),
                        _mm256_loadu_ps(pb.add(o)),
                        *acc,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }

    /// Lengths must be equal (checked by the callers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len();
        let (pq, pk) = (q.as_ptr(), k.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: i + 32 <= n (or i + 8 <= n) for every load.
        unsafe {
            while i + 32 <= n {
                for (u, acc) in acc.iter_mut().enumerate() {
                    let o = i + 8 * u;
                    let kv = _mm256_cvtph_ps(_mm_loadu_si128(pk.add(o) as *const __m128i));
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pq.add(o)), kv, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let kv = _mm256_cvtph_ps(_mm_loadu_si128(pk.add(i) as *const __m128i));
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pq.add(i)), kv, acc[0]);
                i += 8;
            }
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for j in i..n {
            s += q[j] * k[j].to_f32();
        }
        s
    }

    /// Lengths must be equal (checked by the callers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        // SAFETY: i + 8 <= n for every load/store.
        unsafe {
            while i + 8 <= n {
                let r = _mm256_fmadd_ps(av, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
        }
        for j in i..n {
            y[j] += a * x[j];
        }
    }

    /// Lengths must be equal (checked by the callers).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        // SAFETY: i + 8 <= n for every load/store.
        unsafe {
            while i + 8 <= n {
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(px.add(i) as *const __m128i));
                let r = _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
        }
        for j in i..n {
            y[j] += a * x[j].to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 2.0)
            .collect()
    }

    #[test]
    fn vector_ops_match_scalar() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 256, 1031] {
            let (a, b) = (vals(n, 0.5), vals(n, 3.0));
            let bh: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
            let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() + 1e-30;
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!(
                (dot(&a, &b) as f64 - exact).abs() <= 1e-5 * mag as f64,
                "dot n={n}"
            );
            let exact_h: f64 = a.iter().zip(&bh).map(|(x, y)| *x as f64 * y.to_f64()).sum();
            assert!(
                (dot_f16(&a, &bh) as f64 - exact_h).abs() <= 1e-5 * mag as f64,
                "dot_f16 n={n}"
            );
            let (mut y1, mut y2) = (b.clone(), b.clone());
            axpy(&mut y1, 0.37, &a);
            axpy_scalar(&mut y2, 0.37, &a);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "axpy n={n}");
            }
            let (mut y1, mut y2) = (a.clone(), a.clone());
            axpy_f16(&mut y1, -1.5, &bh);
            axpy_f16_scalar(&mut y2, -1.5, &bh);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "axpy_f16 n={n}");
            }
        }
        let mut d = vec![1.0, 2.0, 3.0];
        add(&mut d, &[0.5, -2.0, 1.0]);
        scale(&mut d, 2.0);
        assert_eq!(d, vec![3.0, 0.0, 8.0]);
    }
}
