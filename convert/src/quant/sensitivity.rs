//! Sensitivity scan: the KL cost of storing one text-stack matrix as int8 or int4 while every
//! other tensor stays unquantized, teacher-forced on the calibration text against the f32 model.
//!
//! Speed, so that the 270M scans in about a minute on 2 threads:
//! - candidates are in-memory overrides of the f32 reference file
//!   ([`cellm_engine::models::load_model_with`]): no file is written per candidate, and each
//!   candidate's bytes are encoded once ([`EncodedCache`]);
//! - the LM head is evaluated only on the vocabulary rows that carry the reference's probability
//!   mass, with the identity `KL(p‖q) = log Σ p_i e^{Δ_i} − Σ p_i Δ_i` (Δ = z_q − z_p, the logit
//!   change; exact when every row is used): the reference's top tokens up to `1 − TAIL_MASS` of
//!   its mass (at most `MAX_TOP`) plus `TAIL_SAMPLES` tokens drawn from the rest in proportion to
//!   p (stratified, deterministic), each weighted `tail_mass / TAIL_SAMPLES`. Models without a
//!   hidden-state output fall back to full logits (same formula, same rows).

use crate::error::ConvertError;
use crate::quant::encode::TensorEncoder;
use cellm_engine::format::CellmFile;
use cellm_engine::kv_cache::{KvCache, KvPrecision};
use cellm_engine::models::weights::TensorOverrides;
use cellm_engine::models::{self, Logits, ModelError, TextModel};
use cellm_engine::tensor::{DType, TensorView};
use rayon::prelude::*;
use std::collections::HashMap;

