//! The request log: a ring buffer of one-line entries the app can show, plus an optional
//! callback (the CLI prints each line; the app asks for a repaint). Lines also go to the `log`
//! facade.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
    pub text: String,
}

pub type LogCallback = Box<dyn Fn(&LogEntry) + Send + Sync>;

pub struct RequestLog {
    entries: Mutex<VecDeque<LogEntry>>,
    capacity: usize,
    on_entry: Option<LogCallback>,
}

impl RequestLog {
    pub fn new(capacity: usize, on_entry: Option<LogCallback>) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            on_entry,
        }
    }

    pub fn push(&self, text: String) {
        let entry = LogEntry {
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            text,
        };
        log::info!("{}", entry.text);
        if let Some(f) = &self.on_entry {
            f(&entry);
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.capacity {
                entries.pop_front();
            }
            entries.push_back(entry);
        }
    }

    /// The newest entries, oldest first.
    pub fn snapshot(&self) -> Vec<LogEntry> {
        self.entries
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }
}
