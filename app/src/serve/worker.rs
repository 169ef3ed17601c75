//! The inference worker: one thread owns the engine `Session`; requests queue on a channel and
//! are answered one at a time, each streaming events back to its HTTP handler. The session keeps
//! the KV cache of the previous request, so a conversation that grows turn by turn recomputes only
//! its new tokens.

use super::api::{MediaIn, MessageIn};
use super::error::ApiError;
use super::request_log::RequestLog;
use super::stop::StopMatcher;
use axum::http::StatusCode;
use cellm_encoders::MediaEncoders;
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{
    CancelToken, GenerateParams, MediaEmbedding, Message, ModelInfo, Prompt, Session, SessionError,
    SessionOptions, StopReason,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

pub enum Input {
    Chat(Vec<MessageIn>),
    Completion(String),
}

pub struct Job {
    pub input: Input,
    pub sampling: SamplingParams,
    /// None: until the end of turn or the context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub events: UnboundedSender<Event>,
    /// For the request log, e.g. "POST /v1/chat/completions".
    pub label: String,
}

#[derive(Debug)]
pub enum Event {
    /// The prompt is accepted (media encoded, length checked); text follows.
    Started,
    Text(String),
    Done {
        finish: &'static str,
        usage: Usage,
    },
    Failed(ApiError),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// The HTTP side's handle on the worker.
pub struct Worker {
    jobs: Mutex<Option<Sender<Job>>>,
    /// Cancels whatever the worker is generating (used when the server stops).
    cancel: CancelToken,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    /// Loads the model on a new thread and waits until it is ready (or failed).
    pub fn spawn(
        model: PathBuf,
        options: SessionOptions,
        log: Arc<RequestLog>,
    ) -> Result<(Self, ModelInfo, String), String> {
        let (ready_tx, ready_rx) = channel();
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("cellm-serve-worker".into())
            .spawn(move || {
                let session = match Session::load(&model, options) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("loading {}: {e}", model.display())));
                        return;
                    }
                };
                let ready = (
                    session.info().clone(),
                    session.backend().to_string(),
                    session.cancel_token(),
                );
                if ready_tx.send(Ok(ready)).is_err() {
                    return;
                }
                worker_loop(session, jobs_rx, &log);
            })
            .map_err(|e| format!("starting the worker thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok((info, backend, cancel))) => Ok((
                Self {
                    jobs: Mutex::new(Some(jobs_tx)),
                    cancel,
                    thread: Mutex::new(Some(thread)),
                },
                info,
                backend,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the worker thread stopped while loading the model".into())
            }
        }
    }

    /// Queues a job; false when the worker has stopped.
    pub fn submit(&self, job: Job) -> bool {
        match self.jobs.lock() {
            Ok(guard) => guard.as_ref().is_some_and(|tx| tx.send(job).is_ok()),
            Err(_) => false,
        }
    }

    /// Cancels the running generation, refuses new jobs and waits for the thread to end.
    pub fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        self.cancel.cancel();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn worker_loop(mut session: Session, jobs: Receiver<Job>, log: &RequestLog) {
    let mut media_cache = MediaCache::default();
    while let Ok(job) = jobs.recv() {
        if job.events.is_closed() {
            log.push(format!("{}: client left while queued", job.label));
            continue;
        }
        run_job(&mut session, &mut media_cache, job, log);
    }
}

fn run_job(session: &mut Session, media_cache: &mut MediaCache, job: Job, log: &RequestLog) {
    let send = |e: Event| {
        let _ = job.events.send(e);
    };
    let t0 = std::time::Instant::now();
    let prompt = match &job.input {
        Input::Completion(text) => Prompt::Raw(text.clone()),
        Input::Chat(messages) => match chat_prompt(session, media_cache, messages) {
            Ok(p) => p,
            Err(e) => {
                log.push(format!("{}: {}", job.label, e.message));
                return send(Event::Failed(e));
            }
        },
    };
    let prompt_tokens = match session.tokenize(&prompt) {
        Ok(ids) => ids.len(),
        Err(e) => {
            let e = session_error(e);
            log.push(format!("{}: {}", job.label, e.message));
            return send(Event::Failed(e));
        }
    };
    let limit = session.info().context_length;
    if prompt_tokens == 0 {
        return send(Event::Failed(ApiError::invalid("the prompt is empty")));
    }
    if prompt_tokens >= limit {
        let e = ApiError::invalid(format!(
            "This model's context holds {limit} tokens, but the prompt has {prompt_tokens}."
        ))
        .code("context_length_exceeded")
        .param("messages");
        log.push(format!("{}: {}", job.label, e.message));
        return send(Event::Failed(e));
    }
    send(Event::Started);

    let params = GenerateParams {
        sampling: job.sampling.clone(),
        max_new_tokens: job.max_tokens.unwrap_or(limit),
    };
    let cancel = session.cancel_token();
    let mut stops = StopMatcher::new(job.stop.clone());
    let mut gone = false;
    let result = session.generate(&prompt, &params, &mut |piece| {
        if job.events.is_closed() {
            gone = true;
            cancel.cancel();
            return;
        }
        let out = stops.push(piece);
        if !out.is_empty() {
            send(Event::Text(out));
        }
        if stops.stopped() {
            cancel.cancel();
        }
    });
    match result {
        Ok(stats) => {
            if gone || job.events.is_closed() {
                log.push(format!(
                    "{}: client disconnected; stopped after {} tokens",
                    job.label, stats.generated_tokens
                ));
                return;
            }
            let rest = stops.finish();
            if !rest.is_empty() {
                send(Event::Text(rest));
            }
            let finish = if stops.stopped() {
                "stop"
            } else {
                match stats.stop {
                    StopReason::EndOfTurn | StopReason::Cancelled => "stop",
                    StopReason::MaxTokens | StopReason::ContextFull => "length",
                }
            };
            log.push(format!(
                "{}: {} prompt tokens ({} computed), {} generated at {:.1} tok/s, {finish}, {:.2} s",
                job.label,
                stats.prompt_tokens,
                stats.prefill_tokens,
                stats.generated_tokens,
                stats.decode_tok_s(),
                t0.elapsed().as_secs_f64()
            ));
            send(Event::Done {
                finish,
                usage: Usage {
                    prompt_tokens: stats.prompt_tokens,
                    completion_tokens: stats.generated_tokens,
                },
            });
        }
        Err(e) => {
            let e = session_error(e);
            log.push(format!("{}: {}", job.label, e.message));
            send(Event::Failed(e));
        }
    }
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::ContextFull { tokens, limit } => ApiError::invalid(format!(
            "This model's context holds {limit} tokens, but the prompt has {tokens}."
        ))
        .code("context_length_exceeded"),
        SessionError::EmptyPrompt => ApiError::invalid("the prompt is empty"),
        SessionError::Unsupported(m) => ApiError::invalid(m),
        other => ApiError::server(other.to_string()),
    }
}

