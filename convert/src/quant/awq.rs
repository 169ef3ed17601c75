//! AWQ-lite (activation-aware weight quantization; Lin et al., "AWQ", 2023) for the `awq-int4`
//! profile.
//!
//! For each group of text-stack linears sharing one input X — q/k/v after `input_layernorm`,
//! gate/up after `pre_feedforward_layernorm`, down after `gelu(gate) ⊙ up` — a per-input-channel
//! scale `s = mean|x|^alpha` (normalised to geometric mean 1 over max and min) is searched on a
//! grid of alpha in [0, 1]: the weights become `W diag(s)`, are quantized with the ordinary q4
//! encoder, and the output error `||X Wᵀ - (X diag(1/s)) Q(W diag(s))ᵀ||²` on sampled calibration
//! rows picks alpha (alpha = 0 is plain int4, so the choice is never worse on those rows).
//!
//! `1/s` is folded where inference cost stays unchanged and the fold is exact in floats: into the
//! preceding RMSNorm weight (kept f32; Gemma 3 norms scale by `1 + w`, Gemma 4 norms by `w`), and
//! for down_proj into up_proj's output rows (`gelu(g) ⊙ (u / s) = (gelu(g) ⊙ u) / s`).
//!
//! Not scaled: o_proj (its input is the attention output; Gemma 4's weightless value norm leaves
//! no weight to fold into), the embeddings / tied LM head, and the PLE projections. They are
//! plain int4, as in the `int4` profile, so both profiles give files of the same size.

use crate::convert::{ConvertOptions, convert};
use crate::error::ConvertError;
use crate::quant::Profile;
use crate::source::Source;
use cellm_engine::calibrate::{self, Calibration, CalibrationOptions, TapStats};
use cellm_engine::format::{CellmFile, TensorPlan};
use cellm_engine::models::common::Tap;
use cellm_engine::tensor::DType;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Points of the alpha grid: 0, 0.05, ..., 1.
pub const GRID_POINTS: usize = 21;

/// Mean |x| floor, relative to the largest channel mean: a channel silent on the calibration
/// text must not get a huge `1/s` folded into its norm.
const MEAN_FLOOR: f32 = 1e-3;

/// A change applied to one tensor's f32 values before it is encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorTransform {
    /// Column `j` of every row is multiplied by `col_scale[j]` (`W diag(s)`).
    pub col_scale: Option<Vec<f32>>,
    /// Row `i` is multiplied by `row_scale[i]` (up_proj rows take down_proj's `1/s`).
    pub row_scale: Option<Vec<f32>>,
    /// An RMSNorm weight divided by these scales (with the `1 + w` flavour when `plus_one`).
    pub norm_div: Option<(Vec<f32>, bool)>,
}

impl TensorTransform {
    /// Transforms rows `row0..` of a tensor with `cols` columns, in place.
    pub fn apply(&self, values: &mut [f32], row0: usize, cols: usize) -> Result<(), ConvertError> {
        let bad = |what: &str| {
            ConvertError::Invalid(format!("AWQ transform: {what} does not fit the tensor"))
        };
        if cols == 0 {
            return Ok(());
        }
        if let Some(c) = &self.col_scale {
            if c.len() != cols {
                return Err(bad("column scale"));
            }
            for row in values.chunks_exact_mut(cols) {
                for (v, s) in row.iter_mut().zip(c) {
                    *v *= s;
                }
            }
        }
        if let Some(r) = &self.row_scale {
            for (i, row) in values.chunks_exact_mut(cols).enumerate() {
                let s = *r.get(row0 + i).ok_or_else(|| bad("row scale"))?;
                for v in row {
                    *v *= s;
                }
            }
        }
        if let Some((d, plus_one)) = &self.norm_div {
            if d.len() != values.len() {
                return Err(bad("norm scale"));
            }
            for (v, s) in values.iter_mut().zip(d) {
                *v = if *plus_one {
                    (1.0 + *v) / s - 1.0
                } else {
                    *v / s
                };
            }
        }
        Ok(())
    }
}

