//! The conversion driver: plan every tensor, fill the header, then stream tensors one at a time
//! (huge ones in row blocks) through the quantizer into a [`CellmWriter`].

use crate::error::ConvertError;
use crate::plan_check;
use crate::provenance::{hash_file, now_rfc3339};
use crate::quant::awq::{self, CalibrationText, TensorTransform};
use crate::quant::encode::TensorEncoder;
use crate::quant::profile::{Profile, QuantSpec, TensorDecision, decide};
use crate::source::Source;
use crate::source::gguf::GgufSource;
use crate::source::hf::{HfSource, text_layer_index};
use crate::source::synthetic::SyntheticSource;
use cellm_engine::format::{CellmWriter, Header, Provenance, QuantizationInfo, TensorPlan};
use cellm_engine::tensor::rows_cols;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Values read from the source per block when streaming a big tensor (128 MiB of f32).
const BLOCK_VALUES: usize = 32 << 20;

/// Prefix of an input naming a synthetic model, e.g. `synthetic:gemma3-270m`.
pub const SYNTHETIC_PREFIX: &str = "synthetic:";

/// Opens a Hugging Face folder, a `.gguf` file, or `synthetic:<shape>`.
pub fn open_source(input: &Path) -> Result<Box<dyn Source>, ConvertError> {
    let text = input.to_string_lossy();
    if let Some(shape) = text.strip_prefix(SYNTHETIC_PREFIX) {
        return Ok(Box::new(SyntheticSource::open(shape)?));
    }
    if input.is_dir() {
        return Ok(Box::new(HfSource::open(input)?));
    }
    let is_gguf = input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf && input.is_file() {
        return open_gguf(input);
    }
    if !input.exists() {
        return Err(ConvertError::Invalid(format!(
            "{} does not exist (expected a Hugging Face folder, a .gguf file, or {}<shape>)",
            input.display(),
            SYNTHETIC_PREFIX
        )));
    }
    Err(ConvertError::Invalid(format!(
        "{} is neither a Hugging Face model folder nor a .gguf file",
        input.display()
    )))
}

fn open_gguf(input: &Path) -> Result<Box<dyn Source>, ConvertError> {
    Ok(Box::new(GgufSource::open(input)?))
}

/// Opens a Gemma 4 `.gguf` model with its mmproj GGUF (vision and audio towers). Without
/// `mmproj` this is [`open_source`], which finds an mmproj next to a Gemma 4 GGUF by its name.
pub fn open_source_with_mmproj(
    input: &Path,
    mmproj: Option<&Path>,
) -> Result<Box<dyn Source>, ConvertError> {
    let Some(mmproj) = mmproj else {
        return open_source(input);
    };
    if !mmproj.is_file() {
        return Err(ConvertError::Invalid(format!(
            "mmproj {} is not a file",
            mmproj.display()
        )));
    }
    if !(input.is_file()
        && input
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
    {
        return Err(ConvertError::Invalid(format!(
            "--mmproj goes with a Gemma 4 .gguf model; {} is not a .gguf file",
            input.display()
        )));
    }
    Ok(Box::new(GgufSource::open_with_mmproj(input, mmproj)?))
}

/// What to convert to.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub profile: Profile,
    /// Group size for q8/q4 (None: the profile's default, 32).
    pub group_size: Option<usize>,
    /// Text-stack layers kept at f16.
    pub exclude_layers: Vec<usize>,
    /// lut4/lut6: rows per palette (None: the default; 0: one palette per tensor).
    pub lut_group: Option<usize>,
    /// lut4/lut6: embeddings / LM head as "lut4", "lut6", "int8" or "f16" (None: the default).
    pub head_lut: Option<String>,
    /// Per-tensor storage that replaces the profile's decision (the `auto` profile's plan).
    pub tensor_dtypes: BTreeMap<String, TensorDecision>,
    /// The header's initial `fidelity` object (the `auto` profile's plan and scan), so its
    /// space is reserved when the file is written.
    pub fidelity: Option<serde_json::Value>,
    /// awq-int4: the calibration text (None: assets/calibration.txt).
    pub calibration: Option<CalibrationText>,
    /// Set from another thread to stop between tensors; the partial file is removed.
    pub cancel: Arc<AtomicBool>,
}

