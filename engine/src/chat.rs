//! Chat templates: the model's own Jinja template (HF style) or a built-in Gemma 3 / Gemma 4 one.

use crate::session::Role;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template: {0}")]
    Template(String),
    #[error("unknown model family for a built-in chat template: {0}")]
    UnknownFamily(String),
}

/// One chat message; `images`/`audios` placeholders are rendered before the text.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    pub images: usize,
    pub audios: usize,
}

pub struct ChatTemplate {
    source: String,
    bos_token: String,
}

impl ChatTemplate {
    /// The model's own Jinja template when present, else a built-in one for the family ("gemma3" | "gemma4").
    pub fn new(template: Option<&str>, family: &str, bos_token: &str) -> Result<Self, ChatError> {
        let source = match template {
            Some(t) => t.to_string(),
            None => match family {
                "gemma3" | "gemma4" => String::new(),
                other => return Err(ChatError::UnknownFamily(other.to_string())),
            },
        };
        Ok(Self {
            source,
            bos_token: bos_token.to_string(),
        })
    }

    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let _ = (messages, add_generation_prompt, &self.source, &self.bos_token);
        Err(ChatError::Template("not yet implemented".into()))
    }
}

/// Removes a leaked thought prelude from a final reply.
pub fn strip_thought(text: &str) -> String {
    text.to_string()
}
