//! Element-wise activations: GELU (tanh approximation) and logit soft-capping.

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, as `gelu_pytorch_tanh`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`: the gated MLP's activation.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_mul: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if super::isa::detected() >= super::isa::Isa::Avx2 {
        // SAFETY: AVX2 and FMA detected.
        return unsafe { super::simd_math::x86::gelu_mul(gate, up) };
    }
    gelu_mul_scalar(gate, up)
}

fn gelu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `x = cap * tanh(x / cap)` in place.
pub fn softcap(x: &mut [f32], cap: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::isa::detected() >= super::isa::Isa::Avx2 {
        // SAFETY: AVX2 and FMA detected.
        return unsafe { super::simd_math::x86::softcap(x, cap) };
    }
    softcap_scalar(x, cap)
}

fn softcap_scalar(x: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in x.iter_mut() {
        *v = cap * (*v * inv).tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_and_softcap_match_formulas() {
        for i in -60..=60 {
            let x = i as f32 * 0.25;
            let xd = x as f64;
            let g = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!(
                (gelu_tanh(x) as f64 - g).abs() <= 1e-6 * (1.0 + g.abs()),
                "gelu({x})"
            );
        }
        // known values of gelu_pytorch_tanh (torch.nn.functional.gelu(approximate="tanh"))
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-2.0) - -0.045_402_3).abs() < 1e-5);
        let mut g = vec![1.0, -2.0, 0.0];
        gelu_mul(&mut g, &[2.0, 10.0, 5.0]);
        assert!(
            (g[0] - 2.0 * 0.841_192).abs() < 1e-5 && (g[1] + 0.454_023).abs() < 1e-4 && g[2] == 0.0
        );

        let mut x = vec![-100.0, -30.0, 0.0, 5.0, 30.0, 1e6];
        softcap(&mut x, 30.0);
        for (v, r) in x.iter().zip([-100.0f64, -30.0, 0.0, 5.0, 30.0, 1e6]) {
            let e = 30.0 * (r / 30.0).tanh();
            assert!(
                (*v as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                "softcap {r}"
            );
        }
    }
}
