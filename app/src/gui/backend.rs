//! What the worker thread drives: a loaded model that streams text. A trait so tests can inject a
//! scripted backend; `EngineBackend` is the real one over `cellm_engine::session::Session`.

use super::model::{AttachmentKind, Author, ChatMessage};
use cellm_encoders::MediaEncoders;
use cellm_encoders::gpu::TowersGpu;
use cellm_engine::kv_cache::{KvPrecision, KvRotation};
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{
    CancelToken, GenerateParams, MediaEmbedding, Message, Prompt, Role, Session, SessionOptions,
    StopReason,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the side panel shows about the loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub family: String,
    pub profile: String,
    pub file_bytes: u64,
    pub parameters: u64,
    pub context_length: usize,
    pub has_vision: bool,
    pub has_audio: bool,
    /// The model has no chat template of its own (a base model): prompts are sent as plain text
    /// for it to continue, since chat markup makes such models ramble.
    pub completion_mode: bool,
    /// One line such as "KL 0.004 · top-1 98.1%" when the header records fidelity.
    pub fidelity: Option<String>,
    /// Where the model runs, as the engine reported it after loading (e.g. "cpu · 2 threads"
    /// or "gpu: <adapter>"); a GPU that failed shows as the CPU it fell back to.
    pub backend: String,
    /// Storage of the KV cache (e.g. "f16", "q8 · rotated").
    pub kv_cache: String,
}

impl ModelSummary {
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// One generation request: the whole conversation so far (the backend renders the template).
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub chat_id: String,
    pub system_prompt: String,
    pub messages: Vec<ChatMessage>,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
}

