//! `--backend auto`: a short measured probe of the CPU and the GPU text models on this machine,
//! picking the faster by decode speed, with the decision cached on disk so later loads skip it.
//!
//! The cache is one small JSON file (`$XDG_CACHE_HOME/cellm/backend-probe.json`, else
//! `~/.cache/...`) holding one entry per (model file, adapter, driver, threads, KV precision,
//! engine build). An unreadable or corrupt file is ignored and rewritten; writes go through a
//! temporary file and a rename, so a reader never sees half a file.

use crate::format::CellmFile;
use crate::kv_cache::KvCache;
use crate::models::{self, Logits, ModelError, TextModel};
use crate::session::{Loaded, SessionError, SessionOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Set to `1` to neither read nor write the cache (every `auto` load probes).
pub const NO_CACHE_ENV: &str = "CELLM_NO_PROBE_CACHE";
/// Set to `1` to probe software adapters (lavapipe) too, which `auto` otherwise skips: lets CI
/// exercise the probe without a hardware GPU.
pub const SOFTWARE_ENV: &str = "CELLM_PROBE_SOFTWARE";

/// Most prompt tokens of the timed prefill chunk.
pub const PROBE_PREFILL: usize = 32;
/// Most decode steps timed per backend.
pub const PROBE_DECODE: usize = 8;
/// Decode stops early past this (a slow backend must not stall the load), after two steps at
/// least (one where it already lost to the rival, see [`measure`]).
const DECODE_BUDGET: Duration = Duration::from_millis(500);
/// The prefill chunk shrinks so that it would take about this long at the decode speed.
const PREFILL_BUDGET: Duration = Duration::from_millis(500);
/// Entries kept in the cache file (oldest dropped first).
const MAX_ENTRIES: usize = 64;
/// Version of the cache file's layout; another version is ignored.
const FILE_VERSION: u32 = 2;

/// How `auto` probes: where its decision is cached and whether software adapters take part.
#[derive(Clone, Debug, Default)]
pub struct ProbeSettings {
    /// The cache file (None: no cache, every load probes).
    pub cache_file: Option<PathBuf>,
    /// Probe software adapters too (see [`SOFTWARE_ENV`]).
    pub allow_software: bool,
}

impl ProbeSettings {
    /// The settings the environment asks for: the user cache file unless
    /// `CELLM_NO_PROBE_CACHE=1`, software adapters when `CELLM_PROBE_SOFTWARE=1`.
    pub fn from_env() -> Self {
        let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
        Self {
            cache_file: if on(NO_CACHE_ENV) {
                None
            } else {
                default_cache_file()
            },
            allow_software: on(SOFTWARE_ENV),
        }
    }
}

/// `$XDG_CACHE_HOME/cellm/backend-probe.json`, else under `~/.cache` (or `%LOCALAPPDATA%`).
pub fn default_cache_file() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // XDG asks to ignore relative paths.
    let base = var("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .or_else(|| var("LOCALAPPDATA"))?;
    Some(base.join("cellm").join("backend-probe.json"))
}

/// What a cached decision depends on: a change in any field re-probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeKey {
    /// The model file (canonical path where it resolves).
    pub model: String,
    pub model_bytes: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 where the platform has none).
    pub model_mtime_ns: u64,
    /// Adapter name and graphics API, e.g. "NVIDIA H100 (Vulkan)".
    pub adapter: String,
    /// Driver name and version as the adapter reports them.
    pub driver: String,
    /// CPU worker threads.
    pub threads: usize,
    /// KV cache precision ("f16", "q8", ...).
    pub kv: String,
    /// Engine version plus the running binary's size and mtime (kernels change between builds).
    pub engine: String,
}

impl ProbeKey {
    /// The key for `model` on `adapter`/`driver`; fails only where the model file's metadata
    /// cannot be read.
    pub fn new(
        model: &Path,
        adapter: &str,
        driver: &str,
        threads: usize,
        kv: &str,
    ) -> std::io::Result<Self> {
        let meta = std::fs::metadata(model)?;
        let canonical = std::fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
        Ok(Self {
            model: canonical.display().to_string(),
            model_bytes: meta.len(),
            model_mtime_ns: mtime_ns(&meta),
            adapter: adapter.to_owned(),
            driver: driver.to_owned(),
            threads,
            kv: kv.to_owned(),
            engine: engine_build(),
        })
    }

    /// Whether `other` is an older measurement of the same setting (same model path, adapter,
    /// threads and KV precision): it is replaced rather than kept beside the new one.
    fn same_setting(&self, other: &ProbeKey) -> bool {
        self.model == other.model
            && self.adapter == other.adapter
            && self.threads == other.threads
            && self.kv == other.kv
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// "0.1.0+<exe bytes>.<exe mtime>": the crate version alone does not change between builds.
fn engine_build() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("+{}.{}", m.len(), mtime_ns(&m)))
        .unwrap_or_default();
    format!("{}{exe}", env!("CARGO_PKG_VERSION"))
}

