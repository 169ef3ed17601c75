//! Native file dialogs (rfd) run off the UI thread, so the window keeps drawing while one is open.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, channel};

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
    rx: Receiver<Vec<PathBuf>>,
}

impl PendingDialog {
    pub fn open(kind: DialogKind, repaint: egui::Context) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
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
            let _ = tx.send(picked);
            repaint.request_repaint();
        });
        Self { rx }
    }

    /// `None` while open; `Some(paths)` once closed (empty when cancelled).
    pub fn poll(&self) -> Option<Vec<PathBuf>> {
        match self.rx.try_recv() {
            Ok(p) => Some(p),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Vec::new()),
        }
    }
}