impl GenerateRequest {
    pub fn has_media(&self) -> bool {
        self.messages.iter().any(|m| !m.attachments.is_empty())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateOutcome {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub decode_tok_s: f64,
    pub cancelled: bool,
    /// Prompt tokens computed per second (0 when all came from the cache or unknown).
    pub prompt_tok_s: f64,
    /// Why generation ended, in words ("end of turn", "max tokens", "stopped", "context full").
    pub stop_reason: String,
}

pub trait Backend: Send {
    /// Loads a model (replacing any loaded one). Returns its summary and the token that cancels
    /// a running generation (the UI keeps a clone; Stop flips it). When it fails, the model
    /// loaded before stays loaded (the app keeps showing it).
    fn load(
        &mut self,
        path: &Path,
        options: &SessionOptions,
    ) -> Result<(ModelSummary, CancelToken), String>;
    /// Streams a reply through `on_text`; must return soon after the cancel token is set.
    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutcome, String>;
    fn unload(&mut self);
    /// The cancel token of the model loaded now, when a failed load brought back the earlier
    /// one (whose token changed); None keeps the token the app has.
    fn cancel_token(&self) -> Option<CancelToken> {
        None
    }
    /// Whether images/audio can be sent to the loaded model with this build.
    fn supports_media(&self, kind: AttachmentKind) -> bool;
}

/// The real engine, with the model's own vision/audio towers for attachments.
#[derive(Default)]
pub struct EngineBackend {
    session: Option<Session>,
    /// Soft tokens of attachments already encoded (history is re-sent every turn), by path.
    media_cache: HashMap<PathBuf, Vec<MediaEmbedding>>,
    /// The model's towers on the GPU when the session runs there: loaded at the first
    /// attachment, kept until the model changes (`Some(None)`: tried, the CPU towers are used).
    towers_gpu: Option<Option<Arc<TowersGpu>>>,
    /// Path and options of the loaded session (to load it again when a new load fails).
    loaded: Option<(PathBuf, SessionOptions)>,
}

impl Backend for EngineBackend {
    fn load(
        &mut self,
        path: &Path,
        options: &SessionOptions,
    ) -> Result<(ModelSummary, CancelToken), String> {
        if !path.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        // Free the old model before mapping the new one (two at once may not fit); when the
        // new one fails, the old one is loaded again so a bad file never costs the working model.
        let previous = self.loaded.take();
        self.session = None;
        self.media_cache.clear();
        self.towers_gpu = None;
        let session = match Session::load(path, options.clone()) {
            Ok(s) => s,
            Err(e) => {
                if let Some((old_path, old_options)) = previous
                    && let Ok(old) = Session::load(&old_path, old_options.clone())
                {
                    self.session = Some(old);
                    self.loaded = Some((old_path, old_options));
                }
                return Err(format!("could not load {}: {e}", path.display()));
            }
        };
        self.loaded = Some((path.to_path_buf(), options.clone()));
        let info = session.info();
        let summary = ModelSummary {
            path: path.to_path_buf(),
            family: info.family.clone(),
            profile: info.profile.clone(),
            file_bytes: info.file_bytes,
            parameters: info.parameters,
            context_length: info.context_length,
            has_vision: info.has_vision,
            has_audio: info.has_audio,
            completion_mode: !info.has_chat_template,
            fidelity: info.fidelity.as_ref().map(describe_fidelity),
            backend: describe_backend(session.backend(), options),
            kv_cache: describe_kv_cache(options),
        };
        let cancel = session.cancel_token();
        self.session = Some(session);
        Ok((summary, cancel))
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutcome, String> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| "no model is loaded".to_owned())?;
        encode_attachments(
            session,
            request,
            &mut self.media_cache,
            &mut self.towers_gpu,
        )?;
        let has_media = request.messages.iter().any(|m| !m.attachments.is_empty());
        let prompt = if !session.info().has_chat_template && !has_media {
            Prompt::Raw(completion_text(request))
        } else {
            Prompt::Chat(to_engine_messages(request, &self.media_cache))
        };
        let params = GenerateParams {
            sampling: request.sampling.clone(),
            max_new_tokens: request.max_new_tokens,
        };
        let stats = session
            .generate(&prompt, &params, on_text)
            .map_err(|e| e.to_string())?;
        Ok(GenerateOutcome {
            prompt_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated_tokens,
            decode_tok_s: stats.decode_tok_s(),
            cancelled: stats.stop == StopReason::Cancelled,
            prompt_tok_s: if stats.prefill_tokens > 0 {
                stats.prefill_tok_s()
            } else {
                0.0
            },
            stop_reason: match stats.stop {
                StopReason::EndOfTurn => "end of turn",
                StopReason::MaxTokens => "max tokens",
                StopReason::Cancelled => "stopped",
                StopReason::ContextFull => "context full",
            }
            .to_owned(),
        })
    }

    fn unload(&mut self) {
        self.session = None;
        self.loaded = None;
        self.media_cache.clear();
        self.towers_gpu = None;
    }

    fn cancel_token(&self) -> Option<CancelToken> {
        self.session.as_ref().map(Session::cancel_token)
    }

    fn supports_media(&self, kind: AttachmentKind) -> bool {
        self.session.as_ref().is_some_and(|s| match kind {
            AttachmentKind::Image => s.info().has_vision,
            AttachmentKind::Audio => s.info().has_audio,
        })
    }
}

/// Runs the model's towers over every attachment not encoded yet.
fn encode_attachments(
    session: &Session,
    request: &GenerateRequest,
    cache: &mut HashMap<PathBuf, Vec<MediaEmbedding>>,
    towers_gpu: &mut Option<Option<Arc<TowersGpu>>>,
) -> Result<(), String> {
    let todo: Vec<&super::model::Attachment> = request
        .messages
        .iter()
        .flat_map(|m| &m.attachments)
        .filter(|a| !cache.contains_key(&a.path))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let mut encoders = MediaEncoders::load(session.file())
        .map_err(|e| format!("cannot load the model's media towers: {e}"))?;
    // The towers run where the text stack runs; uploaded once per model.
    let gpu = towers_gpu.get_or_insert_with(|| {
        if !session.backend().starts_with("gpu") {
            return None;
        }
        TowersGpu::load(&encoders)
            .inspect_err(|e| eprintln!("media towers on the CPU: {e}"))
            .ok()
            .map(Arc::new)
    });
    if let Some(g) = gpu {
        encoders = encoders.with_gpu(g.clone());
    }
    for a in todo {
        let embeddings = match a.kind {
            AttachmentKind::Image => encoders.encode_image(&a.path).map(|e| vec![e]),
            AttachmentKind::Audio => encoders.encode_audio(&a.path),
        }
        .map_err(|e| format!("{}: {e}", a.file_name()))?;
        cache.insert(a.path.clone(), embeddings);
    }
    Ok(())
}

/// The conversation as one text for a base model to continue: each reply continues the text
/// before it, and a new user message starts on a new line.
fn completion_text(request: &GenerateRequest) -> String {
    let mut text = String::new();
    if !request.system_prompt.trim().is_empty() {
        text.push_str(request.system_prompt.trim());
        text.push_str("\n\n");
    }
    for m in &request.messages {
        if m.author == Author::User && !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&m.text);
    }
    text
}

