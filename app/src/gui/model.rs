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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyStats {
    pub generated_tokens: usize,
    pub decode_tok_s: f64,
    pub prompt_tokens: usize,
    pub stopped: bool,
    /// Prompt tokens computed per second (0 when unknown, e.g. chats saved by older builds).
    #[serde(default)]
    pub prompt_tok_s: f64,
    /// Seconds from Send to the first piece of text.
    #[serde(default)]
    pub first_token_secs: Option<f64>,
    /// Why the reply ended, in words ("end of turn", "max tokens", "stopped", "context full").
    #[serde(default)]
    pub stop_reason: String,
    /// The model's context length, for the context-fill meter (0: unknown).
    #[serde(default)]
    pub context_length: usize,
}

impl ReplyStats {
    /// A reply the user stopped before any token came.
    pub fn stopped_early() -> Self {
        Self {
            stopped: true,
            stop_reason: "stopped".to_owned(),
            ..Self::default()
        }
    }

    /// Share of the context the conversation fills after this reply (None when unknown).
    pub fn context_fill(&self) -> Option<f32> {
        (self.context_length > 0).then(|| {
            ((self.prompt_tokens + self.generated_tokens) as f32 / self.context_length as f32)
                .min(1.0)
        })
    }
}

/// One version of a reply (Regenerate keeps the earlier ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplyVersion {
    pub text: String,
    #[serde(default)]
    pub stats: Option<ReplyStats>,
    #[serde(default)]
    pub error: Option<String>,
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
    /// Every version of a regenerated reply, oldest first (empty when there is only one); the
    /// fields above hold the one shown, `versions[version]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ReplyVersion>,
    #[serde(default)]
    pub version: usize,
}

impl ChatMessage {
    fn shown(&self) -> ReplyVersion {
        ReplyVersion {
            text: self.text.clone(),
            stats: self.stats.clone(),
            error: self.error.clone(),
        }
    }

    /// The versions including the one shown (what a regenerated reply keeps).
    pub fn all_versions(&self) -> Vec<ReplyVersion> {
        let mut v = self.versions.clone();
        if v.is_empty() {
            v.push(self.shown());
        } else if let Some(slot) = v.get_mut(self.version) {
            *slot = self.shown();
        }
        v
    }

    /// Stores the shown reply into its version slot (after it changed), adding the slot when
    /// a regenerate has just made it.
    pub fn sync_version(&mut self) {
        if self.versions.is_empty() {
            return;
        }
        let shown = self.shown();
        match self.versions.get_mut(self.version) {
            Some(slot) => *slot = shown,
            None => {
                self.versions.push(shown);
                self.version = self.versions.len() - 1;
            }
        }
    }

    /// Shows version `index`; false when there is no such version.
    pub fn select_version(&mut self, index: usize) -> bool {
        self.sync_version();
        let Some(v) = self.versions.get(index).cloned() else {
            return false;
        };
        self.text = v.text;
        self.stats = v.stats;
        self.error = v.error;
        self.version = index;
        true
    }

    /// Drops the version being shown (a failed regenerate) and shows the newest one left;
    /// false when there was no earlier version to fall back to.
    pub fn drop_shown_version(&mut self) -> bool {
        if self.versions.is_empty() {
            return false;
        }
        if self.version < self.versions.len() {
            self.versions.remove(self.version);
        }
        let Some(v) = self.versions.last().cloned() else {
            return false;
        };
        self.text = v.text;
        self.stats = v.stats;
        self.error = v.error;
        self.version = self.versions.len() - 1;
        if self.versions.len() == 1 {
            self.versions.clear();
            self.version = 0;
        }
        true
    }

    pub fn user(text: impl Into<String>, attachments: Vec<Attachment>) -> Self {
        Self {
            author: Author::User,
            text: text.into(),
            attachments,
            stats: None,
            error: None,
            versions: Vec::new(),
            version: 0,
        }
    }

    pub fn assistant_empty() -> Self {
        Self {
            author: Author::Assistant,
            text: String::new(),
            attachments: Vec::new(),
            stats: None,
            error: None,
            versions: Vec::new(),
            version: 0,
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
