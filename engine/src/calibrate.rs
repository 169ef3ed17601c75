//! Calibration statistics for activation-aware quantization (AWQ): runs a CPU text model over
//! calibration tokens with an [`ActivationObserver`] and keeps, for every group of text-stack
//! linears sharing one input (q/k/v, gate/up, down), the per-input-channel mean |x| and a
//! bounded uniform sample of input rows (reservoir sampling) for the converter's error search.

use crate::format::CellmFile;
use crate::kv_cache::{KvCache, KvPrecision};
use crate::models::common::{ActivationObserver, Tap};
use crate::models::{self, Logits, ModelError, TextModel, gemma3, gemma4};
use crate::tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the calibration text has no tokens")]
    Empty,
    #[error("unsupported model family '{0}' for calibration (gemma3 and gemma4 only)")]
    Unsupported(String),
    #[error("thread pool: {0}")]
    Threads(String),
}

#[derive(Clone, Debug)]
pub struct CalibrationOptions {
    /// Input rows kept per tap (a uniform sample of all rows seen).
    pub max_rows: usize,
    /// Longest sequence fed at once (BOS included).
    pub segment_tokens: usize,
    /// Tokens used in total (the text is cut after this many).
    pub max_tokens: usize,
    /// Seed of the row sampler (fixed: conversions are reproducible).
    pub seed: u64,
    /// Worker threads of the CPU kernels (None: all cores).
    pub threads: Option<usize>,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            max_rows: 256,
            segment_tokens: 256,
            max_tokens: 8192,
            seed: 0x5eed_a11c,
            threads: None,
        }
    }
}

/// What was seen at one tap of one decoder layer.
#[derive(Clone, Debug)]
pub struct TapStats {
    pub layer: usize,
    pub tap: Tap,
    /// Input width of the linears.
    pub width: usize,
    /// Full weight names of the linears reading this input, e.g.
    /// `model.layers.3.self_attn.q_proj.weight`.
    pub linears: Vec<String>,
    /// Rows (token positions) seen.
    pub tokens: usize,
    /// Per-input-channel mean |x| over every row seen.
    pub mean_abs: Vec<f32>,
    /// `[sampled_rows(), width]` row-major sample of the input rows.
    pub rows: Vec<f32>,
}

impl TapStats {
    pub fn sampled_rows(&self) -> usize {
        self.rows.len() / self.width.max(1)
    }
}

/// Statistics of every tap, ordered by (layer, tap).
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// Calibration tokens run (BOS included).
    pub tokens: usize,
    pub taps: Vec<TapStats>,
}

impl Calibration {
    pub fn tap(&self, layer: usize, tap: Tap) -> Option<&TapStats> {
        self.taps.iter().find(|s| s.layer == layer && s.tap == tap)
    }

    /// The statistics of the input of the linear whose weight is `name`.
    pub fn for_weight(&self, name: &str) -> Option<&TapStats> {
        self.taps
            .iter()
            .find(|s| s.linears.iter().any(|l| l == name))
    }
}

/// Running sums and reservoir of one tap.
struct Acc {
    width: usize,
    seen: usize,
    sum_abs: Vec<f64>,
    rows: Vec<f32>,
}

struct Collected {
    max_rows: usize,
    rng: u64,
    taps: BTreeMap<(usize, Tap), Acc>,
}

impl Collected {
    /// xorshift64*: small, seeded, good enough for choosing reservoir slots.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn add(&mut self, layer: usize, tap: Tap, x: &[f32], rows: usize) {
        if rows == 0 || !x.len().is_multiple_of(rows) {
            return;
        }
        let width = x.len() / rows;
        let k = self.max_rows;
        for row in x.chunks_exact(width) {
            // The slot is drawn before borrowing the accumulator (both need `self`).
            let draw = self.next();
            let acc = self.taps.entry((layer, tap)).or_insert_with(|| Acc {
                width,
                seen: 0,
                sum_abs: vec![0.0; width],
                rows: Vec::new(),
            });
            if acc.width != width {
                continue;
            }
            for (s, &v) in acc.sum_abs.iter_mut().zip(row) {
                *s += v.abs() as f64;
            }
            // Algorithm R: row i replaces a random slot with probability k / (i + 1).
            let i = acc.seen;
            if i < k {
                acc.rows.extend_from_slice(row);
            } else {
                let j = (draw % (i as u64 + 1)) as usize;
                if j < k {
                    acc.rows[j * width..(j + 1) * width].copy_from_slice(row);
                }
            }
            acc.seen += 1;
        }
    }
}

/// The observer installed in the model; the statistics stay reachable through the `Arc`.
struct Observer(Arc<Mutex<Collected>>);

impl ActivationObserver for Observer {
    fn observe(&mut self, layer: usize, tap: Tap, x: &[f32], rows: usize) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(layer, tap, x, rows);
    }
}