/// Probability mass left to the sampled tail.
pub const TAIL_MASS: f64 = 1e-4;
/// Most top tokens kept per position (high-entropy positions leave more to the tail).
pub const MAX_TOP: usize = 2048;
/// Tail tokens sampled per position.
pub const TAIL_SAMPLES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("running the model: {0}")]
    Model(#[from] ModelError),
    #[error(transparent)]
    Format(#[from] cellm_engine::format::FormatError),
    #[error(transparent)]
    Tensor(#[from] cellm_engine::tensor::TensorError),
    #[error("running the model: {0}")]
    Session(#[from] cellm_engine::session::SessionError),
    #[error("measuring fidelity: {0}")]
    Fidelity(#[from] crate::fidelity::FidelityError),
    #[error("the calibration text has no tokens")]
    EmptyCalibration,
    #[error("{0}")]
    Invalid(String),
}

/// One teacher-forced position of the reference: the vocabulary rows evaluated there.
struct RefPosition {
    /// Index into [`Evaluator::tokens`] of each evaluated token.
    rows: Vec<u32>,
    /// `p_i` for top tokens, `tail_mass / TAIL_SAMPLES` (summed over repeats) for sampled ones.
    weights: Vec<f64>,
    /// The reference logits of those tokens.
    z: Vec<f32>,
}

/// KL of one evaluated model against the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Kl {
    pub mean: f64,
    pub max: f64,
    pub positions: usize,
}

/// Runs models made of the reference file plus overrides and scores them against it.
pub struct Evaluator<'f> {
    file: &'f CellmFile,
    /// Full name of the tied embedding / LM head table.
    head_name: String,
    softcap: Option<f32>,
    hidden: usize,
    vocab: usize,
    /// Token sequences, at most `max_positions` tokens in all.
    segments: Vec<Vec<u32>>,
    positions: Vec<RefPosition>,
    /// Vocabulary ids of the evaluated rows (union over positions).
    tokens: Vec<u32>,
    /// The reference head rows of `tokens`, f32, `[tokens.len(), hidden]`.
    head_rows: Vec<f32>,
    /// False when the model has no hidden-state output (full logits are used).
    hidden_output: bool,
    /// Per segment, the reference's residual stream entering each decoder layer
    /// (`[layers][len][hidden]`); empty when the model cannot start mid-stack.
    taps: Vec<Vec<f32>>,
    /// Where every model run and KL sum runs (`threads` workers).
    pool: rayon::ThreadPool,
}

/// The embedding table the text stack's LM head is tied to.
pub fn head_name(file: &CellmFile) -> Result<String, ScanError> {
    for n in [
        "model.language_model.embed_tokens.weight",
        "model.embed_tokens.weight",
    ] {
        if file.contains(n) {
            return Ok(n.to_string());
        }
    }
    Err(ScanError::Invalid(
        "the model has no token embedding table".into(),
    ))
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

/// The evaluated (token, weight, reference logit) triples of one position's logits.
fn select_rows(z: &[f32]) -> Vec<(u32, f64, f32)> {
    let lse = log_sum_exp(z);
    let p: Vec<f64> = z.iter().map(|&v| (v as f64 - lse).exp()).collect();
    let mut top: Vec<u32> = (0..z.len() as u32)
        .filter(|&i| p[i as usize] >= 1e-9)
        .collect();
    top.sort_unstable_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]));
    let mut out = Vec::new();
    let mut taken = vec![false; z.len()];
    let mut mass = 0.0;
    for &i in &top {
        if mass >= 1.0 - TAIL_MASS || out.len() >= MAX_TOP {
            break;
        }
        mass += p[i as usize];
        taken[i as usize] = true;
        out.push((i, p[i as usize], z[i as usize]));
    }
    // The exact remaining mass, not 1 - mass (rounding).
    let tail: f64 = (0..z.len()).filter(|&i| !taken[i]).map(|i| p[i]).sum();
    if tail <= 1e-12 {
        return out;
    }
    // Stratified draws u_k = (k + 1/2) / R of the tail's cumulative mass.
    let w = tail / TAIL_SAMPLES as f64;
    let mut k = 0;
    let mut cum = 0.0;
    let mut sampled: Vec<(u32, f64, f32)> = Vec::new();
    for i in 0..z.len() {
        if taken[i] {
            continue;
        }
        cum += p[i];
        while k < TAIL_SAMPLES && (k as f64 + 0.5) * w <= cum {
            match sampled.last_mut() {
                Some(last) if last.0 == i as u32 => last.1 += w,
                _ => sampled.push((i as u32, w, z[i])),
            }
            k += 1;
        }
    }
    out.extend(sampled);
    out
}

/// `log Σ w e^{Δ} − Σ w Δ`, computed stably; never below 0.
fn kl_from_deltas(weights: &[f64], deltas: &[f64]) -> f64 {
    let m = deltas.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return 0.0;
    }
    let (mut se, mut sl, mut sw) = (0.0, 0.0, 0.0);
    for (&w, &d) in weights.iter().zip(deltas) {
        se += w * (d - m).exp();
        sl += w * d;
        sw += w;
    }
    // The weights sum to 1 up to rounding; normalizing keeps KL(p‖p) = 0 exactly.
    (m + (se / sw).ln() - sl / sw).max(0.0)
}

/// A KV cache sized for sequences of at most `longest` tokens.
fn cache_for(model: &dyn TextModel, longest: usize) -> KvCache {
    let cfg = model.config();
    KvCache::new(
        cfg,
        longest.max(1) + 1,
        models::chunk_size(cfg),
        KvPrecision::F32,
    )
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    cellm_engine::kernels::cpu::dot(a, b)
}

