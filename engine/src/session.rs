//! The generation API used by the CLI and the app: load a model once, then generate with a token
//! stream, cancellation from another thread, and stats.

pub use crate::backend_probe::ProbeSettings;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::format::CellmFile;
use crate::kv_cache::KvCache;
pub use crate::memory::MemoryBreakdown;
use crate::models::{self, Logits, MediaRows, ModelError, TextModel};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens but the context holds {limit}")]
    ContextFull { tokens: usize, limit: usize },
    #[error("{0}")]
    Other(String),
}

/// Logit values [`Session::logits_for`] may return (4 GiB of f32).
const MAX_TEACHER_FORCED_LOGITS: usize = 1 << 30;

#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Worker threads for the CPU kernels (None: all cores).
    pub threads: Option<usize>,
    /// Cap on the context length (None: the model's own limit).
    pub max_context: Option<usize>,
    /// Storage of the KV cache (f16 by default; f32 for exact reference comparisons; q8 / q4
    /// for long contexts in little memory).
    pub kv_precision: crate::kv_cache::KvPrecision,
    /// Rotation of K/V rows before a q8 / q4 cache quantizes them (ignored for f16 / f32).
    pub kv_rotation: crate::kv_cache::KvRotation,
    /// Where the text model runs (CPU by default).
    pub backend: Backend,
}

/// Where the text model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The CPU kernels.
    #[default]
    Cpu,
    /// The wgpu kernels; falls back to the CPU (with a message on stderr) when no adapter
    /// exists, the device fails, or the model family has no GPU path yet.
    Gpu,
    /// The faster of the two on this machine, by a short measured probe of decode speed whose
    /// result is cached (see [`crate::backend_probe`]). Only hardware adapters (discrete or
    /// integrated, not a software rasterizer such as lavapipe) are probed; without one, or when
    /// the GPU fails, the CPU.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// Soft tokens produced by an encoder (image or audio), already projected to the text hidden size.
#[derive(Clone, Debug)]
pub struct MediaEmbedding {
    pub kind: MediaKind,
    /// [tokens, hidden] row-major.
    pub embeddings: Vec<f32>,
    pub tokens: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub role: Role,
    pub text: String,
    /// Media attached to this message, in order (placed before the text, as Gemma expects).
    pub media: Vec<MediaEmbedding>,
}

/// What to feed the model.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Rendered through the model's chat template, with a generation prompt appended.
    Chat(Vec<Message>),
    /// Fed as is (BOS prepended when the tokenizer says so).
    Raw(String),
    /// Token ids fed as is.
    Tokens(Vec<u32>),
}

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_new_tokens: 256,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfTurn,
    MaxTokens,
    Cancelled,
    ContextFull,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest were reused from the cache).
    pub prefill_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub stop: StopReason,
}

impl GenerationStats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_secs.max(1e-9)
    }
}

/// Shared flag that stops a running generation from another thread.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Facts about the loaded model for the CLI and the app.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub family: String,
    pub profile: String,
    pub file_bytes: u64,
    pub parameters: u64,
    pub context_length: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub has_vision: bool,
    pub has_audio: bool,
    /// Whether the checkpoint carries its own chat template. Base (pretrained) checkpoints such
    /// as the Gemma 3 270M GGUF do not; chat markup confuses them, so apps prompt them as text
    /// completion instead.
    pub has_chat_template: bool,
    pub fidelity: Option<serde_json::Value>,
}

/// A loaded model with its tokenizer, chat template and KV cache.
pub struct Session {
    // Field order matters: `model` borrows from the memory map inside `file` and must be
    // dropped before it (fields drop in declaration order).
    model: Box<dyn TextModel + 'static>,
    file: Arc<CellmFile>,
    cache: KvCache,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    template_error: Option<String>,
    pool: rayon::ThreadPool,
    info: ModelInfo,
    cancel: CancelToken,
    /// Tokens whose K/V the cache holds (`cache.len()` of them).
    cached: Vec<u32>,
    /// Position of the first media soft token in `cached` (usize::MAX if none): placeholder ids
    /// do not identify their media, so reuse stops there.
    cached_media_from: usize,
    stop_ids: Vec<u32>,
    add_bos: bool,
    /// Reused copy of the last logits for the sampler (which edits them in place).
    logits: Vec<f32>,
    /// Which backend runs the model ("cpu", or "gpu: <adapter>").
    backend: String,
    /// Anonymous memory the tokenizer build kept (measured at load).
    tokenizer_bytes: u64,
}

