//! The app's own data: chats, messages and attachments (what is saved to disk and drawn).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Who wrote a message. Kept separate from the engine's `Role` so saved chats do not depend on
/// engine internals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    User,
    Assistant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    Image,
    Audio,
}

/// A file attached to a message; the file itself stays where the user had it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub path: PathBuf,
}

impl Attachment {
    /// Classifies a dropped or picked file by its extension; `None` for files the app cannot use.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        let kind = match ext.as_str() {
            "png" | "jpg" | "jpeg" => AttachmentKind::Image,
            "wav" => AttachmentKind::Audio,
            _ => return None,
        };
        Some(Self {
            kind,
            path: path.to_path_buf(),
        })
    }

    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Numbers shown under a finished reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyStats {
    pub generated_tokens: usize,
    pub decode_tok_s: f64,
    pub prompt_tokens: usize,
    pub stopped: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub author: Author,
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub stats: Option<ReplyStats>,
    /// Set when generating this reply failed; shown instead of (or after) the text.
    #[serde(default)]
    pub error: Option<String>,
}

impl ChatMessage {
    pub fn user(text: impl Into<String>, attachments: Vec<Attachment>) -> Self {
        Self {
            author: Author::User,
            text: text.into(),
            attachments,
            stats: None,
            error: None,
        }
    }

    pub fn assistant_empty() -> Self {
        Self {
            author: Author::Assistant,
            text: String::new(),
            attachments: Vec::new(),
            stats: None,
            error: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub system_prompt: String,
    pub messages: Vec<ChatMessage>,
    /// Seconds since the Unix epoch; the list is sorted by this, newest first.
    pub updated: u64,
}

impl Chat {
    pub fn new(id: String) -> Self {
        Self {
            id,
            title: "New chat".to_owned(),
            system_prompt: String::new(),
            messages: Vec::new(),
            updated: now_secs(),
        }
    }

    /// Names an untitled chat after its first user message.
    pub fn auto_title(&mut self) {
        if self.title != "New chat" {
            return;
        }
        if let Some(first) = self.messages.iter().find(|m| m.author == Author::User) {
            let line = first.text.lines().next().unwrap_or("").trim();
            if !line.is_empty() {
                let mut t: String = line.chars().take(40).collect();
                if line.chars().count() > 40 {
                    t.push('…');
                }
                self.title = t;
            }
        }
    }

    /// The chat as a Markdown document (for "Export").
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        if !self.system_prompt.trim().is_empty() {
            out.push_str(&format!("> System: {}\n\n", self.system_prompt.trim()));
        }
        for m in &self.messages {
            let who = match m.author {
                Author::User => "User",
                Author::Assistant => "Assistant",
            };
            out.push_str(&format!("## {who}\n\n"));
            for a in &m.attachments {
                out.push_str(&format!("*Attached: {}*\n\n", a.path.display()));
            }
            out.push_str(m.text.trim_end());
            out.push_str("\n\n");
            if let Some(e) = &m.error {
                out.push_str(&format!("*Error: {e}*\n\n"));
            }
        }
        out
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