impl<'f> Evaluator<'f> {
    /// Runs the reference (`file` without overrides) over `segments` and keeps, per position,
    /// the rows to evaluate. `on_segment(done, total)` reports progress.
    pub fn new(
        file: &'f CellmFile,
        segments: Vec<Vec<u32>>,
        threads: Option<usize>,
        on_segment: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ScanError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .build()
            .map_err(|e| ScanError::Invalid(format!("thread pool: {e}")))?;
        let segments: Vec<Vec<u32>> = segments.into_iter().filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return Err(ScanError::EmptyCalibration);
        }
        let head_name = head_name(file)?;
        let mut model = models::load_model(file)?;
        let (hidden, vocab, softcap) = {
            let c = model.config();
            (c.hidden_size, c.vocab_size, c.final_softcap)
        };
        let longest = segments.iter().map(Vec::len).max().unwrap_or(1);
        let mut cache = cache_for(model.as_ref(), longest);
        let hidden_output = match model.forward_hidden(&[], 0, &mut cache) {
            Ok(_) => true,
            Err(ModelError::NotSupported(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let mut index: HashMap<u32, u32> = HashMap::new();
        let mut tokens: Vec<u32> = Vec::new();
        let mut positions = Vec::new();
        let mut taps = Vec::new();
        for (si, seg) in segments.iter().enumerate() {
            on_segment(si, segments.len());
            if hidden_output {
                let mut t = Vec::new();
                cache.clear();
                let run = pool.install(|| {
                    model
                        .forward_hidden_taps(seg, 0, &mut cache, &mut t)
                        .map(|_| ())
                });
                match run {
                    Ok(_) => taps.push(t),
                    Err(ModelError::NotSupported(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            cache.clear();
            let picked: Vec<Vec<(u32, f64, f32)>> = pool.install(|| {
                let logits = model.forward(seg, None, 0, &mut cache, Logits::All)?;
                Ok::<_, ModelError>(logits.par_chunks_exact(vocab).map(select_rows).collect())
            })?;
            for rows in picked {
                let mut rp = RefPosition {
                    rows: Vec::with_capacity(rows.len()),
                    weights: Vec::with_capacity(rows.len()),
                    z: Vec::with_capacity(rows.len()),
                };
                for (tok, w, z) in rows {
                    let next = tokens.len() as u32;
                    let r = *index.entry(tok).or_insert_with(|| {
                        tokens.push(tok);
                        next
                    });
                    rp.rows.push(r);
                    rp.weights.push(w);
                    rp.z.push(z);
                }
                positions.push(rp);
            }
        }
        on_segment(segments.len(), segments.len());
        drop(model);
        let table = file.tensor(&head_name)?;
        let head_rows = pool.install(|| compact_rows(&table, &tokens));
        Ok(Self {
            file,
            head_name,
            softcap,
            hidden,
            vocab,
            segments,
            positions,
            tokens,
            head_rows,
            hidden_output,
            taps,
            pool,
        })
    }

    /// Teacher-forced positions available.
    pub fn positions(&self) -> usize {
        self.positions.len()
    }

    /// Name of the tied embedding / LM head table.
    pub fn head(&self) -> &str {
        &self.head_name
    }

    /// The reference file.
    pub fn file(&self) -> &'f CellmFile {
        self.file
    }

    /// KL of the reference file with `overrides` over its first `max_positions` positions.
    /// `first_layer`: the overrides touch nothing before this decoder layer (not even the
    /// embedding), so the run starts there from the reference's residual stream.
    pub fn kl(
        &self,
        overrides: &TensorOverrides,
        max_positions: usize,
        first_layer: Option<usize>,
    ) -> Result<Kl, ScanError> {
        self.pool
            .install(|| self.kl_here(overrides, max_positions, first_layer))
    }

    /// Runs `f` on this evaluator's worker threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn kl_here(
        &self,
        overrides: &TensorOverrides,
        max_positions: usize,
        first_layer: Option<usize>,
    ) -> Result<Kl, ScanError> {
        let n = max_positions.min(self.positions.len());
        let mut model = models::load_model_with(self.file, overrides)?;
        let longest = self.segments.iter().map(Vec::len).max().unwrap_or(1);
        let mut cache = cache_for(model.as_ref(), longest);
        // An overridden head table: its rows, dequantized once.
        let own_rows = overrides
            .get(&self.head_name)
            .map(|t| compact_rows(&t, &self.tokens));
        let rows = own_rows.as_deref().unwrap_or(&self.head_rows);
        // The engine quantizes the LM head's input for int8 / int4 tables; so does the scan.
        let quantized_head = overrides
            .get(&self.head_name)
            .is_some_and(|t| matches!(t.dtype, DType::Q8 | DType::Q4));
        let from_taps = first_layer.filter(|_| self.taps.len() == self.segments.len());
        let (h, v) = (self.hidden, self.vocab);
        let mut kl = Kl::default();
        let mut sum = 0.0;
        let mut at = 0;
        for (si, seg) in self.segments.iter().enumerate() {
            if at >= n {
                break;
            }
            let take = seg.len().min(n - at);
            cache.clear();
            let out = if let Some(l) = from_taps {
                let x = &self.taps[si][l * seg.len() * h..(l * seg.len() + take) * h];
                model.forward_hidden_from(l, x, 0, &mut cache)?
            } else if self.hidden_output {
                model.forward_hidden(&seg[..take], 0, &mut cache)?
            } else {
                model.forward(&seg[..take], None, 0, &mut cache, Logits::All)?
            };
            let per: Vec<f64> = (0..take)
                .into_par_iter()
                .map(|j| {
                    let rp = &self.positions[at + j];
                    let xq;
                    let xj = if self.hidden_output && quantized_head {
                        xq = quantize_acts(&out[j * h..(j + 1) * h]);
                        &xq[..]
                    } else if self.hidden_output {
                        &out[j * h..(j + 1) * h]
                    } else {
                        &[][..]
                    };
                    let deltas: Vec<f64> = rp
                        .rows
                        .iter()
                        .zip(&rp.z)
                        .map(|(&r, &z)| {
                            let zq = if self.hidden_output {
                                let r = r as usize;
                                let x = dot(&rows[r * h..(r + 1) * h], xj);
                                match self.softcap {
                                    Some(c) => c * (x / c).tanh(),
                                    None => x,
                                }
                            } else {
                                out[j * v + self.tokens[r as usize] as usize]
                            };
                            zq as f64 - z as f64
                        })
                        .collect();
                    kl_from_deltas(&rp.weights, &deltas)
                })
                .collect();
            for k in per {
                sum += k;
                kl.max = kl.max.max(k);
            }
            at += take;
        }
        kl.positions = at;
        kl.mean = if at > 0 { sum / at as f64 } else { 0.0 };
        Ok(kl)
    }
}

/// `x` as the int8 / int4 matmul kernels see it: int8 per block of 32, scale max|x| / 127,
/// round half to even (engine `kernels::cpu::matmul::acts`).
fn quantize_acts(x: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    for b in out.chunks_mut(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let scale = amax / 127.0;
        for v in b {
            *v = (*v * inv).round_ties_even().clamp(-127.0, 127.0) * scale;
        }
    }
    out
}

/// Rows `tokens` of a `[vocab, hidden]` table as f32.
fn compact_rows(table: &TensorView<'_>, tokens: &[u32]) -> Vec<f32> {
    let h = table.cols();
    let mut out = vec![0f32; tokens.len() * h];
    if h == 0 {
        return out;
    }
    out.par_chunks_mut(h)
        .zip(tokens.par_iter())
        .for_each(|(row, &t)| table.row_to_f32(t as usize, row));
    out
}

/// Encoded bytes of candidate tensors, made once per (tensor, dtype) from the f32 reference.
#[derive(Default)]
pub struct EncodedCache {
    map: HashMap<(String, DType), Vec<u8>>,
}

impl EncodedCache {
    /// The bytes of `name` from `file` (an f32 file) stored as `dtype` with `group_size`.
    pub fn get(
        &mut self,
        file: &CellmFile,
        name: &str,
        dtype: DType,
        group_size: usize,
    ) -> Result<&[u8], ScanError> {
        let key = (name.to_string(), dtype);
        if !self.map.contains_key(&key) {
            let t = file.tensor(name)?;
            let values = match t.as_f32() {
                Some(v) => std::borrow::Cow::Borrowed(v),
                None => std::borrow::Cow::Owned(t.to_f32_vec()),
            };
            let group = if dtype.is_quantized() { group_size } else { 0 };
            let mut enc = TensorEncoder::new(dtype, t.shape, group)?;
            enc.push_rows(&values)?;
            self.map.insert(key.clone(), enc.finish()?);
        }
        Ok(self.map.get(&key).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// Puts `name` as `dtype` into `overrides` (F32 removes the override: the file is f32).
    pub fn apply(
        &mut self,
        file: &CellmFile,
        overrides: &mut TensorOverrides,
        name: &str,
        dtype: DType,
        group_size: usize,
    ) -> Result<(), ScanError> {
        if dtype == DType::F32 {
            overrides.remove(name);
            return Ok(());
        }
        let shape = file.tensor_entry(name)?.shape.clone();
        let group = if dtype.is_quantized() { group_size } else { 0 };
        if dtype == DType::F16 {
            // Cheap to redo, and caching it would hold a second copy of the whole model.
            let t = file.tensor(name)?;
            let values = match t.as_f32() {
                Some(v) => std::borrow::Cow::Borrowed(v),
                None => std::borrow::Cow::Owned(t.to_f32_vec()),
            };
            let bytes = cellm_engine::tensor::encode(DType::F16, &values, &shape, 0)?;
            overrides.insert(name, dtype, &shape, 0, &bytes)?;
            return Ok(());
        }
        let bytes = self.get(file, name, dtype, group_size)?;
        overrides.insert(name, dtype, &shape, group, bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_kl(p: &[f32], q: &[f32]) -> f64 {
        let (lp, lq) = (log_sum_exp(p), log_sum_exp(q));
        p.iter()
            .zip(q)
            .map(|(&a, &b)| {
                let la = a as f64 - lp;
                la.exp() * (la - (b as f64 - lq))
            })
            .sum()
    }

    /// Pseudo-random logits with a few dominant tokens.
    fn logits(n: usize, seed: u32, peak: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32;
                u * 4.0 + if i % 97 == 3 { peak } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn subset_kl_matches_the_full_kl() {
        for (n, peak) in [(50usize, 2.0f32), (5000, 6.0), (40000, 9.0)] {
            let p = logits(n, 1, peak);
            let noise = logits(n, 7, 0.0);
            let q: Vec<f32> = p
                .iter()
                .zip(&noise)
                .map(|(a, b)| a + 0.1 * (b - 2.0))
                .collect();
            let rows = select_rows(&p);
            let w: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let d: Vec<f64> = rows
                .iter()
                .map(|r| q[r.0 as usize] as f64 - r.2 as f64)
                .collect();
            let (got, want) = (kl_from_deltas(&w, &d), full_kl(&p, &q));
            assert!(
                (got - want).abs() <= 0.02 * want + 1e-7,
                "n {n}: subset {got} vs full {want}"
            );
            // Same model: exactly zero.
            let zero: Vec<f64> = vec![0.0; w.len()];
            assert_eq!(kl_from_deltas(&w, &zero), 0.0);
        }
    }

    #[test]
    fn selection_keeps_the_mass() {
        let p = logits(30000, 3, 8.0);
        let rows = select_rows(&p);
        let total: f64 = rows.iter().map(|r| r.1).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!(rows.len() <= MAX_TOP + TAIL_SAMPLES);
        // A small vocabulary is kept whole (no tail).
        let small = logits(40, 5, 1.0);
        assert_eq!(select_rows(&small).len(), 40);
    }

    #[test]
    fn kl_from_deltas_hand_value() {
        // p = [1/4, 3/4], q = [1/2, 1/2]: z_p = [0, ln 3], z_q = [0, 0] -> Δ = [0, -ln 3].
        let got = kl_from_deltas(&[0.25, 0.75], &[0.0, -(3f64.ln())]);
        let want = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}