fn to_engine_messages(
    request: &GenerateRequest,
    media: &HashMap<PathBuf, Vec<MediaEmbedding>>,
) -> Vec<Message> {
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !request.system_prompt.trim().is_empty() {
        out.push(Message {
            role: Role::System,
            text: request.system_prompt.clone(),
            media: Vec::new(),
        });
    }
    for m in &request.messages {
        // Images before audio, the order the Gemma 4 template places them in.
        let mut attached: Vec<&super::model::Attachment> = m.attachments.iter().collect();
        attached.sort_by_key(|a| a.kind == AttachmentKind::Audio);
        let media = attached
            .iter()
            .filter_map(|a| media.get(&a.path))
            .flatten()
            .cloned()
            .collect();
        out.push(Message {
            role: match m.author {
                Author::User => Role::User,
                Author::Assistant => Role::Assistant,
            },
            text: m.text.clone(),
            media,
        });
    }
    out
}

/// The engine's backend string, with the thread count when it runs on the CPU.
pub fn describe_backend(reported: &str, options: &SessionOptions) -> String {
    // "cpu", or "cpu (auto: <why>)" when `auto` chose it: the thread count goes after "cpu".
    match reported.strip_prefix("cpu") {
        Some(why) if why.is_empty() || why.starts_with(' ') => {
            let n = options
                .threads
                .unwrap_or_else(super::settings::available_threads);
            let plural = if n == 1 { "" } else { "s" };
            format!("cpu · {n} thread{plural}{why}")
        }
        _ => reported.to_owned(),
    }
}

/// The KV cache storage the options ask for, e.g. "q8 · rotated".
pub fn describe_kv_cache(options: &SessionOptions) -> String {
    let precision = match options.kv_precision {
        KvPrecision::F16 => "f16",
        KvPrecision::F32 => "f32",
        KvPrecision::Q8 => "q8",
        KvPrecision::Q4 => "q4",
    };
    // The rotation only matters for the quantized caches.
    let quantized = matches!(options.kv_precision, KvPrecision::Q8 | KvPrecision::Q4);
    if quantized && options.kv_rotation == KvRotation::Hadamard {
        format!("{precision} · rotated")
    } else {
        precision.to_owned()
    }
}

/// A short line from the header's fidelity record, whatever keys it has.
fn describe_fidelity(v: &serde_json::Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let mut parts = Vec::new();
    for (key, label) in [
        ("kl_mean", "KL"),
        ("mean_kl", "KL"),
        ("top1_match", "top-1"),
        ("top1", "top-1"),
        ("correlation", "corr"),
    ] {
        if let Some(x) = obj.get(key).and_then(|x| x.as_f64()) {
            if label == "top-1" && x <= 1.0 {
                parts.push(format!("{label} {:.1}%", x * 100.0));
            } else {
                parts.push(format!("{label} {x:.4}"));
            }
        }
    }
    if parts.is_empty() {
        obj.iter()
            .take(3)
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ")
    } else {
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_text_keeps_the_auto_reason() {
        let options = SessionOptions {
            threads: Some(2),
            ..SessionOptions::default()
        };
        assert_eq!(describe_backend("cpu", &options), "cpu · 2 threads");
        assert_eq!(
            describe_backend("cpu (auto: CPU 63 vs GPU 40 tok/s)", &options),
            "cpu · 2 threads (auto: CPU 63 vs GPU 40 tok/s)"
        );
        let gpu = "gpu: NVIDIA H100 (Vulkan, DiscreteGpu; auto: GPU 118 vs CPU 63 tok/s)";
        assert_eq!(describe_backend(gpu, &options), gpu);
    }
}