/// Scales of one alpha: `m^alpha` with `m` the floored channel means, divided by
/// `sqrt(max * min)` so they straddle 1.
pub fn scales_for(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
    let top = mean_abs.iter().fold(0f32, |a, &b| a.max(b));
    if top <= 0.0 || !top.is_finite() || alpha == 0.0 {
        return vec![1.0; mean_abs.len()];
    }
    let floor = top * MEAN_FLOOR;
    let s: Vec<f32> = mean_abs.iter().map(|&m| m.max(floor).powf(alpha)).collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter().map(|v| v / norm).collect()
}

/// One linear of a group: `[rows, cols]` f32 weights and how they are stored.
pub struct Member<'a> {
    pub weights: &'a [f32],
    pub rows: usize,
    pub dtype: DType,
    pub group_size: usize,
}

/// The dtypes the search models (q8/q4 with their group encoder); others count as exact.
fn is_q(d: DType) -> bool {
    matches!(d, DType::Q8 | DType::Q4)
}

/// Rows of weights handled per rayon task.
const ROWS_PER_TASK: usize = 16;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums: vectorizes without fast-math.
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `f32::round` (half away from zero) without a libm call (the default x86-64 target has no
/// SSE4.1 rounding instruction); exact for the |v| < 2^22 the quantizers see, except where
/// `v + 0.5` itself rounds up.
#[inline(always)]
fn round(v: f32) -> f32 {
    (v + 0.5f32.copysign(v)) as i32 as f32
}

/// Squared error of a group quantized to int4 with step `d` (as the engine's encoder).
fn group_error_q4(src: &[f32], d: f32) -> f32 {
    if d == 0.0 {
        return src.iter().map(|x| x * x).sum();
    }
    let inv = 1.0 / d;
    // Eight partial sums so the loop vectorizes (the engine sums in order; the difference is
    // float rounding, which at most flips a near-tie between candidate steps).
    let mut acc = [0f32; 8];
    let (chunks, rest) = src.as_chunks::<8>();
    for c in chunks {
        for k in 0..8 {
            let e = c[k] - round(c[k] * inv).clamp(-8.0, 7.0) * d;
            acc[k] += e * e;
        }
    }
    let tail: f32 = rest
        .iter()
        .map(|&x| {
            let e = x - round(x * inv).clamp(-8.0, 7.0) * d;
            e * e
        })
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `(Σ x q, Σ q²)` with `q = clamp(round(x · iscale), -8, 7)`, in eight partial sums.
fn q4_moments(src: &[f32], iscale: f32) -> (f32, f32) {
    let (mut sxq, mut sqq) = ([0f32; 8], [0f32; 8]);
    let (chunks, rest) = src.as_chunks::<8>();
    for c in chunks {
        for k in 0..8 {
            let q = round(c[k] * iscale).clamp(-8.0, 7.0);
            sxq[k] += c[k] * q;
            sqq[k] += q * q;
        }
    }
    let (mut a, mut b) = (sxq.iter().sum::<f32>(), sqq.iter().sum::<f32>());
    for &x in rest {
        let q = round(x * iscale).clamp(-8.0, 7.0);
        a += x * q;
        b += q * q;
    }
    (a, b)
}

/// One group through the engine's q4 encoder and back (`cellm_engine::tensor::quant`: the
/// largest-magnitude value mapped near -8 with 11 step sizes, least-squares refit, f16 step),
/// re-implemented with [`round`]: the search quantizes every weight once per alpha, and the
/// libm rounding call made that most of the conversion time.
fn fake_q4(src: &[f32], out: &mut [f32]) {
    let m = src
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let mut best = (f32::INFINITY, 0f32);
    if m != 0.0 {
        for k in -5..=5 {
            let iscale = -(8.0 + 0.2 * k as f32) / m;
            let (sxq, sqq) = q4_moments(src, iscale);
            if sqq == 0.0 {
                continue;
            }
            let d = half::f16::from_f32(sxq / sqq).to_f32();
            let err = group_error_q4(src, d);
            if err < best.0 {
                best = (err, d);
            }
        }
    }
    let d = best.1;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (o, &x) in out.iter_mut().zip(src) {
        *o = round(x * inv).clamp(-8.0, 7.0) * d;
    }
}

/// One group through the engine's q8 encoder (step f16(max|x| / 127)) and back.
fn fake_q8(src: &[f32], out: &mut [f32]) {
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, &x) in out.iter_mut().zip(src) {
        *o = round(x * inv).clamp(-127.0, 127.0) * d;
    }
}

/// `values` quantized with `dtype` groups of `gs` and dequantized, in place.
fn fake_quant(dtype: DType, values: &mut [f32], gs: usize) {
    let mut out = vec![0f32; gs];
    for g in values.chunks_exact_mut(gs) {
        match dtype {
            DType::Q4 => fake_q4(g, &mut out),
            _ => fake_q8(g, &mut out),
        }
        g.copy_from_slice(&out);
    }
}

/// `||X Wᵀ - (X diag(1/s)) Q(W diag(s))ᵀ||²` for `x` `[n, cols]`; 0 for float members.
pub fn output_error(x: &[f32], m: &Member<'_>, s: &[f32]) -> Result<f64, ConvertError> {
    if !is_q(m.dtype) {
        return Ok(0.0);
    }
    let cols = s.len();
    if cols == 0
        || m.weights.len() != m.rows * cols
        || !x.len().is_multiple_of(cols)
        || m.group_size == 0
        || !cols.is_multiple_of(m.group_size)
    {
        return Err(ConvertError::Invalid(
            "AWQ: weights, scales and rows disagree in width".into(),
        ));
    }
    let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
    let parts: Vec<f64> = m
        .weights
        .par_chunks(ROWS_PER_TASK * cols)
        .map(|w| -> Result<f64, ConvertError> {
            let k = w.len() / cols;
            let mut q: Vec<f32> = w
                .chunks_exact(cols)
                .flat_map(|row| row.iter().zip(s).map(|(a, b)| a * b))
                .collect();
            debug_assert_eq!(q.len(), k * cols);
            fake_quant(m.dtype, &mut q, m.group_size);
            // d = Q(W s) / s - W: the error of the effective weights.
            let mut d = vec![0f32; cols];
            let mut err = 0f64;
            for (qr, wr) in q.chunks_exact(cols).zip(w.chunks_exact(cols)) {
                for j in 0..cols {
                    d[j] = qr[j] * inv[j] - wr[j];
                }
                for xr in x.chunks_exact(cols) {
                    let e = dot(xr, &d) as f64;
                    err += e * e;
                }
            }
            Ok(err)
        })
        .collect::<Result<_, _>>()?;
    Ok(parts.iter().sum())
}

/// The outcome of the alpha search of one group.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub alpha: f32,
    pub scales: Vec<f32>,
    /// Output error with the chosen scales and with none (plain int4).
    pub error: f64,
    pub base_error: f64,
}