/// A loaded text model and the description of the backend running it.
pub(crate) type Loaded<'a> = (Box<dyn TextModel + 'a>, String);

/// The text model on the requested backend, falling back to the CPU (with a message on stderr)
/// when the GPU is unavailable; returns it with the backend's description. `auto` measures
/// both (see [`crate::backend_probe`]).
fn load_on_backend<'a>(
    file: &'a CellmFile,
    path: &Path,
    options: &SessionOptions,
    pool: &rayon::ThreadPool,
    probe: &ProbeSettings,
) -> Result<Loaded<'a>, SessionError> {
    match options.backend {
        Backend::Cpu => {}
        Backend::Auto => return crate::backend_probe::load_auto(file, path, options, pool, probe),
        Backend::Gpu => match try_gpu(file, options) {
            Ok(found) => return Ok(found),
            Err(why) => eprintln!("GPU backend unavailable ({why}); using the CPU"),
        },
    }
    Ok((models::load_model(file)?, "cpu".to_string()))
}

/// Positions the session's KV cache holds: the option's cap within the model's limit.
pub(crate) fn context_limit(options: &SessionOptions, cfg: &models::config::TextConfig) -> usize {
    options
        .max_context
        .map_or(cfg.max_position, |m| m.min(cfg.max_position))
        .max(1)
}

#[cfg(feature = "gpu")]
fn try_gpu<'a>(file: &'a CellmFile, options: &SessionOptions) -> Result<Loaded<'a>, String> {
    use crate::kernels::gpu::GpuContext;
    let ctx = GpuContext::new().map_err(|e| e.to_string())?;
    let desc = format!("gpu: {}", ctx.adapter());
    if !matches!(
        options.kv_precision,
        crate::kv_cache::KvPrecision::F16 | crate::kv_cache::KvPrecision::F32
    ) {
        eprintln!(
            "the GPU KV cache holds f16 rows ({} is CPU-only)",
            options.kv_precision.name()
        );
    }
    let model = models::gpu::load(file, ctx, options.kv_precision).map_err(|e| e.to_string())?;
    Ok((model, desc))
}

#[cfg(not(feature = "gpu"))]
fn try_gpu<'a>(_file: &'a CellmFile, _options: &SessionOptions) -> Result<Loaded<'a>, String> {
    Err("this build has no GPU support (feature `gpu`)".into())
}

impl From<ModelError> for SessionError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Format(f) => SessionError::Format(f),
            ModelError::UnsupportedFamily(f) => {
                SessionError::Unsupported(format!("model family '{f}'"))
            }
            ModelError::Config(c) => SessionError::Unsupported(c.to_string()),
            ModelError::Kv(crate::kv_cache::KvError::ContextFull { tokens, limit }) => {
                SessionError::ContextFull { tokens, limit }
            }
            other => SessionError::Other(other.to_string()),
        }
    }
}

/// A prompt ready to feed: token ids, positions of media soft tokens, and their rows.
type Prepared = (Vec<u32>, Vec<usize>, Vec<f32>);

fn other(e: impl std::fmt::Display) -> SessionError {
    SessionError::Other(e.to_string())
}

impl Session {
    /// Loads `path`; `--backend auto` probes with the settings the environment asks for
    /// ([`ProbeSettings::from_env`]).
    pub fn load(path: &Path, options: SessionOptions) -> Result<Self, SessionError> {
        Self::load_with_probe(path, options, &ProbeSettings::from_env())
    }

