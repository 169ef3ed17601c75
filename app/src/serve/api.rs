//! The OpenAI request bodies cellm understands, and their checks. Responses are built with
//! `serde_json::json!` in `routes.rs`. Unknown fields are ignored, as OpenAI-compatible servers
//! commonly do, so clients that send extra options still work.

use super::error::ApiError;
use base64::Engine as _;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    pub common: CommonParams,
    /// The newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: PromptIn,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Parameters shared by both endpoints.
#[derive(Deserialize, Debug, Default)]
pub struct CommonParams {
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopIn>,
    #[serde(default)]
    pub n: Option<i64>,
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentIn>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum ContentIn {
    Text(String),
    Parts(Vec<PartIn>),
}

#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartIn {
    Text { text: String },
    ImageUrl { image_url: ImageUrlIn },
    InputAudio { input_audio: InputAudioIn },
}

#[derive(Deserialize, Debug)]
pub struct ImageUrlIn {
    pub url: String,
}

#[derive(Deserialize, Debug)]
pub struct InputAudioIn {
    pub data: String,
    pub format: String,
}

/// Sampling and length settings after the checks.
#[derive(Clone, Debug)]
pub struct Checked {
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
}

impl CommonParams {
    pub fn check(&self, max_tokens_alias: Option<i64>) -> Result<Checked, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid("only n = 1 is supported").param("n"));
        }
        let max = max_tokens_alias.or(self.max_tokens);
        let max_tokens = match max {
            Some(m) if m < 1 => {
                return Err(
                    ApiError::invalid(format!("max_tokens must be at least 1 (got {m})"))
                        .param("max_tokens"),
                );
            }
            Some(m) => Some(m as usize),
            None => None,
        };
        // OpenAI's defaults: temperature 1, top_p 1.
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(format!(
                "temperature must be between 0 and 2 (got {temperature})"
            ))
            .param("temperature"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(
                ApiError::invalid(format!("top_p must be in (0, 1] (got {top_p})")).param("top_p"),
            );
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopIn::One(s)) => vec![s.clone()],
            Some(StopIn::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid("at most 4 stop sequences are allowed").param("stop"));
        }
        Ok(Checked {
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            max_tokens,
            temperature,
            top_p,
            // Any integer is a valid seed; negative ones keep their bits.
            seed: self.seed.unwrap_or(0) as u64,
            stop,
        })
    }
}

/// One message ready for the worker: role, text, media bytes in order.
#[derive(Clone, Debug)]
pub struct MessageIn {
    pub role: cellm_engine::session::Role,
    pub text: String,
    pub media: Vec<MediaIn>,
}

#[derive(Clone, Debug)]
pub struct MediaIn {
    pub kind: cellm_engine::session::MediaKind,
    pub bytes: Vec<u8>,
}

/// The messages with their media decoded (base64 errors are the client's, so a 400 here).
pub fn messages(input: &[ChatMessageIn]) -> Result<Vec<MessageIn>, ApiError> {
    use cellm_engine::session::{MediaKind, Role};
    if input.is_empty() {
        return Err(ApiError::invalid("messages must not be empty").param("messages"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(input.len());
    for (i, m) in input.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].role '{other}' is not supported (use system, user or assistant)"
                ))
                .param(&format!("messages[{i}].role")));
            }
        };
        let mut text = String::new();
        let mut media = Vec::new();
        match &m.content {
            None => {}
            Some(ContentIn::Text(t)) => text.push_str(t),
            Some(ContentIn::Parts(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let param = format!("messages[{i}].content[{j}]");
                    match part {
                        PartIn::Text { text: t } => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(t);
                        }
                        PartIn::ImageUrl { image_url } => {
                            let data = image_url
                                .url
                                .strip_prefix("data:")
                                .and_then(|rest| rest.split_once(";base64,"))
                                .map(|(_, data)| data)
                                .ok_or_else(|| {
                                    ApiError::invalid(
                                        "image_url must be a data URL \
                                         (data:image/png;base64,...): this server does not fetch \
                                         remote images",
                                    )
                                    .param(&param)
                                })?;
                            let bytes = b64.decode(data.trim()).map_err(|e| {
                                ApiError::invalid(format!("the image data is not base64: {e}"))
                                    .param(&param)
                            })?;
                            media.push(MediaIn {
                                kind: MediaKind::Image,
                                bytes,
                            });
                        }
                        PartIn::InputAudio { input_audio } => {
                            if !input_audio.format.eq_ignore_ascii_case("wav") {
                                return Err(ApiError::invalid(format!(
                                    "input_audio format '{}' is not supported (send WAV)",
                                    input_audio.format
                                ))
                                .param(&param));
                            }
                            let bytes = b64.decode(input_audio.data.trim()).map_err(|e| {
                                ApiError::invalid(format!("the audio data is not base64: {e}"))
                                    .param(&param)
                            })?;
                            media.push(MediaIn {
                                kind: MediaKind::Audio,
                                bytes,
                            });
                        }
                    }
                }
            }
        }
        if role != Role::User && !media.is_empty() {
            return Err(
                ApiError::invalid("images and audio are accepted in user messages only")
                    .param(&format!("messages[{i}].content")),
            );
        }
        out.push(MessageIn { role, text, media });
    }
    Ok(out)
}

/// The completion prompt (a list must hold exactly one string).
pub fn prompt(input: &PromptIn) -> Result<String, ApiError> {
    match input {
        PromptIn::One(s) => Ok(s.clone()),
        PromptIn::Many(v) if v.len() == 1 => Ok(v[0].clone()),
        PromptIn::Many(_) => {
            Err(ApiError::invalid("only one prompt per request is supported").param("prompt"))
        }
    }
}