/// Grid search of alpha over `points` values in [0, 1] (at least 2). Every point is tried: on
/// small matrices the error is far from unimodal in alpha.
pub fn search(
    x: &[f32],
    mean_abs: &[f32],
    members: &[Member<'_>],
    points: usize,
) -> Result<SearchResult, ConvertError> {
    let last = points.max(2) - 1;
    let mut best = (0usize, f64::INFINITY);
    let mut base_error = 0.0;
    for i in 0..=last {
        let s = scales_for(mean_abs, i as f32 / last as f32);
        let mut error = 0.0;
        for m in members {
            error += output_error(x, m, &s)?;
        }
        if i == 0 {
            base_error = error;
        }
        if error < best.1 {
            best = (i, error);
        }
    }
    let alpha = best.0 as f32 / last as f32;
    Ok(SearchResult {
        alpha,
        scales: scales_for(mean_abs, alpha),
        error: best.1,
        base_error,
    })
}

/// What the AWQ step decided: transforms of tensors by name, and notes for the header.
#[derive(Clone, Debug, Default)]
pub struct AwqPlan {
    pub transforms: BTreeMap<String, TensorTransform>,
    pub notes: Vec<String>,
}

/// How to read and store the tensors the search needs.
pub trait WeightSource {
    /// f32 values of a tensor, row-major.
    fn weights(&self, name: &str) -> Result<Vec<f32>, ConvertError>;
    /// Stored dtype and group size, or None when the tensor does not exist.
    fn stored_as(&self, name: &str) -> Option<(DType, usize)>;
}

fn short(tap: Tap) -> &'static str {
    match tap {
        Tap::AttnInput => "qkv",
        Tap::MlpInput => "gate/up",
        Tap::DownInput => "down",
    }
}