    /// As [`Session::load`], with explicit settings for the `auto` probe (its cache file, and
    /// whether software adapters take part).
    pub fn load_with_probe(
        path: &Path,
        options: SessionOptions,
        probe: &ProbeSettings,
    ) -> Result<Self, SessionError> {
        let mut file = CellmFile::open(path)?;
        // Built before the model (an empty heap gives a clean measure of what it keeps), and
        // from JSON moved out of the header, which is then dropped.
        let tokenizer_json = file.take_tokenizer_json();
        let anon0 = crate::memory::rss_anon_bytes();
        let mut tokenizer = Tokenizer::from_json(&tokenizer_json).map_err(other)?;
        let json_len = tokenizer_json.len() as u64;
        drop(tokenizer_json);
        crate::memory::release_free_heap();
        // The `tokenizers` crate does not tell its size: the growth of anonymous memory, with
        // the JSON (resident at the first reading, freed since) added back.
        let tokenizer_bytes = tokenizer.heap_bytes().map_or_else(
            || (crate::memory::rss_anon_bytes() + json_len).saturating_sub(anon0),
            |b| b as u64,
        );
        let file = Arc::new(file);
        // SAFETY: the model borrows tensor views from `file`'s memory map and header. The
        // `CellmFile` lives on the heap inside the `Arc`, is never mutated, and the `Arc` is
        // stored in the same `Session` after `model`, so it outlives every borrow.
        let file_ref: &'static CellmFile = unsafe { &*Arc::as_ptr(&file) };
        // Built first: the `auto` probe times the CPU model on these threads.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.unwrap_or(0))
            .build()
            .map_err(other)?;
        let (model, backend) = load_on_backend(file_ref, path, &options, &pool, probe)?;
        if backend.starts_with("gpu") {
            // The weights now live on the device; the upload paged in the whole file, of which
            // the GPU stack later reads only embedding rows.
            file.release_resident_pages();
            crate::memory::release_free_heap();
        }
        let header = file.header();
        let cfg = model.config();

        if header.tokenizer.bos_token_id.is_some() {
            tokenizer.set_bos_id(header.tokenizer.bos_token_id);
        }
        let bos_token = header
            .tokenizer
            .bos_token_id
            .and_then(|id| tokenizer.token(id))
            .unwrap_or_else(|| "<bos>".into());
        let (template, template_error) = match ChatTemplate::new(
            header.tokenizer.chat_template.as_deref(),
            &header.family,
            &bos_token,
        ) {
            Ok(t) => (Some(t), None),
            // Raw prompts still work; chat prompts report this.
            Err(e) => (None, Some(e.to_string())),
        };

        let mut stop_ids = header.tokenizer.eos_token_ids.clone();
        for name in ["end_of_turn", "turn_end"] {
            if let Some(&id) = header.tokenizer.special_tokens.get(name)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }

        let limit = context_limit(&options, cfg);
        let cache = KvCache::with_rotation(
            cfg,
            limit,
            models::chunk_size(cfg),
            options.kv_precision,
            options.kv_rotation,
        );
        let parameters = header
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let info = ModelInfo {
            family: header.family.clone(),
            profile: header.quantization.profile.clone(),
            file_bytes,
            parameters,
            context_length: limit,
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            has_chat_template: header.tokenizer.chat_template.is_some(),
            has_vision: header.tensors.iter().any(|t| t.component() == "vision"),
            has_audio: header.tensors.iter().any(|t| t.component() == "audio"),
            fidelity: header.fidelity.clone(),
        };
        let add_bos = header.tokenizer.add_bos;
        Ok(Self {
            model,
            file,
            cache,
            tokenizer,
            template,
            template_error,
            pool,
            info,
            cancel: CancelToken::new(),
            cached: Vec::new(),
            cached_media_from: usize::MAX,
            stop_ids,
            add_bos,
            logits: Vec::new(),
            backend,
            tokenizer_bytes,
        })
    }

    /// Where the session's memory goes now (see [`MemoryBreakdown`]); media encoders loaded
    /// beside the session are not included.
    pub fn memory(&self) -> MemoryBreakdown {
        let m = self.model.memory();
        MemoryBreakdown {
            file_bytes: self.file.file_len(),
            mapped_resident_bytes: crate::memory::mapped_resident_bytes(self.file.path()),
            tokenizer_bytes: self.tokenizer_bytes,
            kv_cache_bytes: self.cache.bytes() as u64,
            scratch_bytes: m.scratch_bytes,
            logits_bytes: m.logits_bytes + 4 * self.logits.capacity() as u64,
            device_weight_bytes: m.device_weight_bytes,
            device_state_bytes: m.device_state_bytes,
            ..Default::default()
        }
        .with_process()
    }

    /// Which backend runs the model: "cpu", or "gpu: <adapter> (<api>, <device type>)"; under
    /// `auto`, with the reason, e.g. "cpu (auto: CPU 63 vs GPU 40 tok/s)" or
    /// "gpu: <adapter> (<api>, <device type>; auto: GPU 118 vs CPU 63 tok/s, cached)".
    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A token that cancels the generation running on this session (clone it to another thread).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The open file (header, tensor table).
    pub fn file(&self) -> &CellmFile {
        &self.file
    }