impl ConvertOptions {
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            group_size: None,
            exclude_layers: Vec::new(),
            lut_group: None,
            head_lut: None,
            tensor_dtypes: BTreeMap::new(),
            fidelity: None,
            calibration: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Which part of the work a [`Progress`] report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Hashing the source files for provenance.
    Hashing,
    /// Converting tensors.
    Converting,
}

/// A progress report: sent while hashing, before each tensor, and after each block written.
#[derive(Clone, Debug)]
pub struct Progress {
    pub phase: Phase,
    /// Index of the tensor being converted (0-based) and the tensor count.
    pub index: usize,
    pub count: usize,
    /// Tensor (or file, while hashing) being worked on.
    pub name: String,
    /// Bytes done and total of this phase (output bytes while converting, source bytes while
    /// hashing).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Outcome of a successful conversion.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub output: PathBuf,
    pub tensors: usize,
    /// Size of the written file.
    pub file_bytes: u64,
    /// Tensor count and bytes per stored dtype.
    pub by_dtype: BTreeMap<String, (usize, u64)>,
    pub elapsed: Duration,
    /// The source's remarks (skipped tensors and the like).
    pub notes: Vec<String>,
}

/// The stored dtype of every tensor of `source` under `spec`, in source order.
pub fn plan(source: &dyn Source, spec: &QuantSpec) -> Vec<TensorPlan> {
    source
        .tensors()
        .iter()
        .map(|t| {
            let d = decide(&t.name, &t.shape, spec);
            TensorPlan {
                name: t.name.clone(),
                dtype: d.dtype,
                shape: t.shape.clone(),
                group_size: d.group_size,
            }
        })
        .collect()
}

/// Refuses an output that is missing its directory, is a directory, or is one of the inputs.
fn check_output(source: &dyn Source, out: &Path) -> Result<(), ConvertError> {
    if out.is_dir() {
        return Err(ConvertError::Invalid(format!(
            "output {} is a directory; give a file path such as model.cellm",
            out.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ConvertError::Invalid(format!(
            "output directory {} does not exist",
            parent.display()
        )));
    }
    if let Ok(out_abs) = out.canonicalize() {
        for f in source.source_files() {
            if f.canonicalize().is_ok_and(|f| f == out_abs) {
                return Err(ConvertError::Invalid(format!(
                    "refusing to overwrite the input file {}",
                    f.display()
                )));
            }
        }
    }
    Ok(())
}

/// The source config's numbers must be within the engine's bounds (FORMAT.md, "Config bounds"):
/// a file the engine would refuse to load is not written.
fn check_config(source: &dyn Source) -> Result<(), ConvertError> {
    if !matches!(source.family(), "gemma3" | "gemma4") {
        return Ok(());
    }
    use cellm_engine::models::config::{ConfigError, check_config};
    match check_config(source.config()) {
        // A config the engine cannot even parse (a partial test fixture, a future form) is
        // reported when the file is loaded; only numbers out of bounds stop the conversion.
        Ok(()) | Err(ConfigError::Json(_)) => Ok(()),
        Err(e) => Err(ConvertError::Invalid(format!("source {e}"))),
    }
}

/// Refuses NaN and infinite weights: they would make every logit NaN at run time.
fn check_finite(name: &str, values: &[f32], row0: usize, cols: usize) -> Result<(), ConvertError> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ConvertError::Invalid(format!(
            "tensor '{name}' holds {} at row {}, column {}; weights must be finite",
            values[i],
            row0 + i / cols.max(1),
            i % cols.max(1)
        ))),
    }
}

