//! The wizard's two calls into the converter library, each run on a background thread:
//! `inspect` (what is in a checkpoint) and `convert` (write the .cellm with progress and cancel).

use cellm_convert::source::Source;
use cellm_convert::{ConvertOptions, Phase, Profile, Progress, QuantSpec};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};

/// What the wizard shows after reading a source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceFacts {
    pub path: PathBuf,
    /// "gemma3" or "gemma4".
    pub family: String,
    /// "text", "vision", "audio" — the towers the checkpoint carries.
    pub towers: Vec<String>,
    pub parameters: u64,
    pub tensors: usize,
    /// (profile name, estimated output bytes) in the order the wizard offers them.
    pub estimates: Vec<(&'static str, u64)>,
}

/// The profiles the wizard offers, best default first, with a few words on each.
pub const PROFILES: [(&str, &str); 10] = [
    ("int8", "8-bit, near-lossless; the default"),
    ("auto", "Smallest model that keeps quality (measured mix)"),
    ("mixed-int4", "4-bit MLP, the rest 16-bit"),
    ("int4", "4-bit everywhere; smallest, some quality loss"),
    (
        "awq-int4",
        "int4 size with activation-aware scales: less loss, slower conversion",
    ),
    ("lut6", "6-bit palettes (k-means); between int8 and int4"),
    ("lut4", "4-bit palettes (k-means); int4 size"),
    ("bf16", "16-bit brain float; as trained"),
    ("f16", "16-bit float"),
    ("f32", "32-bit float; for reference checks"),
];

/// Reads a Hugging Face folder or a .gguf file (header and tensor list only) and sizes the
/// output of every profile from the converter's own per-tensor plan.
pub fn inspect(path: &Path) -> Result<SourceFacts, String> {
    let synthetic = path
        .to_string_lossy()
        .starts_with(cellm_convert::SYNTHETIC_PREFIX);
    if !synthetic {
        if !path.exists() {
            return Err(format!("{} does not exist.", path.display()));
        }
        if path.is_dir() && !path.join("config.json").is_file() {
            return Err(format!(
                "{} has no config.json; choose the folder of a Hugging Face checkpoint (with \
                 config.json and *.safetensors) or a .gguf file.",
                path.display()
            ));
        }
        if path.is_file() && path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            return Err(format!(
                "{} is neither a folder nor a .gguf file.",
                path.display()
            ));
        }
    }
    let source = cellm_convert::open_source(path).map_err(|e| plain(&e))?;
    // Unsupported variants (Gemma 4 MoE, attention_k_eq_v, ...) are named here, before the
    // user picks a profile, not after a conversion.
    cellm_convert::plan_check::check_source(source.as_ref(), Profile::F16)
        .map_err(|e| plain(&e))?;
    Ok(facts_of(path, source.as_ref()))
}

fn facts_of(path: &Path, source: &dyn Source) -> SourceFacts {
    let config = source.config();
    let mut towers = vec!["text".to_owned()];
    let has = |key: &str| config.get(key).is_some_and(|v| !v.is_null());
    if has("vision_config") {
        towers.push("vision".to_owned());
    }
    if has("audio_config") {
        towers.push("audio".to_owned());
    }
    let parameters = source
        .tensors()
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let estimates = PROFILES
        .iter()
        .map(|(name, _)| (*name, estimate(source, name).unwrap_or(0)))
        .collect();
    SourceFacts {
        path: path.to_path_buf(),
        family: source.family().to_owned(),
        towers,
        parameters,
        tensors: source.tensors().len(),
        estimates,
    }
}

/// Output bytes of `profile`: the sum of every planned tensor's stored size, plus the header,
/// which embeds the whole tokenizer (tens of MB for Gemma's vocabulary: leaving it out made the
/// estimate 12% short), and each tensor's alignment padding.
fn estimate(source: &dyn Source, profile: &str) -> Option<u64> {
    let profile = Profile::from_str(profile).ok()?;
    let spec = QuantSpec::new(profile, None, &[]).ok()?;
    let plan = cellm_convert::plan(source, &spec);
    let tensors: u64 = plan
        .iter()
        .map(|t| {
            t.dtype
                .byte_len(&t.shape, t.group_size)
                .ok()
                .map(|b| b as u64)
        })
        .sum::<Option<u64>>()?;
    let tokenizer = source.tokenizer();
    let header = tokenizer.tokenizer_json.len()
        + tokenizer.chat_template.as_ref().map_or(0, String::len)
        + source.config().to_string().len()
        // per-tensor entries (name, dtype, shape, offset) and the fixed part
        + plan.len() * 160
        + 4096;
    // each tensor starts aligned (at most this much padding before it)
    let padding = plan.len() as u64 * 32;
    Some(tensors + header as u64 + padding)
}

