//! The inference worker: one thread owns the backend (the loaded model); the UI sends commands
//! over a channel and gets events back, with a repaint request after each, so `update` never
//! waits on model work.

use super::backend::{Backend, GenerateOutcome, GenerateRequest, ModelSummary};
use super::model::AttachmentKind;
use cellm_engine::session::{CancelToken, SessionOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub enum Command {
    /// Load a model with these options (from Settings > Compute).
    Load(PathBuf, SessionOptions),
    Generate(GenerateRequest),
    Unload,
}

#[derive(Debug)]
pub enum Event {
    Loading(PathBuf),
    Loaded(ModelSummary, CancelToken),
    /// The message, and the cancel token of the model still loaded (see `Backend::cancel_token`).
    LoadFailed(String, Option<CancelToken>),
    Unloaded,
    Token {
        chat_id: String,
        text: String,
    },
    Done {
        chat_id: String,
        outcome: GenerateOutcome,
    },
    Failed {
        chat_id: String,
        message: String,
    },
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    commands: Sender<Command>,
    events: Receiver<Event>,
    repaint: Arc<Mutex<Option<egui::Context>>>,
    rss_bytes: Arc<AtomicU64>,
    stop_meter: Arc<AtomicBool>,
}

impl WorkerHandle {
    pub fn spawn(backend: Box<dyn Backend>) -> Self {
        let (cmd_tx, cmd_rx) = channel();
        let (ev_tx, ev_rx) = channel();
        let repaint: Arc<Mutex<Option<egui::Context>>> = Arc::default();
        let r = repaint.clone();
        std::thread::Builder::new()
            .name("cellm-worker".into())
            .spawn(move || worker_loop(backend, cmd_rx, ev_tx, r))
            .ok();
        let rss_bytes = Arc::new(AtomicU64::new(read_rss_bytes()));
        let stop_meter = Arc::new(AtomicBool::new(false));
        let (rss, stop) = (rss_bytes.clone(), stop_meter.clone());
        // A separate meter, because the worker is busy exactly when memory is interesting.
        std::thread::Builder::new()
            .name("cellm-meter".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rss.store(read_rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .ok();
        Self {
            commands: cmd_tx,
            events: ev_rx,
            repaint,
            rss_bytes,
            stop_meter,
        }
    }

    /// Gives the worker the context to wake the UI with (known only once drawing starts).
    pub fn set_context(&self, ctx: &egui::Context) {
        if let Ok(mut slot) = self.repaint.lock()
            && slot.is_none()
        {
            *slot = Some(ctx.clone());
        }
    }

    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Resident memory of the whole process, sampled twice a second (0 where unknown).
    pub fn rss_bytes(&self) -> u64 {
        self.rss_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_meter.store(true, Ordering::Relaxed);
    }
}

fn worker_loop(
    mut backend: Box<dyn Backend>,
    commands: Receiver<Command>,
    events: Sender<Event>,
    repaint: Arc<Mutex<Option<egui::Context>>>,
) {
    let emit = |e: Event| {
        let _ = events.send(e);
        if let Ok(slot) = repaint.lock()
            && let Some(ctx) = slot.as_ref()
        {
            ctx.request_repaint();
        }
    };
    while let Ok(command) = commands.recv() {
        match command {
            Command::Load(path, options) => {
                emit(Event::Loading(path.clone()));
                let loaded = contain_panic(|| backend.load(&path, &options));
                match loaded {
                    Ok((summary, cancel)) => emit(Event::Loaded(summary, cancel)),
                    Err(msg) => emit(Event::LoadFailed(msg, backend.cancel_token())),
                }
            }
            Command::Unload => {
                backend.unload();
                emit(Event::Unloaded);
            }
            Command::Generate(request) => {
                let chat_id = request.chat_id.clone();
                if let Some(kind) = unsupported_media(backend.as_ref(), &request) {
                    let message = match kind {
                        AttachmentKind::Image => {
                            "The loaded model does not support images (it has no vision tower). \
                             Load a Gemma 4 model such as E2B, or remove the image and send the \
                             text alone."
                        }
                        AttachmentKind::Audio => {
                            "The loaded model does not support audio (it has no audio tower). \
                             Load a Gemma 4 model such as E2B, or remove the recording and send \
                             the text alone."
                        }
                    };
                    emit(Event::Failed {
                        chat_id,
                        message: message.to_owned(),
                    });
                    continue;
                }
                let mut on_text = |t: &str| {
                    emit(Event::Token {
                        chat_id: chat_id.clone(),
                        text: t.to_owned(),
                    })
                };
                let result = contain_panic(|| backend.generate(&request, &mut on_text));
                match result {
                    Ok(outcome) => emit(Event::Done { chat_id, outcome }),
                    Err(message) => emit(Event::Failed { chat_id, message }),
                }
            }
        }
    }
}

/// Runs a model call, turning a panic inside it into an error message: a hostile model or
/// prompt must not kill the worker, which stays ready for the next command.
fn contain_panic<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(format!("internal error in the model worker: {why}"))
    })
}

fn unsupported_media(backend: &dyn Backend, request: &GenerateRequest) -> Option<AttachmentKind> {
    // Only the newest message's media is new; older ones were already answered (or refused).
    let last = request.messages.last()?;
    last.attachments
        .iter()
        .map(|a| a.kind)
        .find(|k| !backend.supports_media(*k))
}

fn read_rss_bytes() -> u64 {
    // Linux: the second field of /proc/self/statm is resident pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