/// `--exclude-layers` must name decoder layers the model has.
fn check_excluded_layers(source: &dyn Source, spec: &QuantSpec) -> Result<(), ConvertError> {
    let layers: BTreeSet<usize> = source
        .tensors()
        .iter()
        .filter_map(|t| text_layer_index(&t.name))
        .collect();
    let missing: Vec<String> = spec
        .exclude_layers
        .iter()
        .filter(|l| !layers.contains(l))
        .map(usize::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ConvertError::Invalid(format!(
            "--exclude-layers {}: the model has decoder layers 0..{}",
            missing.join(","),
            layers.len()
        )))
    }
}

/// Converts `source` into the `.cellm` file `out`. On error or cancellation nothing is left at
/// `out` (the writer removes its temporary file).
pub fn convert(
    source: &dyn Source,
    out: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ConvertSummary, ConvertError> {
    let start = Instant::now();
    let spec = QuantSpec::new(options.profile, options.group_size, &options.exclude_layers)?
        .with_lut(options.lut_group, options.head_lut.as_deref())?;
    check_output(source, out)?;
    check_config(source)?;
    let cancelled = || options.cancel.load(Ordering::Relaxed);

    check_excluded_layers(source, &spec)?;
    let mut plans = plan(source, &spec);
    for p in &mut plans {
        if let Some(d) = options.tensor_dtypes.get(&p.name) {
            (p.dtype, p.group_size) = (d.dtype, d.group_size);
        }
    }
    if plans.is_empty() {
        return Err(ConvertError::Invalid("the source has no tensors".into()));
    }
    let sizes = plans
        .iter()
        .map(|p| p.dtype.byte_len(&p.shape, p.group_size).map(|n| n as u64))
        .collect::<Result<Vec<u64>, _>>()?;
    let bytes_total: u64 = sizes.iter().sum();

    let mut header = Header {
        family: source.family().to_owned(),
        config: source.config().clone(),
        tokenizer: source.tokenizer().clone(),
        quantization: QuantizationInfo {
            profile: spec.profile.name().to_owned(),
            // lut profiles: rows per palette (0 = per tensor)
            group_size: if spec.profile.lut_dtype().is_some() {
                spec.lut_group
            } else {
                spec.group_size
            },
            excluded_layers: spec.exclude_layers.iter().copied().collect(),
        },
        provenance: Provenance::default(),
        fidelity: options.fidelity.clone(),
        tensors: Vec::new(),
    };
    // The file must load: every model part is built from the plan before anything is read,
    // hashed or written (plan_check.rs).
    plan_check::check_plan(&header, &plans, out)?;

    // Provenance: hash every source file, streamed.
    let files = source.source_files();
    let hash_total: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut hashed = 0u64;
    let mut source_files = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let name = f.display().to_string();
        let mut last_report = 0u64;
        let entry = hash_file(f, &mut |n| {
            hashed += n;
            // Report every 64 MiB, not every read.
            if hashed - last_report >= 64 << 20 {
                last_report = hashed;
                progress(Progress {
                    phase: Phase::Hashing,
                    index: i,
                    count: files.len(),
                    name: name.clone(),
                    bytes_done: hashed,
                    bytes_total: hash_total,
                });
            }
            !cancelled()
        })?;
        source_files.push(entry);
    }

    // awq-int4: activation statistics and the scale search, before the first byte is written.
    let awq = if spec.profile == Profile::AwqInt4 {
        let calibration = options.calibration.clone().unwrap_or_default();
        let count = plans.len();
        let mut status = |s: &str| {
            progress(Progress {
                phase: Phase::Converting,
                index: 0,
                count,
                name: s.to_string(),
                bytes_done: 0,
                bytes_total,
            })
        };
        Some(awq::prepare(
            source,
            &plans,
            &calibration,
            &options.cancel,
            &mut status,
        )?)
    } else {
        None
    };

    header.provenance = Provenance {
        converter_version: format!("cellm-convert {}", env!("CARGO_PKG_VERSION")),
        source_files,
        created: now_rfc3339(),
        notes: awq.as_ref().map(|a| a.notes.clone()).unwrap_or_default(),
    };

    if cancelled() {
        return Err(ConvertError::Cancelled);
    }
    let mut writer = CellmWriter::create(out, header, plans.clone())?;
    let count = plans.len();
    let mut done = 0u64;
    let mut by_dtype: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (index, (p, size)) in plans.iter().zip(&sizes).enumerate() {
        if cancelled() {
            return Err(ConvertError::Cancelled);
        }
        let report = |done| Progress {
            phase: Phase::Converting,
            index,
            count,
            name: p.name.clone(),
            bytes_done: done,
            bytes_total,
        };
        progress(report(done));
        let transform = awq.as_ref().and_then(|a| a.transforms.get(&p.name));
        let bytes = encode_tensor(source, p, options, transform, &mut |block_bytes| {
            progress(report(done + block_bytes));
        })?;
        writer.write_tensor(&p.name, &bytes)?;
        drop(bytes);
        done += size;
        let e = by_dtype.entry(p.dtype.name().to_owned()).or_default();
        e.0 += 1;
        e.1 += size;
    }
    progress(Progress {
        phase: Phase::Converting,
        index: count,
        count,
        name: String::new(),
        bytes_done: done,
        bytes_total,
    });
    let output = writer.finish()?;
    // Opened as `cellm run` opens it; a file that fails this is not left behind.
    if let Err(e) = plan_check::check_written(&output) {
        let _ = std::fs::remove_file(&output);
        return Err(e);
    }
    let file_bytes = std::fs::metadata(&output)
        .map_err(|source| ConvertError::Io {
            path: output.display().to_string(),
            source,
        })?
        .len();
    Ok(ConvertSummary {
        output,
        tensors: count,
        file_bytes,
        by_dtype,
        elapsed: start.elapsed(),
        notes: source.notes(),
    })
}