/// The chat prompt, with each image and audio clip turned into soft tokens by the model's towers.
fn chat_prompt(
    session: &Session,
    cache: &mut MediaCache,
    messages: &[MessageIn],
) -> Result<Prompt, ApiError> {
    let mut encoders: Option<MediaEncoders> = None;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let mut media = Vec::new();
        for item in &m.media {
            let key: [u8; 32] = Sha256::digest(&item.bytes).into();
            if let Some(hit) = cache.get(&key) {
                media.extend(hit);
                continue;
            }
            if encoders.is_none() {
                encoders = Some(load_encoders(session)?);
            }
            let Some(enc) = encoders.as_ref() else {
                continue;
            };
            let encoded = encode(enc, item)?;
            cache.put(key, encoded.clone());
            media.extend(encoded);
        }
        out.push(Message {
            role: m.role,
            text: m.text.clone(),
            media,
        });
    }
    Ok(Prompt::Chat(out))
}

fn load_encoders(session: &Session) -> Result<MediaEncoders<'_>, ApiError> {
    let mut encoders = MediaEncoders::load(session.file())
        .map_err(|e| ApiError::server(format!("loading the media encoders: {e}")))?;
    // The towers run where the text stack runs.
    if session.backend().starts_with("gpu") {
        match cellm_encoders::gpu::TowersGpu::load(&encoders) {
            Ok(g) => encoders = encoders.with_gpu(Arc::new(g)),
            Err(e) => log::warn!("media towers on the CPU: {e}"),
        }
    }
    Ok(encoders)
}

/// One image or WAV through its tower. The encoders read files, so the bytes go through a
/// private temporary file.
fn encode(encoders: &MediaEncoders, item: &MediaIn) -> Result<Vec<MediaEmbedding>, ApiError> {
    use cellm_engine::session::MediaKind;
    let (name, missing) = match item.kind {
        MediaKind::Image if encoders.vision.is_none() => (
            "image",
            "this model has no vision tower, so it cannot read images; use a Gemma 4 model",
        ),
        MediaKind::Audio if encoders.audio.is_none() => (
            "audio",
            "this model has no audio tower, so it cannot read audio; use Gemma 4 E2B or E4B",
        ),
        MediaKind::Image => ("image", ""),
        MediaKind::Audio => ("audio", ""),
    };
    if !missing.is_empty() {
        return Err(ApiError::invalid(missing).code("unsupported_media"));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| ApiError::server(format!("creating a temporary folder: {e}")))?;
    let path = dir.path().join(name);
    std::fs::write(&path, &item.bytes)
        .map_err(|e| ApiError::server(format!("writing a temporary file: {e}")))?;
    let result = match item.kind {
        MediaKind::Image => encoders.encode_image(&path).map(|e| vec![e]),
        MediaKind::Audio => encoders.encode_audio(&path),
    };
    // The file name means nothing to the client: show the error without it.
    result.map_err(|e| {
        let shown = e.to_string().replace(&path.display().to_string(), name);
        ApiError::invalid(format!("could not read the {name}: {shown}"))
            .code("invalid_media")
            .status(StatusCode::BAD_REQUEST)
    })
}

/// Soft tokens of recently seen media by content hash: clients resend the whole conversation
/// every turn, and encoding is the slow part of a media prompt.
#[derive(Default)]
struct MediaCache {
    entries: HashMap<[u8; 32], Vec<MediaEmbedding>>,
}

impl MediaCache {
    const CAPACITY: usize = 32;

    fn get(&self, key: &[u8; 32]) -> Option<Vec<MediaEmbedding>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: [u8; 32], value: Vec<MediaEmbedding>) {
        if self.entries.len() >= Self::CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }
}
