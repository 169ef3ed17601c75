//! Fidelity of a converted file: KL, top-1 match and logit correlation of its next-token
//! distributions against an f32 conversion of the same source, on a calibration text, stored in
//! the `.cellm` header (`fidelity`) so `cellm inspect` and the app can show it.
//!
//! The calibration text is cut into segments of at most [`FidelityOptions::segment_tokens`]
//! tokens (at paragraph breaks where possible), each run as its own sequence: full-vocabulary
//! logits of a whole long text would need `positions x vocab` floats at once.

use crate::convert::{ConvertOptions, convert};
use crate::error::ConvertError;
use crate::quant::Profile;
use crate::source::Source;
use cellm_engine::session::{Prompt, Session, SessionError, SessionOptions};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The calibration text shipped with cellm (`assets/calibration.txt`).
pub const DEFAULT_CALIBRATION: &str = include_str!("../../assets/calibration.txt");
pub const DEFAULT_CALIBRATION_NAME: &str = "assets/calibration.txt";

#[derive(Debug, thiserror::Error)]
pub enum FidelityError {
    #[error("making the f32 reference: {0}")]
    Convert(#[from] ConvertError),
    #[error("running a model: {0}")]
    Session(#[from] SessionError),
    #[error(transparent)]
    Format(#[from] cellm_engine::format::FormatError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the calibration text has no tokens")]
    EmptyCalibration,
    #[error("the models disagree on the vocabulary ({0} vs {1})")]
    Vocab(usize, usize),
}

#[derive(Clone, Debug)]
pub struct FidelityOptions {
    pub calibration_text: String,
    /// Shown in the header, e.g. "assets/calibration.txt".
    pub calibration_name: String,
    /// Longest segment fed as one sequence.
    pub segment_tokens: usize,
    /// Stop after this many positions in total.
    pub max_positions: usize,
    pub threads: Option<usize>,
    /// Where the temporary f32 reference is written (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
}

impl Default for FidelityOptions {
    fn default() -> Self {
        Self {
            calibration_text: DEFAULT_CALIBRATION.to_string(),
            calibration_name: DEFAULT_CALIBRATION_NAME.to_string(),
            segment_tokens: 128,
            max_positions: 1024,
            threads: None,
            temp_dir: None,
        }
    }
}

/// What is stored in the header's `fidelity` object.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fidelity {
    pub kl_mean: f64,
    pub kl_max: f64,
    pub top1_match: f64,
    pub correlation: f64,
    pub positions: usize,
    /// "assets/calibration.txt (sha256 1a2b3c4d5e6f)".
    pub calibration: String,
    pub reference_profile: String,
}

/// Running sums of the agreement between two `[T, V]` logit arrays.
#[derive(Default)]
struct Sums {
    kl: f64,
    kl_max: f64,
    corr: f64,
    top1: usize,
    n: usize,
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

impl Sums {
    /// Adds KL(reference || ours), Pearson correlation and top-1 agreement of each position.
    fn add(&mut self, reference: &[f32], ours: &[f32], vocab: usize) {
        for (p, q) in reference.chunks_exact(vocab).zip(ours.chunks_exact(vocab)) {
            let (lp, lq) = (log_sum_exp(p), log_sum_exp(q));
            let mut kl = 0.0;
            for (&a, &b) in p.iter().zip(q) {
                let la = a as f64 - lp;
                kl += la.exp() * (la - (b as f64 - lq));
            }
            let kl = kl.max(0.0);
            self.kl += kl;
            self.kl_max = self.kl_max.max(kl);
            self.corr += pearson(p, q);
            self.top1 += usize::from(argmax(p) == argmax(q));
            self.n += 1;
        }
    }
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa == 0.0 || sbb == 0.0 {
        return if saa == sbb { 1.0 } else { 0.0 };
    }
    sab / (saa * sbb).sqrt()
}

/// `name (sha256 <first 12 hex digits>)`.
pub fn calibration_label(name: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{name} (sha256 {hex})")
}

/// Splits `text` into pieces of at most `max_tokens` tokens (at blank lines where possible),
/// tokenized with the model's BOS.
pub(crate) fn segments(
    session: &Session,
    text: &str,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, SessionError> {
    let max_tokens = max_tokens.max(2);
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut current = String::new();
    let tokens = |s: &str| session.tokenize(&Prompt::Raw(s.to_string()));
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let joined = if current.is_empty() {
            para.to_string()
        } else {
            format!("{current}\n\n{para}")
        };
        if tokens(&joined)?.len() <= max_tokens {
            current = joined;
            continue;
        }
        if !current.is_empty() {
            out.push(tokens(&current)?);
        }
        current = para.to_string();
    }
    if !current.is_empty() {
        out.push(tokens(&current)?);
    }
    // A paragraph longer than the limit is cut.
    for s in &mut out {
        s.truncate(max_tokens);
    }
    Ok(out)
}

/// Measures `converted` against `reference` (both `.cellm` files of the same model).
pub fn compare_files(
    reference: &Path,
    converted: &Path,
    opts: &FidelityOptions,
) -> Result<Fidelity, FidelityError> {
    let session_opts = SessionOptions {
        threads: opts.threads,
        // An f32 cache: the measurement is about the weights, not the cache.
        kv_precision: cellm_engine::kv_cache::KvPrecision::F32,
        ..SessionOptions::default()
    };
    let mut reference_session = Session::load(reference, session_opts.clone())?;
    let mut ours = Session::load(converted, session_opts)?;
    let vocab = ours.info().vocab_size;
    if reference_session.info().vocab_size != vocab {
        return Err(FidelityError::Vocab(
            reference_session.info().vocab_size,
            vocab,
        ));
    }
    let mut sums = Sums::default();
    for mut seg in segments(&ours, &opts.calibration_text, opts.segment_tokens)? {
        let room = opts.max_positions.saturating_sub(sums.n);
        if room == 0 {
            break;
        }
        seg.truncate(room);
        if seg.is_empty() {
            continue;
        }
        let want = reference_session.logits_for(&seg, &[])?;
        let got = ours.logits_for(&seg, &[])?;
        sums.add(&want, &got, vocab);
    }
    if sums.n == 0 {
        return Err(FidelityError::EmptyCalibration);
    }
    let n = sums.n as f64;
    Ok(Fidelity {
        kl_mean: sums.kl / n,
        kl_max: sums.kl_max,
        top1_match: sums.top1 as f64 / n,
        correlation: sums.corr / n,
        positions: sums.n,
        calibration: calibration_label(&opts.calibration_name, &opts.calibration_text),
        reference_profile: Profile::F32.name().to_string(),
    })
}

/// Converts `source` to f32 in a temporary folder, measures `converted` against it, and removes
/// the temporary file.
pub fn measure(
    source: &dyn Source,
    converted: &Path,
    opts: &FidelityOptions,
) -> Result<Fidelity, FidelityError> {
    let base = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "cellm-fidelity-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|source| FidelityError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let reference = dir.join("reference-f32.cellm");
    let result = convert(
        source,
        &reference,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .map_err(FidelityError::from)
    .and_then(|_| compare_files(&reference, converted, opts));
    // Best effort: a leftover temp folder is not worth failing the measurement for.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Stores `f` as the header's `fidelity` object.
pub fn store(path: &Path, f: &Fidelity) -> Result<(), FidelityError> {
    let value = serde_json::to_value(f).map_err(|e| FidelityError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    cellm_engine::format::update_header(path, |h| h.fidelity = Some(value))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_perfectly() {
        let v = 5;
        let a: Vec<f32> = (0..3 * v).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut s = Sums::default();
        s.add(&a, &a, v);
        assert_eq!(s.n, 3);
        assert!(s.kl.abs() < 1e-12);
        assert_eq!(s.top1, 3);
        assert!((s.corr / 3.0 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kl_matches_a_hand_computed_value() {
        // p = softmax([0, ln 3]) = [1/4, 3/4]; q = [1/2, 1/2].
        let p = [0.0f32, 3f32.ln()];
        let q = [0.0f32, 0.0];
        let mut s = Sums::default();
        s.add(&p, &q, 2);
        let want = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((s.kl - want).abs() < 1e-6, "{} vs {want}", s.kl);
        assert_eq!(s.top1, 0);
    }

    #[test]
    fn calibration_label_names_the_hash() {
        let l = calibration_label("assets/calibration.txt", "abc");
        assert_eq!(l, "assets/calibration.txt (sha256 ba7816bf8f01)");
        assert!(DEFAULT_CALIBRATION.len() > 1000);
    }
}