/// Reads and encodes one tensor; big tensors are read in row blocks when the source can.
/// `on_block` gets the approximate output bytes encoded so far.
fn encode_tensor(
    source: &dyn Source,
    p: &TensorPlan,
    options: &ConvertOptions,
    transform: Option<&TensorTransform>,
    on_block: &mut dyn FnMut(u64),
) -> Result<Vec<u8>, ConvertError> {
    let (rows, cols) = rows_cols(&p.shape);
    let total = p.dtype.byte_len(&p.shape, p.group_size)? as u64;
    let mut enc = TensorEncoder::new(p.dtype, &p.shape, p.group_size)?;
    let check_len = |values: &[f32], want: usize| {
        if values.len() == want {
            Ok(())
        } else {
            Err(ConvertError::Invalid(format!(
                "tensor '{}': source gave {} values, shape {:?} needs {want}",
                p.name,
                values.len(),
                p.shape
            )))
        }
    };
    if rows * cols <= BLOCK_VALUES || !source.supports_row_reads() {
        let mut values = source.read_f32(&p.name)?;
        check_len(&values, rows * cols)?;
        check_finite(&p.name, &values, 0, cols)?;
        if let Some(t) = transform {
            t.apply(&mut values, 0, cols)?;
        }
        enc.push_rows(&values)?;
    } else {
        let block_rows = (BLOCK_VALUES / cols.max(1)).max(1);
        let mut r = 0;
        while r < rows {
            if options.cancel.load(Ordering::Relaxed) {
                return Err(ConvertError::Cancelled);
            }
            let end = (r + block_rows).min(rows);
            let mut values = source.read_f32_rows(&p.name, r..end)?;
            check_len(&values, (end - r) * cols)?;
            check_finite(&p.name, &values, r, cols)?;
            if let Some(t) = transform {
                t.apply(&mut values, r, cols)?;
            }
            enc.push_rows(&values)?;
            r = end;
            on_block(total * r as u64 / rows as u64);
        }
    }
    enc.finish()
}
