//! `Gemma4ClippableLinear`: `clamp(clamp(x, in_min, in_max) · Wᵀ, out_min, out_max)`, shared by
//! the vision and audio towers.

use crate::EncoderError;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::matmul;
use cellm_engine::tensor::TensorView;

/// Tokens per engine matmul call in [`matmul_blocked`]: the engine streams all `t` activation rows
/// past each weight row, so large `t` (a vision tower has thousands of patches) falls out of L2;
/// 64 rows of up to 3072 floats stay cached (measured 1.8x faster than one call at t = 2394).
pub const TOKEN_BLOCK: usize = 64;

/// [`matmul`] over blocks of [`TOKEN_BLOCK`] tokens: `out [t, n] = x [t, k] · Wᵀ`.
pub fn matmul_blocked(x: &[f32], t: usize, w: &TensorView<'_>, out: &mut [f32]) {
    let (k, n) = (w.cols(), w.rows());
    if t <= TOKEN_BLOCK {
        matmul(x, t, w, out);
        return;
    }
    for t0 in (0..t).step_by(TOKEN_BLOCK) {
        let b = TOKEN_BLOCK.min(t - t0);
        matmul(
            &x[t0 * k..(t0 + b) * k],
            b,
            w,
            &mut out[t0 * n..(t0 + b) * n],
        );
    }
}

/// A bias-free linear layer with optional scalar clamps on its input and output.
pub struct ClippedLinear<'a> {
    pub weight: TensorView<'a>,
    pub input_min: f32,
    pub input_max: f32,
    pub output_min: f32,
    pub output_max: f32,
}

impl<'a> ClippedLinear<'a> {
    /// Reads `{prefix}.linear.weight` (or `{prefix}.weight` when the model has plain linears)
    /// and the four bounds `{prefix}.input_min` ... when present (absent bounds are ±inf).
    pub fn load(file: &'a CellmFile, prefix: &str) -> Result<Self, EncoderError> {
        let lw = format!("{prefix}.linear.weight");
        let weight = if file.contains(&lw) {
            file.tensor(&lw)?
        } else {
            file.tensor(&format!("{prefix}.weight"))?
        };
        let bound = |name: &str, default: f32| -> Result<f32, EncoderError> {
            let full = format!("{prefix}.{name}");
            if !file.contains(&full) {
                return Ok(default);
            }
            let v = file.tensor(&full)?.to_f32_vec();
            match v.as_slice() {
                [x] => Ok(*x),
                _ => Err(EncoderError::Invalid(format!(
                    "{full} should be a scalar, has {} values",
                    v.len()
                ))),
            }
        };
        Ok(Self {
            weight,
            input_min: bound("input_min", f32::NEG_INFINITY)?,
            input_max: bound("input_max", f32::INFINITY)?,
            output_min: bound("output_min", f32::NEG_INFINITY)?,
            output_max: bound("output_max", f32::INFINITY)?,
        })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.cols()
    }

    pub fn out_dim(&self) -> usize {
        self.weight.rows()
    }

    fn clamps_input(&self) -> bool {
        self.input_min > f32::NEG_INFINITY || self.input_max < f32::INFINITY
    }

    /// `out [t, out_dim] = clamp(clamp(x [t, in_dim]) · Wᵀ)`.
    pub fn forward(&self, x: &[f32], t: usize, out: &mut [f32]) {
        if self.clamps_input() {
            let xc: Vec<f32> = x
                .iter()
                .map(|v| v.max(self.input_min).min(self.input_max))
                .collect();
            matmul_blocked(&xc, t, &self.weight, out);
        } else {
            matmul_blocked(x, t, &self.weight, out);
        }
        if self.output_min > f32::NEG_INFINITY || self.output_max < f32::INFINITY {
            for v in out.iter_mut() {
                *v = v.max(self.output_min).min(self.output_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellm_engine::tensor::DType;

    #[test]
    fn clipped_linear_matches_scalar_reference() {
        let (t, k, n) = (150, 40, 24); // t spans several token blocks
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.05)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.02)
            .collect();
        let shape = [n, k];
        let weight = TensorView::new(DType::F32, &shape, 0, bytemuck::cast_slice(&w)).unwrap();
        let lin = ClippedLinear {
            weight,
            input_min: -1.5,
            input_max: 2.0,
            output_min: -3.0,
            output_max: 2.5,
        };
        let mut out = vec![0f32; t * n];
        lin.forward(&x, t, &mut out);
        let mut clipped = 0;
        for ti in 0..t {
            for ni in 0..n {
                let mut s = 0f64;
                for ki in 0..k {
                    let xv = x[ti * k + ki].clamp(-1.5, 2.0) as f64;
                    s += xv * w[ni * k + ki] as f64;
                }
                let want = s.clamp(-3.0, 2.5);
                clipped += (want != s) as usize;
                let got = out[ti * n + ni] as f64;
                assert!((got - want).abs() < 1e-4, "{ti} {ni}: {got} vs {want}");
            }
        }
        assert!(clipped > 0, "the test should exercise the output clamp");
    }
}
