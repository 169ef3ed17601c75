//! The generation API used by the CLI and the app: load a model once, then generate with a token
//! stream, cancellation from another thread, and stats.

use crate::sampler::SamplingParams;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Worker threads for the CPU kernels (None: all cores).
    pub threads: Option<usize>,
    /// Cap on the context length (None: the model's own limit).
    pub max_context: Option<usize>,
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
    pub fidelity: Option<serde_json::Value>,
}

/// A loaded model with its tokenizer, chat template and KV cache.
pub struct Session {
    _private: (),
}

impl Session {
    pub fn load(path: &Path, options: SessionOptions) -> Result<Self, SessionError> {
        let _ = (path, options);
        Err(SessionError::Other("not yet implemented".into()))
    }

    pub fn info(&self) -> &ModelInfo {
        unimplemented!()
    }

    /// A token that cancels the generation running on this session (clone it to another thread).
    pub fn cancel_token(&self) -> CancelToken {
        unimplemented!()
    }

    /// Generates a reply. `on_text` receives each decoded text piece as soon as it is final.
    /// Reuses the KV cache for the longest common token prefix with the previous call.
    pub fn generate(
        &mut self,
        prompt: &Prompt,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats, SessionError> {
        let _ = (prompt, params, on_text);
        unimplemented!()
    }

    /// Teacher-forced logits at every position of `ids` ([ids.len(), vocab] row-major), for
    /// `cellm compare`. Media embeddings replace the placeholder tokens in order.
    pub fn logits_for(
        &mut self,
        ids: &[u32],
        media: &[MediaEmbedding],
    ) -> Result<Vec<f32>, SessionError> {
        let _ = (ids, media);
        unimplemented!()
    }
}
