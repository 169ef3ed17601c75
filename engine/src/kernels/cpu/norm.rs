//! RMSNorm in both Gemma flavours.

/// In-place RMSNorm of each consecutive row of length `dim`: `x * (mean(x^2) + eps)^-1/2 * s`
/// with `s = w` (Gemma 4, `plus_one = false`), `s = 1 + w` (Gemma 3, `plus_one = true`), or 1 when
/// `w` is None. Accumulates in f32 like transformers' float32 island.
pub fn rmsnorm(x: &mut [f32], dim: usize, w: Option<&[f32]>, eps: f32, plus_one: bool) {
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "rmsnorm: len {} not a multiple of {dim}",
        x.len()
    );
    if let Some(w) = w {
        assert_eq!(w.len(), dim, "rmsnorm: weight length");
    }
    for row in x.chunks_exact_mut(dim) {
        let ss = super::vector::dot(row, row);
        let r = 1.0 / (ss / dim as f32 + eps).sqrt();
        match w {
            None => row.iter_mut().for_each(|v| *v *= r),
            Some(w) if plus_one => {
                for (v, w) in row.iter_mut().zip(w) {
                    *v = *v * r * (1.0 + w);
                }
            }
            Some(w) => {
                for (v, w) in row.iter_mut().zip(w) {
                    *v = *v * r * w;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_both_flavours() {
        let dim = 37;
        let x: Vec<f32> = (0..2 * dim)
            .map(|i| (i as f32 * 0.41).cos() * 3.0)
            .collect();
        let w: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.01).collect();
        let eps = 1e-6;
        for (wo, plus_one) in [(None, false), (Some(&w[..]), false), (Some(&w[..]), true)] {
            let mut y = x.clone();
            rmsnorm(&mut y, dim, wo, eps, plus_one);
            for r in 0..2 {
                let row = &x[r * dim..(r + 1) * dim];
                let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for i in 0..dim {
                    let s = match wo {
                        None => 1.0,
                        Some(w) if plus_one => 1.0 + w[i] as f64,
                        Some(w) => w[i] as f64,
                    };
                    let e = row[i] as f64 * inv * s;
                    let got = y[r * dim + i] as f64;
                    assert!(
                        (got - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "{plus_one} {got} vs {e}"
                    );
                }
            }
        }
    }
}
