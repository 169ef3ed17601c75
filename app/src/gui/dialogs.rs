//! Native file dialogs (rfd) run off the UI thread, so the window keeps drawing while one is open.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

/// A dialog that closes with nothing sooner than this never showed: rfd reports a missing
/// backend (no desktop portal, no zenity) the same way as Cancel, but no person cancels this fast.
const NO_BACKEND_WITHIN: Duration = Duration::from_millis(400);

/// How a dialog ended.
#[derive(Debug, PartialEq)]
pub enum DialogResult {
    /// What was picked (empty when cancelled).
    Picked(Vec<PathBuf>),
    /// No dialog could be shown: ask for a typed path instead.
    Unavailable,
}

pub enum DialogKind {
    /// Pick one existing file with these extensions (label, extensions).
    OpenFile(&'static str, &'static [&'static str]),
    /// Pick files to attach (any number).
    OpenFiles(&'static str, &'static [&'static str]),
    OpenFolder,
    /// Choose where to save, with a suggested file name.
    Save(String),
}

/// An open dialog; poll it each frame.
pub struct PendingDialog {
    rx: Receiver<(Vec<PathBuf>, Duration)>,
}

impl PendingDialog {
    pub fn open(kind: DialogKind, repaint: egui::Context) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            let d = rfd::FileDialog::new();
            let picked: Vec<PathBuf> = match kind {
                DialogKind::OpenFile(label, exts) => {
                    d.add_filter(label, exts).pick_file().into_iter().collect()
                }
                DialogKind::OpenFiles(label, exts) => {
                    d.add_filter(label, exts).pick_files().unwrap_or_default()
                }
                DialogKind::OpenFolder => d.pick_folder().into_iter().collect(),
                DialogKind::Save(name) => d.set_file_name(name).save_file().into_iter().collect(),
            };
            let _ = tx.send((picked, started.elapsed()));
            repaint.request_repaint();
        });
        Self { rx }
    }

    /// `None` while open; the result once closed.
    pub fn poll(&self) -> Option<DialogResult> {
        match self.rx.try_recv() {
            Ok((p, took)) if p.is_empty() && took < NO_BACKEND_WITHIN => {
                Some(DialogResult::Unavailable)
            }
            Ok((p, _)) => Some(DialogResult::Picked(p)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(DialogResult::Unavailable),
        }
    }

    /// A dialog that has already ended with `result` (tests, and callers that know).
    pub fn finished(result: DialogResult) -> Self {
        let (tx, rx) = channel();
        let msg = match result {
            DialogResult::Picked(p) => (p, NO_BACKEND_WITHIN),
            DialogResult::Unavailable => (Vec::new(), Duration::ZERO),
        };
        let _ = tx.send(msg);
        Self { rx }
    }
}