/// `model.layers.3.self_attn.q_proj.weight` -> `model.layers.3`.
fn layer_prefix(linear: &str, layer: usize) -> Option<String> {
    let key = format!(".layers.{layer}.");
    let at = linear.find(&key)?;
    Some(linear[..at + key.len() - 1].to_string())
}

/// Output rows per linear on which the search measures the error: an evenly spaced subset of
/// a larger matrix (Gemma 4 E2B's 6144- and 12288-row MLPs) bounds the quantization work. No
/// 270M matrix is cut; cutting its MLPs to 512 rows halved the search time but moved alphas by
/// up to 0.15 and cost KL (0.222 -> 0.241 on testdata/prompts).
pub const MAX_OUTPUT_ROWS: usize = 2048;

/// At most `max` evenly spaced rows of `[rows, cols]` weights `w`.
fn every_nth_row(w: Vec<f32>, cols: usize, max: usize) -> Vec<f32> {
    let rows = w.len() / cols.max(1);
    if rows <= max || cols == 0 {
        return w;
    }
    let step = rows.div_ceil(max);
    w.chunks_exact(cols)
        .step_by(step)
        .flatten()
        .copied()
        .collect()
}

/// The tensor `1/s` is folded into for a tap, or None when the tap is not scaled.
fn fold_target(stats: &TapStats) -> Option<String> {
    let first = stats.linears.first()?;
    let p = layer_prefix(first, stats.layer)?;
    Some(match stats.tap {
        Tap::AttnInput => format!("{p}.input_layernorm.weight"),
        Tap::MlpInput => format!("{p}.pre_feedforward_layernorm.weight"),
        Tap::DownInput => format!("{p}.mlp.up_proj.weight"),
    })
}

/// Searches every tap of `calib` and returns the transforms. `plus_one`: the family's norms scale
/// by `1 + w` (Gemma 3). `on_tap` gets a short status before each group.
pub fn plan_awq(
    calib: &Calibration,
    weights: &dyn WeightSource,
    plus_one: bool,
    points: usize,
    on_tap: &mut dyn FnMut(&str) -> Result<(), ConvertError>,
) -> Result<AwqPlan, ConvertError> {
    let mut plan = AwqPlan::default();
    let mut per_layer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let (mut err_sum, mut base_sum) = (0f64, 0f64);
    for stats in &calib.taps {
        let label = format!("layer {} {}", stats.layer, short(stats.tap));
        on_tap(&label)?;
        let Some(target) = fold_target(stats) else {
            continue;
        };
        // The fold target must be an f32 norm (exact) or, for down, the up_proj rows.
        let target_ok = matches!(
            (stats.tap, weights.stored_as(&target)),
            (Tap::DownInput, Some(_)) | (_, Some((DType::F32, _)))
        );
        let stored: Vec<(String, DType, usize)> = stats
            .linears
            .iter()
            .filter_map(|n| weights.stored_as(n).map(|(d, g)| (n.clone(), d, g)))
            .collect();
        let quantized = stored.iter().any(|(_, d, _)| is_q(*d));
        if !target_ok || !quantized || stats.sampled_rows() == 0 {
            continue;
        }
        let values: Vec<Vec<f32>> = stored
            .iter()
            .map(|(n, _, _)| {
                weights
                    .weights(n)
                    .map(|w| every_nth_row(w, stats.width, MAX_OUTPUT_ROWS))
            })
            .collect::<Result<_, _>>()?;
        let members: Vec<Member<'_>> = stored
            .iter()
            .zip(&values)
            .map(|((_, dtype, gs), w)| Member {
                weights: w,
                rows: w.len() / stats.width.max(1),
                dtype: *dtype,
                group_size: *gs,
            })
            .collect();
        let r = search(&stats.rows, &stats.mean_abs, &members, points)?;
        err_sum += r.error;
        base_sum += r.base_error;
        let gain = if r.base_error > 0.0 {
            100.0 * (1.0 - r.error / r.base_error)
        } else {
            0.0
        };
        per_layer.entry(stats.layer).or_default().push(format!(
            "{} {:.2} (-{gain:.0}%)",
            short(stats.tap),
            r.alpha
        ));
        if r.alpha == 0.0 {
            continue;
        }
        for (name, _, _) in &stored {
            let t = plan.transforms.entry(name.clone()).or_default();
            t.col_scale = Some(r.scales.clone());
        }
        let t = plan.transforms.entry(target).or_default();
        if stats.tap == Tap::DownInput {
            t.row_scale = Some(r.scales.iter().map(|s| 1.0 / s).collect());
        } else {
            t.norm_div = Some((r.scales, plus_one));
        }
    }
    let total = if base_sum > 0.0 {
        100.0 * (1.0 - err_sum / base_sum)
    } else {
        0.0
    };
    plan.notes.push(format!(
        "awq: {} calibration tokens, <= {} sampled rows per input, alpha grid of {points} in [0, 1]; \
         output error on the sampled rows -{total:.1}% vs plain int4; o_proj, embeddings and PLE \
         are plain int4",
        calib.tokens,
        calib.taps.iter().map(TapStats::sampled_rows).max().unwrap_or(0),
    ));
    for (layer, parts) in per_layer {
        plan.notes
            .push(format!("awq layer {layer}: alpha {}", parts.join(", ")));
    }
    Ok(plan)
}