/// One backend's measured speed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speeds {
    /// None where the probe skipped it (the backend had already lost on decode).
    pub prefill_tok_s: Option<f64>,
    pub decode_tok_s: f64,
}

/// Both backends' speeds; the GPU wins only when it decodes strictly faster.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub cpu: Speeds,
    pub gpu: Speeds,
}

impl ProbeOutcome {
    pub fn gpu_wins(&self) -> bool {
        self.gpu.decode_tok_s > self.cpu.decode_tok_s
    }

    /// "GPU 118 vs CPU 63 tok/s" (decode speeds; the winner first).
    pub fn summary(&self) -> String {
        let (g, c) = (tok_s(self.gpu.decode_tok_s), tok_s(self.cpu.decode_tok_s));
        if self.gpu_wins() {
            format!("GPU {g} vs CPU {c} tok/s")
        } else {
            format!("CPU {c} vs GPU {g} tok/s")
        }
    }
}

/// Whole tok/s above 10, one decimal below (slow adapters).
fn tok_s(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<CacheEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: ProbeKey,
    outcome: ProbeOutcome,
}

/// Entries of the cache file; a missing, unreadable, corrupt or other-version file reads as none.
fn read_entries(file: &Path) -> Vec<CacheEntry> {
    std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
        .filter(|f| f.version == FILE_VERSION)
        .map(|f| f.entries)
        .unwrap_or_default()
}

/// The cached outcome for `key`, if the file holds one.
pub fn read_cached(file: &Path, key: &ProbeKey) -> Option<ProbeOutcome> {
    read_entries(file)
        .into_iter()
        .find(|e| &e.key == key)
        .map(|e| e.outcome)
}

/// Stores `outcome` for `key`, replacing older measurements of the same setting; writes a
/// temporary file beside `file` and renames it over.
pub fn write_cached(file: &Path, key: &ProbeKey, outcome: &ProbeOutcome) -> std::io::Result<()> {
    let mut entries = read_entries(file);
    entries.retain(|e| !key.same_setting(&e.key));
    entries.push(CacheEntry {
        key: key.clone(),
        outcome: *outcome,
    });
    let excess = entries.len().saturating_sub(MAX_ENTRIES);
    entries.drain(..excess);
    let json = serde_json::to_vec_pretty(&CacheFile {
        version: FILE_VERSION,
        entries,
    })
    .map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per process and call: two sessions loading at once must not share a temporary.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!(".{}-{n}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `auto`: the GPU model when a probe (or its cached result) says it decodes faster than the
/// CPU, else the CPU model; a missing or failing GPU falls back to the CPU with a message on
/// stderr. The description says why, e.g. "cpu (auto: CPU 63 vs GPU 40 tok/s)".
#[cfg(feature = "gpu")]
pub(crate) fn load_auto<'a>(
    file: &'a CellmFile,
    path: &Path,
    options: &SessionOptions,
    pool: &rayon::ThreadPool,
    settings: &ProbeSettings,
) -> Result<Loaded<'a>, SessionError> {
    use crate::kernels::gpu::GpuContext;
    let on_cpu = |why: &str| -> Result<Loaded<'a>, SessionError> {
        Ok((models::load_model(file)?, format!("cpu (auto: {why})")))
    };
    let gpu_failed = |why: &dyn std::fmt::Display| {
        eprintln!("GPU backend unavailable ({why}); using the CPU");
        on_cpu("GPU failed")
    };
    let ctx = match GpuContext::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no usable GPU adapter ({e}); using the CPU");
            return on_cpu("no GPU adapter");
        }
    };
    let adapter = ctx.adapter().clone();
    if !models::gpu::is_hardware(&ctx) && !settings.allow_software {
        return on_cpu(&format!("{} is a software adapter", adapter.name));
    }
    let gpu_desc = |why: &str| {
        if options.kv_precision.is_quantized() {
            eprintln!(
                "the GPU KV cache holds f16 rows ({} is CPU-only)",
                options.kv_precision.name()
            );
        }
        format!(
            "gpu: {} ({}, {}; auto: {why})",
            adapter.name, adapter.backend, adapter.device_type
        )
    };
    let info = ctx.device().adapter_info();
    let driver = format!("{} {}", info.driver, info.driver_info);
    // No key (the file's metadata is unreadable): probe without the cache.
    let key = ProbeKey::new(
        path,
        &format!("{} ({})", adapter.name, adapter.backend),
        driver.trim(),
        pool.current_num_threads(),
        options.kv_precision.name(),
    )
    .ok();
    let cache = settings.cache_file.as_deref().zip(key.as_ref());

    if let Some(outcome) = cache.and_then(|(f, k)| read_cached(f, k)) {
        let why = format!("{}, cached", outcome.summary());
        if !outcome.gpu_wins() {
            return on_cpu(&why);
        }
        return match models::gpu::load(file, ctx, options.kv_precision) {
            Ok(model) => Ok((model, gpu_desc(&why))),
            Err(e) => gpu_failed(&e),
        };
    }

    let mut gpu = match models::gpu::load(file, ctx, options.kv_precision) {
        Ok(m) => m,
        Err(e) => return gpu_failed(&e),
    };
    let mut cpu = models::load_model(file)?;
    // Scratch caches shaped like the session's, so the GPU's device state is sized once.
    let cfg = cpu.config();
    let limit = crate::session::context_limit(options, cfg);
    let scratch = || {
        KvCache::with_rotation(
            cfg,
            limit,
            models::chunk_size(cfg),
            options.kv_precision,
            options.kv_rotation,
        )
    };
    let (mut gpu_cache, mut cpu_cache) = (scratch(), scratch());
    // The CPU first: a GPU far slower than it stops early.
    let cpu_speed = pool.install(|| measure(cpu.as_mut(), &mut cpu_cache, None))?;
    let rival = Some(cpu_speed.decode_tok_s);
    let gpu_speed = match pool.install(|| measure(gpu.as_mut(), &mut gpu_cache, rival)) {
        Ok(s) => s,
        Err(e) => {
            drop(gpu);
            eprintln!("GPU backend unavailable ({e}); using the CPU");
            return Ok((cpu, "cpu (auto: GPU failed)".into()));
        }
    };
    let outcome = ProbeOutcome {
        cpu: cpu_speed,
        gpu: gpu_speed,
    };
    if let Some((f, k)) = cache
        && let Err(e) = write_cached(f, k, &outcome)
    {
        eprintln!("could not cache the backend probe in {} ({e})", f.display());
    }
    let why = outcome.summary();
    if outcome.gpu_wins() {
        Ok((gpu, gpu_desc(&why)))
    } else {
        Ok((cpu, format!("cpu (auto: {why})")))
    }
}

