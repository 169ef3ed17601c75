//! Chunked local self-attention with a relative position term (`Gemma4AudioAttention`, spec §5.5).
//!
//! The reference splits queries into blocks of `chunk` and gives each block a window of
//! `context_size` keys; with its mask that reduces to: query t sees keys s with
//! 0 ≤ t − s < left − 1 that are valid frames. This computes that rule directly, per query.

use super::config::AudioConfig;
use crate::EncoderError;
use crate::clipped::ClippedLinear;
use cellm_engine::format::CellmFile;
use cellm_engine::kernels::cpu::{dot, matmul, softmax};
use cellm_engine::tensor::TensorView;

pub(crate) struct Attention<'a> {
    pub(crate) q: ClippedLinear<'a>,
    pub(crate) k: ClippedLinear<'a>,
    pub(crate) v: ClippedLinear<'a>,
    pub(crate) post: ClippedLinear<'a>,
    /// `q_scale · softplus(per_dim_scale)`, one factor per head dimension.
    pub(crate) q_factors: Vec<f32>,
    /// `relative_k_proj(pe)`: `[rel_positions, hidden]`, row r is position `rel_positions-1-r`
    /// (descending like the reference's table).
    pub(crate) rel_k: Vec<f32>,
}

/// The sinusoid table `[positions, hidden]`: row r is position `positions-1-r`,
/// `[sin(p·τ_0..), cos(p·τ_0..)]` with `τ_i = exp(−i·ln(10⁴)/(hidden/2 − 1))`.
pub(crate) fn relative_position_table(positions: usize, hidden: usize) -> Vec<f32> {
    let half = hidden / 2;
    let inc = (10_000f64).ln() / (half.saturating_sub(1).max(1)) as f64;
    // The reference builds the timescales in f32 and multiplies in f32.
    let inv: Vec<f32> = (0..half)
        .map(|i| (-(i as f64) * inc).exp() as f32)
        .collect();
    let mut pe = vec![0f32; positions * hidden];
    for r in 0..positions {
        let p = (positions - 1 - r) as f32;
        let row = &mut pe[r * hidden..(r + 1) * hidden];
        for (i, &tau) in inv.iter().enumerate() {
            let a = p * tau;
            row[i] = a.sin();
            row[half + i] = a.cos();
        }
    }
    pe
}