/// The converter's error in plain words (its messages already are; this only drops the
/// "I/O error on" style prefixes where they add nothing).
fn plain(e: &cellm_convert::ConvertError) -> String {
    let s = e.to_string();
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// Converts `source` to `output` with `profile`; `progress` gets a fraction in 0..=1 and a line
/// of text. The converter leaves nothing behind when cancelled or failed.
fn run_conversion(
    source: &Path,
    output: &Path,
    profile: &str,
    progress: &mut dyn FnMut(f32, String),
    cancel: Arc<AtomicBool>,
) -> Result<(), String> {
    progress(0.0, "Opening the checkpoint".to_owned());
    let src = cellm_convert::open_source(source).map_err(|e| plain(&e))?;
    if let Some(target) = profile.strip_prefix("auto:") {
        return run_auto(src.as_ref(), output, target, progress, cancel);
    }
    let profile = Profile::from_str(profile).map_err(|e| plain(&e))?;
    let mut options = ConvertOptions::new(profile);
    options.cancel = cancel;
    let mut report = |p: Progress| {
        let fraction = if p.bytes_total > 0 {
            p.bytes_done as f32 / p.bytes_total as f32
        } else if p.count > 0 {
            p.index as f32 / p.count as f32
        } else {
            0.0
        };
        let line = match p.phase {
            Phase::Hashing => format!("Hashing {}", p.name),
            Phase::Converting => format!("Tensor {}/{}: {}", p.index + 1, p.count, p.name),
        };
        progress(fraction.clamp(0.0, 1.0), line);
    };
    match cellm_convert::convert(src.as_ref(), output, &options, &mut report) {
        Ok(_) => Ok(()),
        Err(cellm_convert::ConvertError::Cancelled) => Err("cancelled".to_owned()),
        Err(e) => Err(plain(&e)),
    }
}

/// `auto:<target>`: the sensitivity scan and mix selection, then the write and measurement.
fn run_auto(
    src: &dyn Source,
    output: &Path,
    target: &str,
    progress: &mut dyn FnMut(f32, String),
    cancel: Arc<AtomicBool>,
) -> Result<(), String> {
    use cellm_convert::quant::auto::{AutoOptions, AutoStage, convert_auto};
    let target: f64 = target
        .parse()
        .map_err(|_| format!("The KL target '{target}' is not a number."))?;
    let mut options = ConvertOptions::new(Profile::Auto);
    options.cancel = cancel;
    // Stages share the bar: reference 0-10%, calibrating 10-15%, scanning 15-80%, the rest after.
    let mut report = |p: cellm_convert::quant::auto::AutoProgress| {
        let f = if p.total > 0 {
            p.done as f32 / p.total as f32
        } else {
            0.0
        };
        let (from, to, words) = match p.stage {
            AutoStage::Reference => (0.0, 0.10, "Preparing the reference"),
            AutoStage::Calibrating => (0.10, 0.15, "Running the calibration text"),
            AutoStage::Scanning => (0.15, 0.80, "Measuring"),
            AutoStage::Verifying => (0.80, 0.88, "Checking the mix"),
            AutoStage::Writing => (0.88, 0.95, "Writing"),
            AutoStage::Measuring => (0.95, 1.0, "Measuring the written file"),
        };
        progress(
            from + (to - from) * f.clamp(0.0, 1.0),
            format!("{words}: {}", p.what),
        );
    };
    // The scan leaves one core to the app so it stays responsive.
    let mut auto = AutoOptions::new(target);
    auto.threads = Some(
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1),
    );
    match convert_auto(src, output, &options, &auto, &mut report) {
        Ok(_) => Ok(()),
        Err(cellm_convert::quant::sensitivity::ScanError::Convert(
            cellm_convert::ConvertError::Cancelled,
        )) => Err("cancelled".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

pub enum JobEvent {
    Progress(f32, String),
    Finished(Result<PathBuf, String>),
}

/// A conversion running on its own thread.
pub struct ConvertJob {
    pub events: Receiver<JobEvent>,
    pub cancel: Arc<AtomicBool>,
}

impl ConvertJob {
    pub fn start(
        source: PathBuf,
        output: PathBuf,
        profile: String,
        repaint: egui::Context,
    ) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        std::thread::spawn(move || {
            let existed = output.exists();
            let mut progress = |f: f32, s: String| {
                let _ = tx.send(JobEvent::Progress(f, s));
                repaint.request_repaint();
            };
            let result = run_conversion(&source, &output, &profile, &mut progress, flag.clone());
            let result = match result {
                Ok(()) if flag.load(Ordering::Relaxed) => Err("cancelled".to_owned()),
                Ok(()) => Ok(output.clone()),
                Err(e) => Err(e),
            };
            if result.is_err() && !existed {
                // Nothing left behind on cancel or failure.
                let _ = std::fs::remove_file(&output);
            }
            let _ = tx.send(JobEvent::Finished(result));
            repaint.request_repaint();
        });
        Self { events: rx, cancel }
    }
}

/// Reads a source on a background thread.
pub struct InspectJob {
    pub result: Receiver<Result<SourceFacts, String>>,
}

impl InspectJob {
    pub fn start(path: PathBuf, repaint: egui::Context) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(inspect(&path));
            repaint.request_repaint();
        });
        Self { result: rx }
    }
}