/// Without GPU support `auto` is the CPU.
#[cfg(not(feature = "gpu"))]
pub(crate) fn load_auto<'a>(
    file: &'a CellmFile,
    _path: &Path,
    _options: &SessionOptions,
    _pool: &rayon::ThreadPool,
    _settings: &ProbeSettings,
) -> Result<Loaded<'a>, SessionError> {
    Ok((
        models::load_model(file)?,
        "cpu (auto: this build has no GPU support)".into(),
    ))
}

/// Times `model` on a scratch cache (cleared on return): one warm-up step (so pipelines and
/// lazily built buffers exist), up to [`PROBE_DECODE`] timed steps, then a warmed-up prefill
/// chunk of up to [`PROBE_PREFILL`] tokens, fewer where the decode speed says a full chunk
/// would take long. Given the `rival`'s decode tok/s, a model that decodes at under half of it
/// stops after one timed step and skips the prefill (it has lost; a slow backend must not
/// stall the load). Run it inside the session's thread pool.
pub fn measure(
    model: &mut dyn TextModel,
    cache: &mut KvCache,
    rival: Option<f64>,
) -> Result<Speeds, ModelError> {
    let vocab = model.config().vocab_size.max(1);
    let n = cache.limit().min(PROBE_PREFILL.max(1 + PROBE_DECODE));
    // Fixed ids spread over the vocabulary, past the low control tokens where there is room.
    let lo = 256.min(vocab / 2);
    let ids: Vec<u32> = (0..n)
        .map(|i| (lo + (i * 7919) % (vocab - lo)) as u32)
        .collect();
    cache.clear();
    let result = timed_run(model, cache, &ids, rival);
    cache.clear();
    result
}

