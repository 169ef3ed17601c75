//! Chats on disk: one JSON file per chat under the data directory, written atomically
//! (temp file + rename) so a crash mid-write never corrupts history.

use super::model::Chat;
use anyhow::Context as _;
use std::path::{Path, PathBuf};

pub struct ChatStore {
    dir: PathBuf,
}

impl ChatStore {
    /// The platform data directory (`~/.local/share/cellm` on Linux).
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "cellm").map(|d| d.data_dir().to_path_buf())
    }

    /// A store under `data_dir` (chats go to `data_dir/chats`).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("chats"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every readable chat, newest first, plus a note for each file that could not be read
    /// (those are left on disk untouched).
    pub fn load_all(&self) -> (Vec<Chat>, Vec<String>) {
        let mut chats = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (chats, problems);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<Chat>(&b).map_err(anyhow::Error::from))
            {
                Ok(chat) => chats.push(chat),
                Err(e) => problems.push(format!("could not read {}: {e}", path.display())),
            }
        }
        chats.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
        (chats, problems)
    }

    pub fn save(&self, chat: &Chat) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let json = serde_json::to_vec_pretty(chat)?;
        write_atomic(&self.path_of(&chat.id), &json)
    }

    pub fn delete(&self, id: &str) -> anyhow::Result<()> {
        let path = self.path_of(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }

    fn path_of(&self, id: &str) -> PathBuf {
        // Ids are made by the app (digits and '-'), but never let one escape the folder.
        let safe: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.dir.join(format!("{safe}.json"))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, then renames it over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    cellm_engine::atomic_file::register_temp(&tmp);
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    cellm_engine::atomic_file::unregister_temp(&tmp);
    if result.is_ok() {
        // Make the rename itself survive a crash.
        cellm_engine::atomic_file::sync_parent_dir(path);
    }
    result
}