/// The calibration text of an AWQ conversion.
#[derive(Clone, Debug)]
pub struct CalibrationText {
    /// Shown in the header, e.g. "assets/calibration.txt".
    pub name: String,
    pub text: String,
}

impl Default for CalibrationText {
    fn default() -> Self {
        Self {
            name: crate::fidelity::DEFAULT_CALIBRATION_NAME.to_string(),
            text: crate::fidelity::DEFAULT_CALIBRATION.to_string(),
        }
    }
}

/// Reads tensors from the checkpoint and their stored dtype from the conversion plan.
struct PlannedWeights<'a> {
    source: &'a dyn Source,
    stored: BTreeMap<&'a str, (DType, usize)>,
}

impl WeightSource for PlannedWeights<'_> {
    fn weights(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        self.source.read_f32(name)
    }
    fn stored_as(&self, name: &str) -> Option<(DType, usize)> {
        self.stored.get(name).copied()
    }
}

/// Removes the temporary folder however `prepare` ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp folder is not worth failing the conversion for.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Float files above this many bytes of f32 are written as f16 for calibration.
const F32_REFERENCE_LIMIT: u64 = 8 << 30;

/// The AWQ step of an `awq-int4` conversion: converts `source` to a temporary float `.cellm`,
/// runs the CPU model over the calibration text for activation statistics, and searches the
/// scales of every group against `plans` (the dtypes the output will store).
pub fn prepare(
    source: &dyn Source,
    plans: &[TensorPlan],
    calibration: &CalibrationText,
    cancel: &Arc<AtomicBool>,
    status: &mut dyn FnMut(&str),
) -> Result<AwqPlan, ConvertError> {
    let dir = std::env::temp_dir().join(format!(
        "cellm-awq-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| ConvertError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let dir = TempDir(dir);
    let f32_bytes: u64 = plans
        .iter()
        .map(|p| p.shape.iter().product::<usize>() as u64 * 4)
        .sum();
    let float = if f32_bytes <= F32_REFERENCE_LIMIT {
        Profile::F32
    } else {
        Profile::F16
    };
    status(&format!("awq: writing a temporary {float} copy"));
    let reference = dir.0.join(format!("calibration-{float}.cellm"));
    let mut opts = ConvertOptions::new(float);
    opts.cancel = cancel.clone();
    convert(source, &reference, &opts, &mut |_| {})?;

    status("awq: collecting activation statistics");
    let file = CellmFile::open(&reference)?;
    let calib = calibrate::collect(&file, &calibration.text, &CalibrationOptions::default())
        .map_err(|e| ConvertError::Invalid(format!("AWQ calibration: {e}")))?;
    drop(file);

    let weights = PlannedWeights {
        source,
        stored: plans
            .iter()
            .map(|p| (p.name.as_str(), (p.dtype, p.group_size)))
            .collect(),
    };
    let plus_one = source.family().starts_with("gemma3");
    let mut plan = plan_awq(&calib, &weights, plus_one, GRID_POINTS, &mut |label| {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Cancelled);
        }
        status(&format!("awq: searching {label}"));
        Ok(())
    })?;
    plan.notes.insert(
        0,
        format!(
            "awq calibration: {}",
            crate::fidelity::calibration_label(&calibration.name, &calibration.text)
        ),
    );
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellm_engine::tensor::{TensorView, encode};

    /// Deterministic values in [-1, 1).
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// X [n, cols] with a few channels 30x larger than the rest (the outliers AWQ protects).
    fn activations(n: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let mut x = noise(n * cols, 3);
        for row in x.chunks_exact_mut(cols) {
            for j in [3, 17, 40, 41] {
                row[j] *= 30.0;
            }
        }
        let mut mean = vec![0f32; cols];
        for row in x.chunks_exact(cols) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v.abs() / n as f32;
            }
        }
        (x, mean)
    }

    /// `x wᵀ`, accumulated in f64 so the comparisons see only the stored weights' rounding.
    fn matmul_t(x: &[f32], w: &[f32], cols: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for xr in x.chunks_exact(cols) {
            for wr in w.chunks_exact(cols) {
                let d: f64 = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
                out.push(d as f32);
            }
        }
        out
    }

    #[test]
    fn awq_beats_plain_int4_on_outlier_channels() {
        let (rows, cols, n) = (48, 64, 40);
        let (x, mean) = activations(n, cols);
        let w = noise(rows * cols, 9);
        let m = Member {
            weights: &w,
            rows,
            dtype: DType::Q4,
            group_size: 32,
        };
        let r = search(&x, &mean, &[m], GRID_POINTS).unwrap();
        assert!(r.alpha > 0.0, "alpha {}", r.alpha);
        assert!(
            r.error < 0.9 * r.base_error,
            "{} vs {}",
            r.error,
            r.base_error
        );
        // The error reported for alpha 0 is the one of plain q4 through the engine's dequantizer.
        let q = encode(DType::Q4, &w, &[rows, cols], 32).unwrap();
        let deq = TensorView::new(DType::Q4, &[rows, cols], 32, &q)
            .unwrap()
            .to_f32_vec();
        let (a, b) = (matmul_t(&x, &w, cols), matmul_t(&x, &deq, cols));
        let plain: f64 = a
            .iter()
            .zip(&b)
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum();
        assert!(
            (plain - r.base_error).abs() <= 1e-3 * plain,
            "{plain} vs {}",
            r.base_error
        );
    }

    #[test]
    fn alpha_zero_is_identity() {
        assert_eq!(scales_for(&[0.5, 2.0, 0.0], 0.0), vec![1.0; 3]);
        let s = scales_for(&[1.0, 4.0], 1.0);
        // geometric normalisation: [1/2, 2]
        assert!(
            (s[0] - 0.5).abs() < 1e-6 && (s[1] - 2.0).abs() < 1e-6,
            "{s:?}"
        );
    }

    /// Without quantization, folding 1/s into the norm (both flavours) and into up_proj rows
    /// gives the original outputs.
    #[test]
    fn float_fold_round_trip() {
        let (h, inter, t) = (64, 96, 5);
        let eps = 1e-6f32;
        let x = noise(t * h, 1);
        // Gains away from 0 (as in real checkpoints): `(1 + w) / s - 1` in f32 keeps the absolute
        // precision of w, which is all of it unless 1 + w is near 0.
        let norm_w: Vec<f32> = noise(h, 2).iter().map(|v| 0.5 + 0.5 * v).collect();
        let (wg, wu, wd) = (
            noise(inter * h, 4),
            noise(inter * h, 5),
            noise(h * inter, 6),
        );
        let mean_h: Vec<f32> = (0..h).map(|j| 0.1 + (j % 7) as f32).collect();
        let mean_i: Vec<f32> = (0..inter).map(|j| 0.2 + (j % 5) as f32 * 3.0).collect();
        let (s1, s2) = (scales_for(&mean_h, 0.7), scales_for(&mean_i, 0.5));

        let rms = |x: &[f32], w: &[f32], plus_one: bool| -> Vec<f32> {
            let mut out = Vec::new();
            for r in x.chunks_exact(h) {
                let ms = r.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / h as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for (v, g) in r.iter().zip(w) {
                    let g = if plus_one { 1.0 + *g as f64 } else { *g as f64 };
                    out.push((*v as f64 * inv * g) as f32);
                }
            }
            out
        };
        let gelu = |v: f32| 0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh());
        let mlp = |nw: &[f32], g: &[f32], u: &[f32], d: &[f32], plus_one: bool| {
            let hn = rms(&x, nw, plus_one);
            let (gv, uv) = (matmul_t(&hn, g, h), matmul_t(&hn, u, h));
            let act: Vec<f32> = gv.iter().zip(&uv).map(|(a, b)| gelu(*a) * b).collect();
            matmul_t(&act, d, inter)
        };
        for plus_one in [false, true] {
            let want = mlp(&norm_w, &wg, &wu, &wd, plus_one);
            let apply = |t: &TensorTransform, v: &[f32], cols: usize| {
                let mut v = v.to_vec();
                t.apply(&mut v, 0, cols).unwrap();
                v
            };
            let cols_t = TensorTransform {
                col_scale: Some(s1.clone()),
                ..Default::default()
            };
            let nw = apply(
                &TensorTransform {
                    norm_div: Some((s1.clone(), plus_one)),
                    ..Default::default()
                },
                &norm_w,
                h,
            );
            let g = apply(&cols_t, &wg, h);
            let u = apply(
                &TensorTransform {
                    col_scale: Some(s1.clone()),
                    row_scale: Some(s2.iter().map(|s| 1.0 / s).collect()),
                    ..Default::default()
                },
                &wu,
                h,
            );
            let d = apply(
                &TensorTransform {
                    col_scale: Some(s2.clone()),
                    ..Default::default()
                },
                &wd,
                inter,
            );
            let got = mlp(&nw, &g, &u, &d, plus_one);
            // Relative to the output scale: outputs are sums of larger, cancelling terms.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "plus_one {plus_one}: {a} vs {b} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn transform_shape_errors() {
        let t = TensorTransform {
            col_scale: Some(vec![1.0; 3]),
            ..Default::default()
        };
        assert!(t.apply(&mut [0.0; 8], 0, 4).is_err());
        let t = TensorTransform {
            row_scale: Some(vec![1.0; 1]),
            ..Default::default()
        };
        assert!(t.apply(&mut [0.0; 8], 0, 4).is_err());
    }
}

#[cfg(test)]
mod fake_quant_tests {
    use super::*;
    use cellm_engine::tensor::{TensorView, encode};

    /// The search's quantizer must agree with the engine's encoder (rare float ties aside).
    #[test]
    fn fake_quant_matches_the_engine_encoder() {
        let (rows, cols) = (64, 128);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                ((i * 7919 % 1013) as f32 - 506.0) / 97.0 * if i % 37 == 0 { 9.0 } else { 1.0 }
            })
            .collect();
        for (dtype, gs) in [(DType::Q4, 32), (DType::Q4, 64), (DType::Q8, 32)] {
            let bytes = encode(dtype, &w, &[rows, cols], gs).unwrap();
            let want = TensorView::new(dtype, &[rows, cols], gs, &bytes)
                .unwrap()
                .to_f32_vec();
            let mut got = w.clone();
            fake_quant(dtype, &mut got, gs);
            let differ = want.iter().zip(&got).filter(|(a, b)| a != b).count();
            assert!(
                differ * 1000 <= want.len(),
                "{dtype} gs {gs}: {differ} differ"
            );
        }
    }
}
