//! Numerically stable softmax.

/// In-place softmax: subtract the max, exponentiate, normalise. -inf entries become 0.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        // every entry masked: leave zeros rather than NaN
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let sum = exp_sub_sum(x, max);
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `x[i] = exp(x[i] - m)`, returning the sum.
fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::isa::detected() >= super::isa::Isa::Avx2 {
        // SAFETY: AVX2 and FMA detected.
        return unsafe { super::simd_math::x86::exp_sub_sum(x, m) };
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_f64_and_is_stable() {
        let mut x: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.9).sin() * 20.0 + 500.0)
            .collect();
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let m = xd.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = xd.iter().map(|v| (v - m).exp()).sum();
        softmax(&mut x);
        for (p, v) in x.iter().zip(&xd) {
            let e = (v - m).exp() / z;
            assert!((*p as f64 - e).abs() <= 1e-6 + 1e-5 * e, "{p} vs {e}");
        }
        let mut y = vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        softmax(&mut y);
        assert_eq!(y, vec![0.0, 0.5, 0.0, 0.5]);
        let mut all_masked = vec![f32::NEG_INFINITY; 3];
        softmax(&mut all_masked);
        assert_eq!(all_masked, vec![0.0; 3]);
    }
}