fn timed_run(
    model: &mut dyn TextModel,
    cache: &mut KvCache,
    ids: &[u32],
    rival: Option<f64>,
) -> Result<Speeds, ModelError> {
    let n = ids.len();
    let t = Instant::now();
    model.forward(&ids[..1], None, 0, cache, Logits::Last)?;
    // Seconds per step: the warm-up's (an upper bound, with compiles) until steps are timed.
    let mut step_secs = t.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut steps = 0usize;
    let mut lost = false;
    for (pos, &id) in ids.iter().enumerate().take(1 + PROBE_DECODE).skip(1) {
        model.forward(&[id], None, pos, cache, Logits::Last)?;
        steps += 1;
        let secs = t1.elapsed().as_secs_f64();
        lost = rival.is_some_and(|r| steps as f64 / secs.max(1e-9) < r / 2.0);
        if lost || (steps >= 2 && t1.elapsed() > DECODE_BUDGET) {
            break;
        }
    }
    if steps > 0 {
        step_secs = t1.elapsed().as_secs_f64() / steps as f64;
    }
    let decode_tok_s = 1.0 / step_secs.max(1e-9);
    if lost {
        return Ok(Speeds {
            prefill_tok_s: None,
            decode_tok_s,
        });
    }

    // Batched prefill runs faster per token than decode, so this stays within the budget.
    let affordable = (PREFILL_BUDGET.as_secs_f64() / step_secs.max(1e-9)) as usize;
    let prefill = affordable.clamp(2, PROBE_PREFILL).min(n);
    // A 2-token chunk first: the prefill path may use other kernels than the steps.
    cache.clear();
    model.forward(&ids[..prefill.min(2)], None, 0, cache, Logits::Last)?;
    cache.clear();
    let t0 = Instant::now();
    model.forward(&ids[..prefill], None, 0, cache, Logits::Last)?;
    let prefill_tok_s = prefill as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    Ok(Speeds {
        prefill_tok_s: Some(prefill_tok_s),
        decode_tok_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, threads: usize) -> ProbeKey {
        ProbeKey {
            model: model.into(),
            model_bytes: 10,
            model_mtime_ns: 1,
            adapter: "Test (Vulkan)".into(),
            driver: "test 1.0".into(),
            threads,
            kv: "f16".into(),
            engine: "0.1.0".into(),
        }
    }

    fn outcome(gpu: f64, cpu: f64) -> ProbeOutcome {
        ProbeOutcome {
            cpu: Speeds {
                prefill_tok_s: Some(100.0),
                decode_tok_s: cpu,
            },
            gpu: Speeds {
                prefill_tok_s: None,
                decode_tok_s: gpu,
            },
        }
    }

    #[test]
    fn cache_round_trip_and_key_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/probe.json");
        let (a, b) = (key("/m/a.cellm", 4), key("/m/b.cellm", 4));
        assert_eq!(read_cached(&file, &a), None);
        write_cached(&file, &a, &outcome(118.0, 63.0)).unwrap();
        write_cached(&file, &b, &outcome(40.0, 63.0)).unwrap();
        assert_eq!(read_cached(&file, &a), Some(outcome(118.0, 63.0)));
        assert_eq!(read_cached(&file, &b), Some(outcome(40.0, 63.0)));
        // Any field differing is a miss.
        let mut moved = a.clone();
        moved.model_mtime_ns = 2;
        assert_eq!(read_cached(&file, &moved), None);
        assert_eq!(read_cached(&file, &key("/m/a.cellm", 2)), None);
        // A newer measurement of the same setting replaces the old one.
        write_cached(&file, &moved, &outcome(50.0, 63.0)).unwrap();
        assert_eq!(read_cached(&file, &a), None);
        assert_eq!(read_cached(&file, &moved), Some(outcome(50.0, 63.0)));
        assert_eq!(read_entries(&file).len(), 2);
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["probe.json"]);
    }

    #[test]
    fn corrupt_cache_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe.json");
        let k = key("/m/a.cellm", 4);
        for junk in [
            &b"{not json"[..],
            b"",
            b"{\"version\":99,\"entries\":[]}",
            b"[1,2]",
        ] {
            std::fs::write(&file, junk).unwrap();
            assert_eq!(read_cached(&file, &k), None);
            write_cached(&file, &k, &outcome(1.0, 2.0)).unwrap();
            assert_eq!(read_cached(&file, &k), Some(outcome(1.0, 2.0)));
        }
    }

    #[test]
    fn cache_keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe.json");
        for i in 0..MAX_ENTRIES + 5 {
            write_cached(&file, &key(&format!("/m/{i}"), 1), &outcome(1.0, 2.0)).unwrap();
        }
        assert_eq!(read_entries(&file).len(), MAX_ENTRIES);
        assert_eq!(read_cached(&file, &key("/m/0", 1)), None);
        let last = format!("/m/{}", MAX_ENTRIES + 4);
        assert!(read_cached(&file, &key(&last, 1)).is_some());
    }

    #[test]
    fn summary_names_the_winner_first() {
        assert_eq!(outcome(118.4, 63.0).summary(), "GPU 118 vs CPU 63 tok/s");
        assert_eq!(outcome(4.25, 63.0).summary(), "CPU 63 vs GPU 4.2 tok/s");
        assert!(!outcome(63.0, 63.0).gpu_wins());
    }

    #[test]
    fn key_reads_the_file_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.cellm");
        std::fs::write(&path, b"12345").unwrap();
        let k = ProbeKey::new(&path, "A (Vulkan)", "d 1", 3, "f16").unwrap();
        assert_eq!(k.model_bytes, 5);
        assert!(k.model_mtime_ns > 0);
        assert!(k.engine.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(ProbeKey::new(&dir.path().join("missing"), "A", "d", 1, "f16").is_err());
    }
}
