//! The multimodal embedders (`model.embed_vision`, `model.embed_audio`): a weightless RMSNorm
//! followed by `embedding_projection` into the text hidden size.

use crate::EncoderError;
use crate::clipped::matmul_blocked;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::rmsnorm;

/// Projects `n` soft tokens of `in_dim` values (row-major `x`) into the text hidden size:
/// per row `rmsnorm(x, eps 1e-6, no weight) · Wᵀ` with `W = {prefix}.embedding_projection.weight`.
/// Returns `[n, text_hidden]`.
pub fn embed_soft_tokens(
    file: &CellmFile,
    prefix: &str,
    x: &[f32],
    n: usize,
    in_dim: usize,
) -> Result<Vec<f32>, EncoderError> {
    if x.len() != n * in_dim {
        return Err(EncoderError::Invalid(format!(
            "{prefix}: {} values for {n} tokens of {in_dim}",
            x.len()
        )));
    }
    let w = file.tensor(&format!("{prefix}.embedding_projection.weight"))?;
    if w.cols() != in_dim {
        return Err(EncoderError::Invalid(format!(
            "{prefix}.embedding_projection.weight has {} inputs, the tower gives {in_dim}",
            w.cols()
        )));
    }
    let mut normed = x.to_vec();
    if n > 0 {
        rmsnorm(&mut normed, in_dim, None, 1e-6, false);
    }
    let mut out = vec![0f32; n * w.rows()];
    matmul_blocked(&normed, n, &w, &mut out);
    Ok(out)
}