/// Cuts `text` into sequences of at most `segment_tokens` tokens (each starting with BOS when
/// the file's tokenizer adds one), `max_tokens` in total.
pub fn calibration_sequences(
    file: &CellmFile,
    text: &str,
    segment_tokens: usize,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, CalibrationError> {
    let info = &file.header().tokenizer;
    let mut tok = Tokenizer::from_json(&info.tokenizer_json)
        .map_err(|e| CalibrationError::Tokenizer(e.to_string()))?;
    if info.bos_token_id.is_some() {
        tok.set_bos_id(info.bos_token_id);
    }
    let ids = tok
        .encode(text, false)
        .map_err(|e| CalibrationError::Tokenizer(e.to_string()))?;
    let bos = if info.add_bos { tok.bos_id() } else { None };
    let body = segment_tokens.max(2) - usize::from(bos.is_some());
    let mut out = Vec::new();
    let mut total = 0;
    for piece in ids.chunks(body) {
        let mut seq: Vec<u32> = bos.into_iter().collect();
        seq.extend_from_slice(piece);
        seq.truncate(max_tokens.saturating_sub(total));
        if seq.is_empty() {
            break;
        }
        total += seq.len();
        out.push(seq);
    }
    Ok(out)
}

/// Runs the file's text model over `text` on the CPU and returns the statistics of every tap.
pub fn collect(
    file: &CellmFile,
    text: &str,
    opts: &CalibrationOptions,
) -> Result<Calibration, CalibrationError> {
    let seqs = calibration_sequences(file, text, opts.segment_tokens, opts.max_tokens)?;
    collect_tokens(file, &seqs, opts)
}

/// [`collect`] over given token sequences (each run from position 0 with an empty cache).
pub fn collect_tokens(
    file: &CellmFile,
    sequences: &[Vec<u32>],
    opts: &CalibrationOptions,
) -> Result<Calibration, CalibrationError> {
    let tokens: usize = sequences.iter().map(Vec::len).sum();
    if tokens == 0 {
        return Err(CalibrationError::Empty);
    }
    let shared = Arc::new(Mutex::new(Collected {
        max_rows: opts.max_rows.max(1),
        rng: opts.seed | 1,
        taps: BTreeMap::new(),
    }));
    let observer = Box::new(Observer(shared.clone()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| CalibrationError::Threads(e.to_string()))?;
    let family = file.header().family.as_str();
    pool.install(|| match family {
        "gemma3" | "gemma3_text" => {
            let mut m = gemma3::Model::new(file)?;
            m.set_observer(Some(observer));
            run(&mut m, sequences)
        }
        "gemma4" | "gemma4_text" => {
            let mut m = gemma4::Model::new(file)?;
            m.set_observer(Some(observer));
            run(&mut m, sequences)
        }
        other => Err(CalibrationError::Unsupported(other.to_string())),
    })?;
    let collected = std::mem::replace(
        &mut *shared.lock().unwrap_or_else(PoisonError::into_inner),
        Collected {
            max_rows: 0,
            rng: 1,
            taps: BTreeMap::new(),
        },
    );
    let prefix = if file.contains("model.language_model.embed_tokens.weight") {
        "model.language_model"
    } else {
        "model"
    };
    let taps = collected
        .taps
        .into_iter()
        .map(|((layer, tap), acc)| {
            let (module, names): (&str, &[&str]) = match tap {
                Tap::AttnInput => ("self_attn", &["q_proj", "k_proj", "v_proj"]),
                Tap::MlpInput => ("mlp", &["gate_proj", "up_proj"]),
                Tap::DownInput => ("mlp", &["down_proj"]),
            };
            let linears = names
                .iter()
                .map(|n| format!("{prefix}.layers.{layer}.{module}.{n}.weight"))
                .filter(|n| file.contains(n))
                .collect();
            let n = acc.seen.max(1) as f64;
            TapStats {
                layer,
                tap,
                width: acc.width,
                linears,
                tokens: acc.seen,
                mean_abs: acc.sum_abs.iter().map(|s| (s / n) as f32).collect(),
                rows: acc.rows,
            }
        })
        .collect();
    Ok(Calibration { tokens, taps })
}

fn run(model: &mut dyn TextModel, sequences: &[Vec<u32>]) -> Result<(), CalibrationError> {
    let cfg = model.config();
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(1);
    let limit = longest.min(cfg.max_position).max(1);
    let mut cache = KvCache::new(cfg, limit, models::chunk_size(cfg), KvPrecision::F32);
    for seq in sequences {
        cache.clear();
        let seq = &seq[..seq.len().min(limit)];
        model.forward(seq, None, 0, &mut cache, Logits::Last)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_keeps_a_bounded_sample_and_exact_means() {
        let mut c = Collected {
            max_rows: 4,
            rng: 7,
            taps: BTreeMap::new(),
        };
        // 10 rows of width 3: row i = [i, -i, 1].
        let x: Vec<f32> = (0..10).flat_map(|i| [i as f32, -(i as f32), 1.0]).collect();
        c.add(2, Tap::MlpInput, &x[..12], 4);
        c.add(2, Tap::MlpInput, &x[12..], 6);
        let acc = &c.taps[&(2, Tap::MlpInput)];
        assert_eq!(acc.seen, 10);
        assert_eq!(acc.rows.len(), 4 * 3);
        assert_eq!(acc.sum_abs, vec![45.0, 45.0, 10.0]);
        // Every kept row is one of the input rows.
        for r in acc.rows.chunks(3) {
            assert!(x.chunks(3).any(|s| s == r), "{r:?}");
        }
    }
}