    /// Bytes of weights read per decoded token (for bandwidth estimates).
    pub fn weight_bytes_per_token(&self) -> usize {
        self.model.weight_bytes_per_token()
    }

    /// Token ids that end a generation (EOS and end-of-turn by default).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Replaces the stop ids (e.g. none, for benchmarks that must decode a fixed count).
    pub fn set_stop_ids(&mut self, ids: Vec<u32>) {
        self.stop_ids = ids;
    }

    /// Tokens whose keys and values the cache holds (prompt and fed reply tokens).
    pub fn context_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the KV cache (the next call recomputes its whole prompt).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.cached.clear();
        self.cached_media_from = usize::MAX;
    }

    /// Token ids of a prompt, exactly as `generate` would feed them (media placeholders
    /// expanded to one token per soft token).
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, SessionError> {
        Ok(self.prepare(prompt)?.0)
    }

    /// Token ids plus the media soft tokens: (ids, positions of soft tokens, their rows).
    fn prepare(&self, prompt: &Prompt) -> Result<Prepared, SessionError> {
        match prompt {
            Prompt::Tokens(ids) => Ok((ids.clone(), Vec::new(), Vec::new())),
            Prompt::Raw(text) => Ok((
                self.tokenizer.encode(text, self.add_bos).map_err(other)?,
                Vec::new(),
                Vec::new(),
            )),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    SessionError::Other(
                        self.template_error
                            .clone()
                            .unwrap_or_else(|| "no chat template".into()),
                    )
                })?;
                let count = |m: &Message, k| m.media.iter().filter(|e| e.kind == k).count();
                let msgs: Vec<ChatMessage> = messages
                    .iter()
                    .map(|m| ChatMessage {
                        role: m.role,
                        content: m.text.clone(),
                        images: count(m, MediaKind::Image),
                        audios: count(m, MediaKind::Audio),
                    })
                    .collect();
                // Templates write <bos> themselves; add it only when one did not. Message text
                // never becomes control tokens (ChatTemplate::encode).
                let mut ids = template
                    .encode(&self.tokenizer, &msgs, true)
                    .map_err(other)?;
                if self.add_bos
                    && let Some(bos) = self.tokenizer.bos_id()
                    && ids.first() != Some(&bos)
                {
                    ids.insert(0, bos);
                }
                // The template renders images before audio within a message.
                let media: Vec<&MediaEmbedding> = messages
                    .iter()
                    .flat_map(|m| {
                        let images = m.media.iter().filter(|e| e.kind == MediaKind::Image);
                        let audio = m.media.iter().filter(|e| e.kind == MediaKind::Audio);
                        images.chain(audio)
                    })
                    .collect();
                if media.is_empty() {
                    return Ok((ids, Vec::new(), Vec::new()));
                }
                self.expand_media(&ids, &media)
            }
        }
    }

    /// Replaces each rendered media marker (the placeholder token, or the begin-of-image /
    /// begin-of-audio token that Gemma 3 templates write) with `[begin] N x placeholder [end]`,
    /// as the Hugging Face processors do, and returns the soft-token positions and rows.
    fn expand_media(
        &self,
        ids: &[u32],
        media: &[&MediaEmbedding],
    ) -> Result<Prepared, SessionError> {
        let h = self.info.hidden_size;
        let special = &self.file.header().tokenizer.special_tokens;
        let get = |k: &str| special.get(k).copied();
        let mut out =
            Vec::with_capacity(ids.len() + media.iter().map(|m| m.tokens + 2).sum::<usize>());
        let (mut positions, mut rows) = (Vec::new(), Vec::new());
        let mut i = 0;
        for m in media {
            let (name, begin, end) = match m.kind {
                MediaKind::Image => ("image", get("boi"), get("eoi")),
                MediaKind::Audio => ("audio", get("boa"), get("eoa")),
            };
            let placeholder = get(name).ok_or_else(|| {
                SessionError::Unsupported(format!("this model has no {name} placeholder token"))
            })?;
            if m.embeddings.len() != m.tokens * h {
                return Err(SessionError::Other(format!(
                    "{name} embedding has {} floats for {} tokens of width {h}",
                    m.embeddings.len(),
                    m.tokens
                )));
            }
            let at = (i..ids.len())
                .find(|&j| ids[j] == placeholder || Some(ids[j]) == begin)
                .ok_or_else(|| {
                    SessionError::Other(format!("the chat template rendered no {name} marker"))
                })?;
            out.extend_from_slice(&ids[i..at]);
            if let Some(b) = begin {
                out.push(b);
            }
            positions.extend(out.len()..out.len() + m.tokens);
            out.extend(std::iter::repeat_n(placeholder, m.tokens));
            rows.extend_from_slice(&m.embeddings);
            i = at + 1;
            if let Some(e) = end {
                out.push(e);
                // Drop an end marker the template already wrote.
                if ids.get(i) == Some(&e) {
                    i += 1;
                }
            }
        }
        out.extend_from_slice(&ids[i..]);
        Ok((out, positions, rows))
    }

    /// Generates a reply. `on_text` receives each decoded text piece as soon as it is final.
    /// Reuses the KV cache for the longest common token prefix with the previous call.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats, SessionError> {
        let (ids, media_pos, media_rows) = self.prepare(prompt)?;
        if ids.is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        let limit = self.cache.limit();
        if ids.len() >= limit {
            return Err(SessionError::ContextFull {
                tokens: ids.len(),
                limit,
            });
        }
        let vocab = self.info.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(SessionError::Other(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }

        // Reuse the cached prefix, but always recompute at least the last prompt token (its
        // logits start the reply).
        let common = self
            .cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(self.cache.len())
            .min(ids.len() - 1)
            // Same placeholder ids may carry different media: recompute from the first one.
            .min(media_pos.first().copied().unwrap_or(usize::MAX))
            .min(self.cached_media_from);
        let reuse = self.cache.truncate(common);
        self.cached.truncate(reuse);

        self.cancel.reset();
        let mut sampler = Sampler::new(&params.sampling);
        let window = params.sampling.repetition_window;
        let mut history = ids.clone();
        // Generation stops at the context limit, so never reserve beyond it.
        history.reserve(
            params
                .max_new_tokens
                .min(self.cache.limit())
                .saturating_add(1),
        );

        let t0 = Instant::now();
        let Self {
            model,
            cache,
            pool,
            logits,
            ..
        } = self;
        let shifted: Vec<usize> = media_pos.iter().map(|p| p - reuse).collect();
        let media = (!shifted.is_empty()).then_some(MediaRows {
            positions: &shifted,
            rows: &media_rows,
        });
        let last = pool.install(|| model.forward(&ids[reuse..], media, reuse, cache, Logits::Last));
        let last = match last {
            Ok(l) => l,
            Err(e) => {
                self.reset();
                return Err(e.into());
            }
        };
        logits.clear();
        logits.extend_from_slice(last);
        self.cached.clear();
        self.cached.extend_from_slice(&ids);
        self.cached_media_from = media_pos.first().copied().unwrap_or(usize::MAX);
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut stream = self.tokenizer.stream();
        let mut generated = 0usize;
        let stop = loop {
            if self.cancel.is_cancelled() {
                break StopReason::Cancelled;
            }
            if generated >= params.max_new_tokens {
                break StopReason::MaxTokens;
            }
            if self.logits.iter().any(|v| !v.is_finite()) {
                // Only now pay for the per-layer search (numerics.rs).
                let place = crate::numerics::locate_non_finite(&self.file, &history);
                self.reset();
                return Err(SessionError::Other(format!(
                    "the model produced NaN or infinite logits at position {}; {place}",
                    history.len().saturating_sub(1)
                )));
            }
            let recent = &history[history.len().saturating_sub(window)..];
            let next = sampler.sample(&mut self.logits, recent);
            generated += 1;
            if self.stop_ids.contains(&next) {
                break StopReason::EndOfTurn;
            }
            history.push(next);
            if let Some(text) = stream.push(next) {
                on_text(&text);
            }
            if generated >= params.max_new_tokens {
                break StopReason::MaxTokens;
            }
            let pos = self.cache.len();
            if pos + 1 > limit {
                break StopReason::ContextFull;
            }
            let (model, cache, pool) = (&mut self.model, &mut self.cache, &self.pool);
            let out = pool.install(|| model.forward(&[next], None, pos, cache, Logits::Last));
            match out {
                Ok(l) => {
                    self.logits.clear();
                    self.logits.extend_from_slice(l);
                }
                Err(e) => {
                    self.cache.clear();
                    self.cached.clear();
                    return Err(e.into());
                }
            }
            self.cached.push(next);
        };
        if let Some(text) = stream.finish() {
            on_text(&text);
        }
        Ok(GenerationStats {
            prompt_tokens: ids.len(),
            prefill_tokens: ids.len() - reuse,
            generated_tokens: generated,
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
            stop,
        })
    }

    /// Teacher-forced logits at every position of `ids` ([ids.len(), vocab] row-major), for
    /// `cellm compare`. Media embeddings replace the placeholder tokens in order.
    pub fn logits_for(
        &mut self,
        ids: &[u32],
        media: &[MediaEmbedding],
    ) -> Result<Vec<f32>, SessionError> {
        if ids.is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        let limit = self.cache.limit();
        if ids.len() > limit {
            return Err(SessionError::ContextFull {
                tokens: ids.len(),
                limit,
            });
        }
        // Every position's logits are kept: refuse sizes that cannot be held rather than abort.
        let vocab = self.info.vocab_size;
        if ids.len().saturating_mul(vocab) > MAX_TEACHER_FORCED_LOGITS {
            return Err(SessionError::Other(format!(
                "{} positions x {vocab} vocabulary entries of logits exceed the {} GiB this \
                 comparison may hold; use at most {} positions",
                ids.len(),
                (MAX_TEACHER_FORCED_LOGITS * 4) >> 30,
                MAX_TEACHER_FORCED_LOGITS / vocab.max(1)
            )));
        }
        let (positions, rows) = self.media_rows(ids, media)?;
        self.reset();
        let media_rows = (!positions.is_empty()).then_some(MediaRows {
            positions: &positions,
            rows: &rows,
        });
        let (model, cache, pool) = (&mut self.model, &mut self.cache, &self.pool);
        let out = pool.install(|| {
            model
                .forward(ids, media_rows, 0, cache, Logits::All)
                .map(|l| l.to_vec())
        });
        // The cache now holds `ids`, but they may contain placeholders whose rows are gone.
        self.cache.clear();
        Ok(out?)
    }

    /// Positions of the image/audio placeholders in `ids` and the soft-token rows for them
    /// (images in order, then audio clips in order).
    fn media_rows(
        &self,
        ids: &[u32],
        media: &[MediaEmbedding],
    ) -> Result<(Vec<usize>, Vec<f32>), SessionError> {
        let h = self.info.hidden_size;
        let special = &self.file.header().tokenizer.special_tokens;
        let mut positions = Vec::new();
        let mut rows = Vec::new();
        for (kind, name) in [(MediaKind::Image, "image"), (MediaKind::Audio, "audio")] {
            let items: Vec<&MediaEmbedding> = media.iter().filter(|m| m.kind == kind).collect();
            let Some(&placeholder) = special.get(name) else {
                if items.is_empty() {
                    continue;
                }
                return Err(SessionError::Unsupported(format!(
                    "this model has no {name} placeholder token"
                )));
            };
            let at: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == placeholder).collect();
            let have: usize = items.iter().map(|m| m.tokens).sum();
            if items.is_empty() {
                continue;
            }
            if at.len() != have {
                return Err(SessionError::Other(format!(
                    "{} {name} placeholder tokens but {have} soft tokens",
                    at.len()
                )));
            }
            for m in &items {
                if m.embeddings.len() != m.tokens * h {
                    return Err(SessionError::Other(format!(
                        "{name} embedding has {} floats for {} tokens of width {h}",
                        m.embeddings.len(),
                        m.tokens
                    )));
                }
                rows.extend_from_slice(&m.embeddings);
            }
            positions.extend(at);
        }
        // Rows must follow increasing positions.
        let mut order: Vec<usize> = (0..positions.len()).collect();
        order.sort_by_key(|&i| positions[i]);
        let sorted_pos = order.iter().map(|&i| positions[i]).collect();
        let mut sorted_rows = Vec::with_capacity(rows.len());
        for &i in &order {
            sorted_rows.extend_from_slice(&rows[i * h..(i + 1) * h]);
        }
        Ok((sorted_pos, sorted_rows))
    }
}