fn softplus(x: f32) -> f32 {
    // torch's softplus: linear above threshold 20.
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

impl<'a> Attention<'a> {
    pub fn load(
        file: &'a CellmFile,
        prefix: &str,
        cfg: &AudioConfig,
    ) -> Result<Self, EncoderError> {
        let lin = |name: &str| -> Result<ClippedLinear<'a>, EncoderError> {
            let l = ClippedLinear::load(file, &format!("{prefix}.{name}"))?;
            if l.in_dim() != cfg.hidden || l.out_dim() != cfg.hidden {
                return Err(EncoderError::Invalid(format!(
                    "{prefix}.{name} is [{}, {}], expected [{h}, {h}]",
                    l.out_dim(),
                    l.in_dim(),
                    h = cfg.hidden
                )));
            }
            Ok(l)
        };
        let hd = cfg.head_dim();
        let pds = file
            .tensor(&format!("{prefix}.per_dim_scale"))?
            .to_f32_vec();
        if pds.len() != hd {
            return Err(EncoderError::Invalid(format!(
                "{prefix}.per_dim_scale has {} values, head_dim is {hd}",
                pds.len()
            )));
        }
        let q_scale = ((hd as f64).powf(-0.5) / std::f64::consts::LN_2) as f32;
        let q_factors = pds.iter().map(|&s| softplus(s)).collect::<Vec<_>>();
        let q_factors = q_factors.iter().map(|&s| q_scale * s).collect();
        let rel_w: TensorView<'a> = file.tensor(&format!("{prefix}.relative_k_proj.weight"))?;
        if rel_w.rows() != cfg.hidden || rel_w.cols() != cfg.hidden {
            return Err(EncoderError::Invalid(format!(
                "{prefix}.relative_k_proj.weight is {:?}, expected [{h}, {h}]",
                rel_w.shape,
                h = cfg.hidden
            )));
        }
        let positions = cfg.rel_positions();
        let pe = relative_position_table(positions, cfg.hidden);
        let mut rel_k = vec![0f32; positions * cfg.hidden];
        matmul(&pe, positions, &rel_w, &mut rel_k);
        Ok(Self {
            q: lin("q_proj")?,
            k: lin("k_proj")?,
            v: lin("v_proj")?,
            post: lin("post")?,
            q_factors,
            rel_k,
        })
    }

    /// `h [t, hidden]` (already normed) -> attention output after `post`, `[t, hidden]`.
    pub fn forward(&self, h: &[f32], t: usize, valid: &[bool], cfg: &AudioConfig) -> Vec<f32> {
        let (hid, nh, hd) = (cfg.hidden, cfg.heads, cfg.head_dim());
        let mut q = vec![0f32; t * hid];
        let mut k = vec![0f32; t * hid];
        let mut v = vec![0f32; t * hid];
        self.q.forward(h, t, &mut q);
        self.k.forward(h, t, &mut k);
        self.v.forward(h, t, &mut v);
        // Same operation order as the reference: (q · q_scale) · softplus, k · k_scale.
        let k_scale = ((1.0 + std::f64::consts::E).ln() / std::f64::consts::LN_2) as f32;
        for row in q.chunks_exact_mut(hd) {
            for (x, &f) in row.iter_mut().zip(&self.q_factors) {
                *x *= f;
            }
        }
        k.iter_mut().for_each(|x| *x *= k_scale);

        let past = cfg.context_left - 1; // keys at distance 0..past-1 are visible
        let max_past = past; // the reference's past horizon (relative column = max_past - d)
        let positions = cfg.rel_positions();
        let cap = cfg.logit_cap;
        let ctx = cfg.context_size();
        let mut out = vec![0f32; t * hid];
        let mut logits = Vec::with_capacity(past);
        for head in 0..nh {
            let col = head * hd;
            for ti in 0..t {
                let qv = &q[ti * hid + col..][..hd];
                let s0 = (ti + 1).saturating_sub(past);
                logits.clear();
                let mut any_valid = false;
                for s in s0..=ti {
                    let d = ti - s;
                    let kv = &k[s * hid + col..][..hd];
                    let mut l = dot(qv, kv);
                    // Relative term: column max_past - d of the reference's shifted matrix.
                    if let Some(r) = max_past.checked_sub(d).filter(|&r| r < positions) {
                        l += dot(qv, &self.rel_k[r * hid + col..][..hd]);
                    }
                    let l = (l / cap).tanh() * cap;
                    if valid[s] {
                        any_valid = true;
                        logits.push(l);
                    } else {
                        logits.push(cfg.invalid_logit);
                    }
                }
                let o = &mut out[ti * hid + col..][..hd];
                if any_valid {
                    softmax(&mut logits);
                    for (s, &p) in (s0..=ti).zip(&logits) {
                        if p != 0.0 {
                            let vv = &v[s * hid + col..][..hd];
                            for (a, &b) in o.iter_mut().zip(vv) {
                                *a += p * b;
                            }
                        }
                    }
                } else {
                    // Every key masked: the reference's softmax is uniform over its whole
                    // `ctx`-key block window (out-of-range keys are zero vectors).
                    let b0 = ti / cfg.chunk * cfg.chunk;
                    let lo = b0.saturating_sub(max_past);
                    let hi = (b0 + ctx).saturating_sub(max_past).min(t);
                    let p = 1.0 / ctx as f32;
                    for s in lo..hi {
                        let vv = &v[s * hid + col..][..hd];
                        for (a, &b) in o.iter_mut().zip(vv) {
                            *a += p * b;
                        }
                    }
                }
            }
        }
        let mut y = vec![0f32; t * hid];
        self.post.forward(&out, t, &mut y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_table_rows_descend_to_zero() {
        let pe = relative_position_table(13, 8);
        // Last row is position 0: sin 0 = 0, cos 0 = 1.
        assert_eq!(&pe[12 * 8..], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        // Row 0 is position 12; τ_0 = 1 and τ_3 = 1e-4.
        assert!((pe[0] - 12f32.sin()).abs() < 1e-6);
        assert!((pe[3] - (12.0f32 * 1e-4).sin()).abs() < 1e-6);
        assert!((pe[4] - 12f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn softplus_matches_torch() {
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(softplus(30.0), 30.0);
        assert!((softplus(-3.0) - (1.0f32 + (-3.0f32).exp()).ln()).abs() < 1e-7);
    }
}
