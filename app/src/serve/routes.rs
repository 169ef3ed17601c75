//! The HTTP routes, the API-key check and the per-request log line.

use super::api::{self, Checked};
use super::error::ApiError;
use super::request_log::RequestLog;
use super::worker::{Event, Input, Job, Usage, Worker};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cellm_engine::sampler::SamplingParams;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub struct AppState {
    pub worker: Arc<Worker>,
    pub model_id: String,
    pub context_length: usize,
    pub api_key: Option<String>,
    pub log: Arc<RequestLog>,
    pub created: u64,
}

type Shared = Arc<AppState>;

pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Checks the API key (when one is set) and logs one line per request.
async fn guard(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let label = format!("{} {}", request.method(), request.uri().path());
    let response = if let Some(key) = &s.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if given == Some(key.as_str()) {
            next.run(request).await
        } else {
            ApiError::unauthorized().into_response()
        }
    } else {
        next.run(request).await
    };
    s.log.push(format!(
        "{label} -> {} in {:.2} s",
        response.status().as_u16(),
        t0.elapsed().as_secs_f64()
    ));
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "Unknown URL {} {}: this server has GET /v1/models, POST /v1/chat/completions and \
         POST /v1/completions",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::invalid(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .status(StatusCode::METHOD_NOT_ALLOWED)
    .code("method_not_allowed")
}

fn model_object(s: &AppState) -> Value {
    json!({
        "id": s.model_id,
        "object": "model",
        "created": s.created,
        "owned_by": "cellm",
        "context_length": s.context_length,
    })
}

async fn models(State(s): State<Shared>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [model_object(&s)] }))
}

async fn model(State(s): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == s.model_id {
        Ok(Json(model_object(&s)))
    } else {
        Err(ApiError::not_found(format!(
            "The model '{id}' does not exist; this server has '{}'",
            s.model_id
        ))
        .code("model_not_found"))
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let e = ApiError::invalid(format!(
            "could not read the request body: {}",
            r.body_text()
        ))
        .status(status);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.code("request_too_large")
        } else {
            e
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid here: {e}")))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: api::ChatRequest = parse(body)?;
    let checked = request.common.check(request.max_completion_tokens)?;
    let messages = api::messages(&request.messages)?;
    generate(s, Input::Chat(messages), checked, Kind::Chat, request.model).await
}

async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: api::CompletionRequest = parse(body)?;
    let checked = request.common.check(None)?;
    let prompt = api::prompt(&request.prompt)?;
    generate(
        s,
        Input::Completion(prompt),
        checked,
        Kind::Completion,
        request.model,
    )
    .await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(kind: Kind) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!("{prefix}-{:x}{n:04}", unix_now())
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// Queues the job, waits until the worker accepts the prompt (so a bad image or an over-long
/// prompt is a plain 4xx even for streamed requests), then answers in the requested form.
async fn generate(
    s: Shared,
    input: Input,
    c: Checked,
    kind: Kind,
    requested_model: Option<String>,
) -> Result<Response, ApiError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let label = match kind {
        Kind::Chat => "chat",
        Kind::Completion => "completion",
    };
    let job = Job {
        input,
        sampling: SamplingParams {
            temperature: c.temperature,
            top_p: c.top_p,
            seed: c.seed,
            ..SamplingParams::default()
        },
        max_tokens: c.max_tokens,
        stop: c.stop.clone(),
        events: tx,
        label: label.to_string(),
    };
    if !s.worker.submit(job) {
        return Err(ApiError::unavailable());
    }
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::unavailable()),
    }
    // Clients may name any model; the answer names the one that produced it.
    let _ = requested_model;
    let meta = Meta {
        id: new_id(kind),
        created: unix_now(),
        model: s.model_id.clone(),
        kind,
    };
    if c.stream {
        Ok(stream(meta, rx, c.include_usage))
    } else {
        collect(meta, rx).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Meta {
    /// A streamed chunk with one choice (`delta` for chat, `text` for completions).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            }
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}],
            }),
        }
    }

    fn usage_chunk(&self, usage: Usage) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        })
    }
}

async fn collect(meta: Meta, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Started) => {}
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(ApiError::unavailable()),
            Some(Event::Done { finish, usage }) => {
                let body = match meta.kind {
                    Kind::Chat => json!({
                        "id": meta.id, "object": "chat.completion", "created": meta.created,
                        "model": meta.model,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": null,
                            "finish_reason": finish,
                        }],
                        "usage": usage_json(usage),
                    }),
                    Kind::Completion => json!({
                        "id": meta.id, "object": "text_completion", "created": meta.created,
                        "model": meta.model,
                        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                        "usage": usage_json(usage),
                    }),
                };
                return Ok(Json(body).into_response());
            }
        }
    }
}

/// Server-sent events: `data: <chunk>` lines, then `data: [DONE]`. A task forwards the worker's
/// events; when the client goes away the response body (and with it the channel) is dropped, the
/// task ends, and the worker sees its channel closed and cancels the generation.
fn stream(meta: Meta, mut rx: mpsc::UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let (out, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let data = |v: &Value| Ok(SseEvent::default().data(v.to_string()));
        if meta.kind == Kind::Chat
            && out
                .send(data(&meta.chunk(Some(""), true, None)))
                .await
                .is_err()
        {
            return;
        }
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = out.closed() => return,
            };
            let mut items = Vec::new();
            let mut last = false;
            match event {
                Some(Event::Text(t)) => items.push(data(&meta.chunk(Some(&t), false, None))),
                Some(Event::Started) => {}
                Some(Event::Done { finish, usage }) => {
                    let end = match meta.kind {
                        Kind::Chat => meta.chunk(None, false, Some(finish)),
                        Kind::Completion => meta.chunk(Some(""), false, Some(finish)),
                    };
                    items.push(data(&end));
                    if include_usage {
                        items.push(data(&meta.usage_chunk(usage)));
                    }
                    last = true;
                }
                Some(Event::Failed(e)) => {
                    items.push(data(&e.body()));
                    last = true;
                }
                None => {
                    items.push(data(&ApiError::unavailable().body()));
                    last = true;
                }
            }
            if last {
                items.push(Ok(SseEvent::default().data("[DONE]")));
            }
            for item in items {
                if out.send(item).await.is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(body)).into_response()
}
