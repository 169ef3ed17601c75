//! The one `App` struct: owns the UI state, draws it every frame, turns clicks into commands for
//! the worker and applies the worker's events. No file I/O or model work here beyond saving a
//! chat after it changes.

use super::backend::{Backend, GenerateRequest, ModelSummary};
use super::composer::ComposerState;
use super::dialogs::PendingDialog;
use super::model::{Attachment, AttachmentKind, Author, Chat, ChatMessage, ReplyStats};
use super::settings::{AppSettings, ComputeBackend, ComputeSettings, STORAGE_KEY, ThemeChoice};
use super::sidebar::SidebarState;
use super::store::ChatStore;
use super::theme;
use super::wizard::{Wizard, WizardAction};
use super::worker::{Command, Event, WorkerHandle};
use cellm_engine::session::CancelToken;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a deleted chat can be brought back with Undo.
pub const UNDO_SECONDS: u64 = 6;
/// How long "Copied" and similar confirmations stay.
const CONFIRM_SECONDS: f32 = 1.5;

/// The notice shown when Send is pressed before a model is loaded (cleared by a load).
pub const NO_MODEL: &str =
    "No model is loaded yet: load a .cellm file from the left panel, or convert one.";

/// Where the loaded model stands.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelState {
    None,
    Loading(PathBuf),
    Loaded(ModelSummary),
    Failed(String),
}

/// The reply being streamed right now.
pub struct Generation {
    pub chat_id: String,
    pub started: Instant,
    pub first_piece: Option<Instant>,
    pub pieces: usize,
    /// Stop was pressed; the worker has not answered yet.
    pub cancelling: bool,
    /// What the newest message attaches ("image", "audio", "image and audio"): encoded first.
    pub media: Option<&'static str>,
    /// A regenerate: the reply it replaces stays as the previous version, and comes back on failure.
    pub regenerating: bool,
}

impl Generation {
    /// Text pieces per second since the first piece (pieces are tokens, give or take merges).
    pub fn live_tok_s(&self) -> f64 {
        match self.first_piece {
            Some(t) if self.pieces > 1 => {
                (self.pieces - 1) as f64 / t.elapsed().as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        }
    }
}

/// What a file dialog opened by the app is for.
pub enum AppDialog {
    LoadModel,
    Attach,
    Export(String),
    /// Save a copy of an attached file (e.g. a recording) elsewhere.
    SaveCopy(PathBuf),
}

/// How the app is started: where chats live and which backend the worker drives.
pub struct AppConfig {
    pub data_dir: PathBuf,
    pub settings: AppSettings,
    pub backend: Box<dyn Backend>,
    /// Load `settings.last_model` at start (off in tests).
    pub autoload: bool,
}

pub struct App {
    pub settings: AppSettings,
    pub(super) store: ChatStore,
    pub chats: Vec<Chat>,
    pub active: Option<String>,
    pub(super) worker: WorkerHandle,
    pub model: ModelState,
    /// The Compute settings the current (or loading) model was loaded with.
    pub model_compute: Option<ComputeSettings>,
    pub(super) cancel: Option<CancelToken>,
    pub generation: Option<Generation>,
    pub(super) composer: ComposerState,
    pub(super) sidebar: SidebarState,
    pub(super) wizard: Wizard,
    pub settings_open: bool,
    /// Problems to show at the top of the conversation until dismissed.
    pub notices: Vec<String>,
    pub(super) dialog: Option<(AppDialog, PendingDialog)>,
    pub(super) markdown: egui_commonmark::CommonMarkCache,
    pub(super) waves: super::waveform::WaveCache,
    pub(super) recorder: Option<super::recorder::Recorder>,
    /// Input devices, listed when the user asks (Settings > Refresh).
    pub(super) mic_devices: Vec<String>,
    /// Where Ctrl+V and the Paste button read images from (swapped for a fake in tests).
    clipboard: Box<dyn super::clipboard::ClipboardSource>,
    /// Drafts of the chats not shown now (text, attachments), by chat id.
    pub(super) drafts: HashMap<String, (String, Vec<Attachment>)>,
    /// A chat whose Delete waits for confirmation.
    pub pending_delete: Option<String>,
    /// The chat deleted last, until Undo expires.
    pub undo_delete: Option<(Chat, Instant)>,
    /// The model that was loaded before the load running now (kept when that load fails).
    previous_model: Option<(ModelSummary, Option<ComputeSettings>)>,
    /// What was copied last and when ("Copied" shows for a moment).
    pub(super) copied: Option<(String, Instant)>,
    /// When Enter was pressed while a reply was being written (a hint shows for a moment).
    pub(super) busy_hint: Option<Instant>,
    /// A file dialog that could not open: the path is typed instead.
    pub(super) path_prompt: Option<(AppDialog, String)>,
    /// Answers once which scripts no system font covers.
    font_probe: Option<std::sync::mpsc::Receiver<Vec<&'static str>>>,
    /// The WAV attachment being replayed, if any.
    pub(super) player: Option<super::player::Player>,
    data_dir: PathBuf,
    theme_applied: Option<ThemeChoice>,
    next_id: u64,
}

impl App {
    pub fn new(config: AppConfig) -> Self {
        let store = ChatStore::new(&config.data_dir);
        let (chats, problems) = store.load_all();
        let worker = WorkerHandle::spawn(config.backend);
        let mut app = Self {
            settings: config.settings,
            store,
            active: chats.first().map(|c| c.id.clone()),
            chats,
            worker,
            model: ModelState::None,
            model_compute: None,
            cancel: None,
            generation: None,
            composer: ComposerState::default(),
            sidebar: SidebarState::default(),
            wizard: Wizard::default(),
            settings_open: false,
            notices: problems,
            dialog: None,
            markdown: egui_commonmark::CommonMarkCache::default(),
            waves: super::waveform::WaveCache::default(),
            recorder: None,
            mic_devices: Vec::new(),
            clipboard: Box::new(super::clipboard::SystemClipboard),
            drafts: HashMap::new(),
            pending_delete: None,
            undo_delete: None,
            previous_model: None,
            copied: None,
            busy_hint: None,
            path_prompt: None,
            font_probe: None,
            player: None,
            data_dir: config.data_dir.clone(),
            theme_applied: None,
            next_id: 0,
        };
        if config.autoload
            && let Some(path) = app.settings.last_model.clone()
        {
            if path.is_file() {
                app.load_model(path);
            } else {
                app.settings.last_model = None;
            }
        }
        app
    }

    /// Draws the whole window (shared by eframe and the UI tests).
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.worker.set_context(&ctx);
        if self.theme_applied.is_none() {
            egui_extras::install_image_loaders(&ctx);
            self.font_probe = Some(theme::install_fonts(&ctx));
        }
        if let Some(rx) = &self.font_probe
            && let Ok(missing) = rx.try_recv()
        {
            self.font_probe = None;
            if let Some(n) = theme::missing_fonts_notice(&missing) {
                self.notice(n);
            }
        }
        if self.theme_applied != Some(self.settings.theme) {
            theme::apply(&ctx, self.settings.theme);
            self.theme_applied = Some(self.settings.theme);
        }
        self.drain_events();
        self.poll_dialog();
        self.shortcuts(&ctx);
        self.take_dropped_files(&ctx);
        self.take_pasted(&ctx);
        self.poll_player();

        self.top_bar(ui);
        self.sidebar_panel(ui);
        self.composer_panel(ui);
        self.conversation_panel(ui);

        if let Some(WizardAction::LoadModel(path)) = self.wizard.show(&ctx) {
            self.load_model(path);
        }
        self.settings_window(&ctx);
        self.delete_confirmation(&ctx);
        self.path_prompt_window(&ctx);
        self.expire_transients(&ctx);
        self.drop_overlay(&ctx);

        if self.player.is_some() {
            // Flip the chip back to Play when the file has played out.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        if self.recorder.is_some() {
            // Elapsed time and the level meter move while recording.
            ctx.request_repaint_after(std::time::Duration::from_millis(80));
        }
        if self.generation.is_some() {
            // Keep the live tokens/s and memory read-out moving between tokens.
            ctx.request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    // ----- commands -----

    pub fn load_model(&mut self, path: PathBuf) {
        if self.generation.is_some() {
            self.notice("Stop the running reply before loading another model.");
            return;
        }
        if let ModelState::Loaded(m) = &self.model {
            self.previous_model = Some((m.clone(), self.model_compute));
        }
        self.model = ModelState::Loading(path.clone());
        self.model_compute = Some(self.settings.compute);
        let options = self.settings.compute.session_options();
        self.worker.send(Command::Load(path, options));
    }

    /// Whether the loaded model runs with other Compute settings than the current ones.
    pub fn compute_changed(&self) -> bool {
        matches!(self.model, ModelState::Loaded(_))
            && self.model_compute != Some(self.settings.compute)
    }

    /// Loads the current model again (so changed Compute settings take effect).
    pub fn reload_model(&mut self) {
        if let ModelState::Loaded(m) = &self.model {
            let path = m.path.clone();
            self.load_model(path);
        }
    }

    pub fn unload_model(&mut self) {
        if self.generation.is_none() {
            self.worker.send(Command::Unload);
            self.model = ModelState::None;
            self.previous_model = None;
            self.cancel = None;
            self.settings.last_model = None;
        }
    }

    pub fn new_chat(&mut self) -> String {
        self.next_id += 1;
        let id = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            self.next_id
        );
        let chat = Chat::new(id.clone());
        self.chats.insert(0, chat);
        self.select_chat(Some(id.clone()));
        id
    }

    /// Shows another chat, keeping the composer's draft with the chat it was written in.
    pub fn select_chat(&mut self, id: Option<String>) {
        if id == self.active {
            return;
        }
        self.composer.editing = None;
        let text = std::mem::take(&mut self.composer.text);
        let attachments = std::mem::take(&mut self.composer.attachments);
        if let Some(old) = self.active.take()
            && (!text.is_empty() || !attachments.is_empty())
        {
            self.drafts.insert(old, (text, attachments));
        }
        if let Some((text, attachments)) = id.as_ref().and_then(|id| self.drafts.remove(id)) {
            self.composer.text = text;
            self.composer.attachments = attachments;
        }
        self.active = id;
    }

    /// Adds a notice unless the same one is already shown.
    pub fn notice(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notices.contains(&text) {
            self.notices.push(text);
        }
    }

    pub fn rename_chat(&mut self, id: &str, title: &str) {
        let title = title.trim();
        if title.is_empty() {
            return;
        }
        if let Some(chat) = self.chats.iter_mut().find(|c| c.id == id) {
            chat.title = title.to_owned();
        }
        self.save_chat(id);
    }

    /// Asks for confirmation before [`Self::delete_chat`].
    pub fn request_delete(&mut self, id: &str) {
        self.pending_delete = Some(id.to_owned());
    }

    /// Deletes a chat; [`Self::undo_delete`] brings it back for [`UNDO_SECONDS`].
    pub fn delete_chat(&mut self, id: &str) {
        if self.generation.as_ref().is_some_and(|g| g.chat_id == id) {
            self.stop();
            self.generation = None;
        }
        let Some(pos) = self.chats.iter().position(|c| c.id == id) else {
            return;
        };
        let chat = self.chats.remove(pos);
        if let Err(e) = self.store.delete(id) {
            self.notice(format!("{e:#}"));
        }
        self.drafts.remove(id);
        if self.active.as_deref() == Some(id) {
            self.active = None;
            self.composer.text.clear();
            self.composer.attachments.clear();
            self.composer.editing = None;
            let next = self.chats.get(pos.min(self.chats.len().saturating_sub(1)));
            self.select_chat(next.map(|c| c.id.clone()));
        }
        self.undo_delete = Some((chat, Instant::now()));
    }

    /// Brings back the chat deleted last (while its Undo lasts).
    pub fn undo_delete(&mut self) {
        let Some((chat, _)) = self.undo_delete.take() else {
            return;
        };
        let id = chat.id.clone();
        let at = self
            .chats
            .iter()
            .position(|c| c.updated <= chat.updated)
            .unwrap_or(self.chats.len());
        self.chats.insert(at, chat);
        self.save_chat(&id);
        self.select_chat(Some(id));
    }

    pub fn active_chat(&self) -> Option<&Chat> {
        let id = self.active.as_deref()?;
        self.chats.iter().find(|c| c.id == id)
    }

    pub(super) fn active_chat_mut(&mut self) -> Option<&mut Chat> {
        let id = self.active.clone()?;
        self.chats.iter_mut().find(|c| c.id == id)
    }

    /// Whether the conversion wizard is open.
    pub fn wizard_open(&self) -> bool {
        self.wizard.open
    }

    pub fn is_generating(&self) -> bool {
        self.generation.is_some()
    }

    /// Sends the composer's text (and attachments) as a new user message.
    pub fn send(&mut self) {
        if self.generation.is_some() {
            self.busy_hint = Some(Instant::now());
            return;
        }
        // A base model continues the text as typed: its trailing newlines matter.
        let completion = matches!(&self.model, ModelState::Loaded(m) if m.completion_mode);
        let mut text = if completion {
            let t = self.composer.text.trim_start();
            if t.trim().is_empty() {
                String::new()
            } else {
                t.to_owned()
            }
        } else {
            self.composer.text.trim().to_owned()
        };
        let attachments = std::mem::take(&mut self.composer.attachments);
        if text.is_empty() {
            match attachments.first().map(|a| a.kind) {
                Some(AttachmentKind::Image) => text = "Describe this image.".to_owned(),
                Some(AttachmentKind::Audio) => text = "Transcribe this audio.".to_owned(),
                None => return,
            }
        }
        if !matches!(self.model, ModelState::Loaded(_)) {
            self.composer.attachments = attachments;
            self.notice(NO_MODEL);
            return;
        }
        if self.active_chat().is_none() {
            self.new_chat();
        }
        let editing = self.composer.editing.take();
        let Some(chat) = self.active_chat_mut() else {
            return;
        };
        if let Some(index) = editing {
            chat.messages.truncate(index);
        }
        chat.messages.push(ChatMessage::user(text, attachments));
        chat.auto_title();
        self.composer.text.clear();
        self.start_reply();
    }

    /// Drops the last reply of the active chat and asks again.
    pub fn regenerate(&mut self) {
        if self.generation.is_some() || !matches!(self.model, ModelState::Loaded(_)) {
            return;
        }
        let Some(chat) = self.active_chat_mut() else {
            return;
        };
        // The old reply stays as a version of the new one (‹ 1/2 ›), and comes back if
        // regenerating fails.
        let previous = chat
            .messages
            .last()
            .filter(|m| m.author == Author::Assistant)
            .cloned();
        if previous.is_some() {
            chat.messages.pop();
        }
        if chat
            .messages
            .last()
            .is_some_and(|m| m.author == Author::User)
        {
            self.start_reply();
            if let Some(prev) = previous
                && let Some(chat) = self.active_chat_mut()
                && let Some(m) = chat.messages.last_mut()
            {
                m.versions = prev.all_versions();
                m.version = m.versions.len();
                if let Some(g) = self.generation.as_mut() {
                    g.regenerating = true;
                }
            }
        } else if let Some(prev) = previous
            && let Some(chat) = self.active_chat_mut()
        {
            chat.messages.push(prev);
        }
    }

    /// Shows another version of the last reply of the active chat.
    pub fn show_version(&mut self, index: usize) {
        if self.generation.is_some() {
            return;
        }
        let Some(id) = self.active.clone() else {
            return;
        };
        if let Some(m) = self.last_reply_mut(&id)
            && m.select_version(index)
        {
            self.save_chat(&id);
        }
    }

    /// Puts a user message back into the composer; sending replaces it and everything after.
    pub fn edit_message(&mut self, index: usize) {
        if self.generation.is_some() {
            return;
        }
        let Some(m) = self
            .active_chat()
            .and_then(|c| c.messages.get(index))
            .cloned()
        else {
            return;
        };
        if m.author == Author::User {
            self.composer.text = m.text.clone();
            self.composer.attachments = m.attachments.clone();
            self.composer.editing = Some(index);
            self.composer.focus_next = true;
        }
    }

    /// Starts recording from the chosen microphone; problems become a notice.
    pub fn start_recording(&mut self) {
        if self.recorder.is_some() {
            return;
        }
        match super::recorder::Recorder::start(self.settings.microphone.as_deref()) {
            Ok(r) => self.recorder = Some(r),
            Err(e) => self.notice(e),
        }
    }

    /// Stops recording and attaches the WAV (kept under the data dir's `recordings/`).
    pub fn finish_recording(&mut self, keep: bool) {
        let Some(rec) = self.recorder.take() else {
            return;
        };
        if !keep {
            return;
        }
        match rec.finish(&self.data_dir.join("recordings")) {
            Ok(path) => self.attach(vec![path]),
            Err(e) => self.notice(e),
        }
    }

    /// Replaces the clipboard the app pastes from (tests feed images this way).
    pub fn set_clipboard(&mut self, clipboard: Box<dyn super::clipboard::ClipboardSource>) {
        self.clipboard = clipboard;
    }

    /// The composer's attachments, in order.
    pub fn attachments(&self) -> &[Attachment] {
        &self.composer.attachments
    }

    /// The composer's text.
    pub fn composer_text(&self) -> &str {
        &self.composer.text
    }

    /// Attaches the clipboard's image. Text is left to the text box; nothing to paste or an
    /// unreachable clipboard becomes a notice.
    pub fn paste_from_clipboard(&mut self) {
        self.paste(false);
    }

    /// `asked`: the Paste button, where text on the clipboard deserves a word too.
    pub(super) fn paste(&mut self, asked: bool) {
        use super::clipboard::Clipboard;
        match self.clipboard.read() {
            Ok(Clipboard::Image(img)) => self.attach_pasted(&img),
            Ok(Clipboard::Text) if !asked => {}
            Ok(Clipboard::Text) => self.notice(
                "The clipboard holds text, not an image: paste it into the message box.".to_owned(),
            ),
            Ok(Clipboard::Empty) => self.notice("The clipboard holds no image to paste."),
            Err(e) => self.notice(e),
        }
    }

    /// Saves a pasted image under the data dir's `pasted/` and attaches it.
    fn attach_pasted(&mut self, img: &super::clipboard::PastedImage) {
        match super::clipboard::save_png(&self.data_dir.join("pasted"), img) {
            Ok(path) => self.attach(vec![path]),
            Err(e) => self.notice(e),
        }
    }

    /// Plays `path`, or stops it when it is the one playing; no output device is a notice.
    pub fn toggle_playback(&mut self, path: &Path) {
        let was = self.player.take();
        if was.as_ref().is_some_and(|p| p.path == path && !p.is_done()) {
            return; // dropping it stopped it
        }
        drop(was);
        match super::player::Player::start(path) {
            Ok(p) => self.player = Some(p),
            Err(e) => self.notice(e),
        }
    }

    /// The file being played right now.
    pub fn playing(&self) -> Option<&Path> {
        self.player
            .as_ref()
            .filter(|p| !p.is_done())
            .map(|p| p.path.as_path())
    }

    fn poll_player(&mut self) {
        if self.player.as_ref().is_some_and(|p| p.is_done())
            && let Some(p) = self.player.take()
            && let Some(e) = p.error()
        {
            self.notice(e);
        }
    }

    /// Asks where to save a copy of an attached file.
    pub(super) fn save_attachment_copy(&mut self, src: PathBuf, ctx: &egui::Context) {
        if self.dialog.is_none() {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "recording.wav".to_owned());
            self.dialog = Some((
                AppDialog::SaveCopy(src),
                PendingDialog::open(super::dialogs::DialogKind::Save(name), ctx.clone()),
            ));
        }
    }

    pub fn stop(&mut self) {
        if let Some(c) = &self.cancel {
            c.cancel();
            if let Some(g) = self.generation.as_mut() {
                g.cancelling = true;
            }
        }
    }

    fn start_reply(&mut self) {
        let sampling = self.settings.sampling.clone();
        let max_new_tokens = self.settings.max_new_tokens;
        let Some(chat) = self.active_chat_mut() else {
            return;
        };
        let media = chat.messages.last().and_then(|m| {
            let image = m
                .attachments
                .iter()
                .any(|a| a.kind == AttachmentKind::Image);
            let audio = m
                .attachments
                .iter()
                .any(|a| a.kind == AttachmentKind::Audio);
            match (image, audio) {
                (true, true) => Some("image and audio"),
                (true, false) => Some("image"),
                (false, true) => Some("audio"),
                (false, false) => None,
            }
        });
        let request = GenerateRequest {
            chat_id: chat.id.clone(),
            system_prompt: chat.system_prompt.clone(),
            messages: chat.messages.clone(),
            sampling,
            max_new_tokens,
        };
        chat.messages.push(ChatMessage::assistant_empty());
        chat.updated = super::model::now_secs();
        let chat_id = chat.id.clone();
        // Reset before sending so a Stop pressed right after Send is never lost.
        if let Some(c) = &self.cancel {
            c.reset();
        }
        self.generation = Some(Generation {
            chat_id: chat_id.clone(),
            started: Instant::now(),
            first_piece: None,
            pieces: 0,
            cancelling: false,
            media,
            regenerating: false,
        });
        self.save_chat(&chat_id);
        self.worker.send(Command::Generate(request));
    }

    pub(super) fn save_chat(&mut self, id: &str) {
        if let Some(chat) = self.chats.iter().find(|c| c.id == id)
            && let Err(e) = self.store.save(chat)
        {
            self.notice(format!("Could not save the chat: {e:#}"));
        }
    }

    pub(super) fn attach(&mut self, paths: Vec<PathBuf>) {
        for path in paths {
            match Attachment::from_path(&path) {
                Some(a) if !self.model_reads(a.kind) => self.notice(format!(
                    "{} is not attached: the loaded model does not read {}.",
                    a.file_name(),
                    match a.kind {
                        AttachmentKind::Image => "images",
                        AttachmentKind::Audio => "audio",
                    }
                )),
                Some(a) => {
                    if !self.composer.attachments.contains(&a) {
                        self.composer.attachments.push(a);
                    }
                }
                None => self.notice(format!(
                    "{} cannot be attached: use a PNG or JPEG image, or a WAV recording.",
                    path.display()
                )),
            }
        }
    }

    /// Whether the loaded model reads this kind of attachment (true before any load).
    pub fn model_reads(&self, kind: AttachmentKind) -> bool {
        match &self.model {
            ModelState::Loaded(m) => match kind {
                AttachmentKind::Image => m.has_vision,
                AttachmentKind::Audio => m.has_audio,
            },
            _ => true,
        }
    }

    pub(super) fn export_chat(&mut self, id: &str, path: &Path) {
        if let Some(chat) = self.chats.iter().find(|c| c.id == id) {
            let md = chat.to_markdown();
            if let Err(e) = super::store::write_atomic(path, md.as_bytes()) {
                self.notice(format!("Could not export: {e:#}"));
            }
        }
    }

    // ----- events from the worker -----

    /// Applies everything the worker has sent since the last frame.
    pub fn drain_events(&mut self) {
        while let Some(event) = self.worker.try_recv() {
            self.apply_event(event);
        }
    }

    fn apply_event(&mut self, event: Event) {
        match event {
            Event::Loading(path) => self.model = ModelState::Loading(path),
            Event::Loaded(summary, cancel) => {
                self.settings.last_model = Some(summary.path.clone());
                self.notices.retain(|n| n != NO_MODEL);
                if self
                    .model_compute
                    .is_some_and(|c| c.backend == ComputeBackend::Gpu)
                    && let Some(adapter) = super::text::software_adapter(&summary.backend)
                {
                    self.notice(format!(
                        "The GPU backend found only {adapter}, a software renderer that runs on \
                         the CPU and is much slower than the CPU backend. Choose CPU (or Auto) in \
                         Settings > Compute."
                    ));
                }
                self.model = ModelState::Loaded(summary);
                self.previous_model = None;
                self.cancel = Some(cancel);
            }
            Event::LoadFailed(message, token) => {
                let message = super::text::with_advice(&message);
                match self.previous_model.take() {
                    // The backend keeps (or restores) the model it had when a load fails.
                    Some((previous, compute)) => {
                        if token.is_some() {
                            self.cancel = token;
                        }
                        self.notice(format!("{message} Still using {}.", previous.file_name()));
                        self.model = ModelState::Loaded(previous);
                        self.model_compute = compute;
                    }
                    None => {
                        self.model = ModelState::Failed(message);
                        self.cancel = None;
                    }
                }
            }
            Event::Unloaded => {}
            Event::Token { chat_id, text } => {
                if let Some(g) = self.generation.as_mut().filter(|g| g.chat_id == chat_id) {
                    g.pieces += 1;
                    g.first_piece.get_or_insert_with(Instant::now);
                }
                if let Some(m) = self.last_reply_mut(&chat_id) {
                    m.text.push_str(&text);
                }
            }
            Event::Done { chat_id, outcome } => {
                let ttft = self
                    .generation
                    .as_ref()
                    .filter(|g| g.chat_id == chat_id)
                    .and_then(|g| Some(g.first_piece?.duration_since(g.started).as_secs_f64()));
                let context = match &self.model {
                    ModelState::Loaded(m) => m.context_length,
                    _ => 0,
                };
                if let Some(m) = self.last_reply_mut(&chat_id) {
                    m.stats = Some(ReplyStats {
                        generated_tokens: outcome.generated_tokens,
                        decode_tok_s: outcome.decode_tok_s,
                        prompt_tokens: outcome.prompt_tokens,
                        stopped: outcome.cancelled,
                        prompt_tok_s: outcome.prompt_tok_s,
                        first_token_secs: ttft,
                        stop_reason: outcome.stop_reason.clone(),
                        context_length: context,
                    });
                    m.sync_version();
                }
                self.finish(&chat_id);
            }
            Event::Failed { chat_id, message } => {
                let (cancelling, regenerating) = self
                    .generation
                    .as_ref()
                    .filter(|g| g.chat_id == chat_id)
                    .map_or((false, false), |g| (g.cancelling, g.regenerating));
                let message = super::text::with_advice(&message);
                let mut kept = false;
                if let Some(m) = self.last_reply_mut(&chat_id) {
                    if cancelling {
                        // Stopped by the user (e.g. while the image was encoded): not an error.
                        m.stats = Some(ReplyStats::stopped_early());
                        m.sync_version();
                    } else if regenerating && m.drop_shown_version() {
                        // The failed attempt goes; the reply it was to replace stays.
                        kept = true;
                    } else {
                        m.error = Some(message.clone());
                        m.sync_version();
                    }
                }
                if kept {
                    self.notice(format!(
                        "Regenerating failed, so the previous reply is kept: {message}"
                    ));
                }
                self.finish(&chat_id);
            }
        }
    }

    fn finish(&mut self, chat_id: &str) {
        if self
            .generation
            .as_ref()
            .is_some_and(|g| g.chat_id == chat_id)
        {
            self.generation = None;
        }
        self.save_chat(chat_id);
    }

    fn last_reply_mut(&mut self, chat_id: &str) -> Option<&mut ChatMessage> {
        self.chats
            .iter_mut()
            .find(|c| c.id == chat_id)?
            .messages
            .last_mut()
            .filter(|m| m.author == Author::Assistant)
    }

    // ----- input -----

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let shift_cmd = egui::Modifiers::COMMAND | egui::Modifiers::SHIFT;
        // Most specific first: Ctrl+Shift+O before Ctrl+O.
        if ctx.input_mut(|i| i.consume_key(shift_cmd, egui::Key::O)) {
            if self.wizard.open && !self.wizard.is_converting() {
                self.wizard.open = false;
            } else {
                self.wizard.open();
            }
        } else if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::O)) {
            self.open_model_dialog(ctx);
        }
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Comma)) {
            self.settings_open = !self.settings_open;
        }
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::N)) {
            self.new_chat();
            self.composer.focus_next = true;
        }
        if self.generation.is_some()
            && ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Escape))
        {
            self.stop();
        }
        // Esc closes the topmost dialog (a running conversion keeps the wizard open).
        if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            if self.pending_delete.is_some() {
                self.pending_delete = None;
            } else if self.path_prompt.is_some() {
                self.path_prompt = None;
            } else if self.settings_open {
                self.settings_open = false;
            } else if self.wizard.open && !self.wizard.is_converting() {
                self.wizard.open = false;
            }
        }
    }

    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if !dropped.is_empty() {
            self.attach(dropped);
        }
    }

    /// Ctrl+V: egui-winit reads the clipboard itself and sends an image as `PasteImage` (text
    /// as `Paste`, which the text box takes); where the key arrives unread (other integrations,
    /// the UI tests), the app asks its own clipboard source.
    fn take_pasted(&mut self, ctx: &egui::Context) {
        let (images, key): (Vec<_>, bool) = ctx.input(|i| {
            let images = i
                .events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::PasteImage(img) => {
                        Some(super::clipboard::PastedImage::from_color_image(img))
                    }
                    _ => None,
                })
                .collect();
            let key = i.events.iter().any(|e| {
                matches!(e, egui::Event::Key { key: egui::Key::V, pressed: true, modifiers, .. }
                    if modifiers.command_only())
            });
            (images, key)
        });
        for img in &images {
            self.attach_pasted(img);
        }
        if key && images.is_empty() {
            self.paste_from_clipboard();
        }
    }

    fn drop_overlay(&self, ctx: &egui::Context) {
        if ctx.input(|i| i.raw.hovered_files.is_empty()) {
            return;
        }
        let painter = ctx.layer_painter(egui::LayerId::new(
            egui::Order::Foreground,
            egui::Id::unique("drop_overlay"),
        ));
        let rect = ctx.content_rect();
        painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(160));
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "Drop images (PNG, JPEG) or WAV recordings to attach",
            egui::FontId::proportional(20.0),
            egui::Color32::WHITE,
        );
    }

    /// Opens the file dialog for a .cellm model (unless a dialog or a load is already running).
    pub(super) fn open_model_dialog(&mut self, ctx: &egui::Context) {
        if self.dialog.is_none() && !matches!(self.model, ModelState::Loading(_)) {
            self.dialog = Some((
                AppDialog::LoadModel,
                PendingDialog::open(
                    super::dialogs::DialogKind::OpenFile("cellm model", &["cellm"]),
                    ctx.clone(),
                ),
            ));
        }
    }

    fn poll_dialog(&mut self) {
        let Some((_, dialog)) = &self.dialog else {
            return;
        };
        let Some(result) = dialog.poll() else {
            return;
        };
        let Some((purpose, _)) = self.dialog.take() else {
            return;
        };
        match result {
            super::dialogs::DialogResult::Picked(paths) => self.use_paths(purpose, paths),
            super::dialogs::DialogResult::Unavailable => {
                let text = match &purpose {
                    AppDialog::Export(_) | AppDialog::SaveCopy(_) => {
                        dirs_home().display().to_string() + "/"
                    }
                    _ => String::new(),
                };
                self.path_prompt = Some((purpose, text));
            }
        }
    }

    /// Acts on the paths a file dialog (or the typed-path fallback) gave.
    pub(super) fn use_paths(&mut self, purpose: AppDialog, paths: Vec<PathBuf>) {
        match purpose {
            AppDialog::LoadModel => {
                if let Some(p) = paths.into_iter().next() {
                    self.load_model(p);
                }
            }
            AppDialog::Attach => self.attach(paths),
            AppDialog::Export(id) => {
                if let Some(p) = paths.into_iter().next() {
                    self.export_chat(&id, &p);
                }
            }
            AppDialog::SaveCopy(src) => {
                if let Some(p) = paths.into_iter().next()
                    && p != src
                    && let Err(e) = std::fs::copy(&src, &p)
                {
                    self.notice(format!("Could not save {}: {e}", p.display()));
                }
            }
        }
    }

    // ----- top bar and settings -----

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("top_bar")
            .frame(
                egui::Frame::side_top_panel(ui.style())
                    .inner_margin(egui::Margin::symmetric(12, 8)),
            )
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    let shown = self.sidebar_visible(ui.ctx());
                    if ui
                        .selectable_label(shown, "Chats")
                        .on_hover_text(if shown {
                            "Hide the chat list"
                        } else {
                            "Show the chat list and the model"
                        })
                        .clicked()
                    {
                        self.sidebar.collapsed = Some(shown);
                    }
                    ui.label(egui::RichText::new("cellm").strong().size(18.0));
                    ui.add_space(4.0);
                    // The buttons on the right keep their room; the model name gives way.
                    let room = (ui.available_width() - 300.0).max(0.0);
                    let status = match &self.model {
                        ModelState::Loaded(m) => format!("{} · {}", m.file_name(), m.profile),
                        ModelState::Loading(_) => {
                            ui.spinner();
                            "Loading model…".to_owned()
                        }
                        _ => "No model loaded".to_owned(),
                    };
                    ui.scope(|ui| {
                        ui.set_max_width(room);
                        ui.add(egui::Label::new(egui::RichText::new(status).weak()).truncate());
                    });
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.button("Settings").on_hover_text("Ctrl+,").clicked() {
                            self.settings_open = !self.settings_open;
                        }
                        let (label, next) = match self.settings.theme {
                            ThemeChoice::Dark => ("Light theme", ThemeChoice::Light),
                            ThemeChoice::Light => ("Dark theme", ThemeChoice::Dark),
                        };
                        if ui.button(label).clicked() {
                            self.settings.theme = next;
                        }
                        if ui
                            .button("Convert…")
                            .on_hover_text("Convert a checkpoint to .cellm (Ctrl+Shift+O)")
                            .clicked()
                        {
                            self.wizard.open();
                        }
                    });
                });
            });
    }

    fn settings_window(&mut self, ctx: &egui::Context) {
        let mut open = self.settings_open;
        egui::Window::new("Settings")
            .id(egui::Id::unique("settings_window"))
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .frame(egui::Frame::window(&ctx.global_style()).inner_margin(egui::Margin::same(16)))
            .anchor(egui::Align2::RIGHT_TOP, [-16.0, 56.0])
            .show(ctx, |ui| {
                let screen = ctx.content_rect();
                ui.set_width((screen.width() - 72.0).clamp(260.0, 400.0));
                // On a short window the controls scroll rather than run off the screen.
                egui::ScrollArea::vertical()
                    .id_salt("settings_scroll")
                    .max_height((screen.height() - 56.0 - 80.0).max(120.0))
                    .auto_shrink([false, true])
                    .show(ui, |ui| {
                        ui.set_width(ui.available_width() - 12.0);
                        self.settings_contents(ui);
                    });
            });
        self.settings_open = open;
    }

    fn settings_contents(&mut self, ui: &mut egui::Ui) {
        theme::section_label(ui, "Sampling");
        ui.add_space(4.0);
        super::settings::sampling_controls(ui, &mut self.settings);
        ui.add_space(8.0);
        theme::section_label(ui, "Compute");
        ui.add_space(4.0);
        super::settings::compute_controls(ui, &mut self.settings.compute);
        ui.add_space(4.0);
        if self.compute_changed() {
            ui.horizontal_wrapped(|ui| {
                ui.weak("Applies on the next model load.");
                let busy = self.generation.is_some();
                if ui
                    .add_enabled(!busy, egui::Button::new("Reload model"))
                    .clicked()
                {
                    self.reload_model();
                }
            });
        } else {
            ui.weak("Changes apply on the next model load.");
        }
        ui.add_space(8.0);
        theme::section_label(ui, "Appearance");
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.settings.theme, ThemeChoice::Dark, "Dark");
            ui.selectable_value(&mut self.settings.theme, ThemeChoice::Light, "Light");
        });
        ui.add_space(8.0);
        theme::section_label(ui, "Microphone");
        ui.horizontal(|ui| {
            let current = self
                .settings
                .microphone
                .clone()
                .unwrap_or_else(|| "System default".to_owned());
            egui::ComboBox::from_id_salt("microphone")
                .selected_text(current)
                .width((ui.available_width() - 90.0).clamp(120.0, 260.0))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.settings.microphone, None, "System default");
                    for d in &self.mic_devices {
                        ui.selectable_value(
                            &mut self.settings.microphone,
                            Some(d.clone()),
                            d.as_str(),
                        );
                    }
                })
                .response
                .on_hover_text("The input device for recordings");
            if ui
                .button("Refresh")
                .on_hover_text("List the microphones again")
                .clicked()
            {
                self.mic_devices = super::recorder::input_devices();
                if self.mic_devices.is_empty() {
                    self.notice("No microphone was found.");
                }
            }
        });
        ui.add_space(8.0);
        ui.add(
            egui::Label::new(
                egui::RichText::new(format!("Chats are saved in {}", self.store.dir().display()))
                    .weak(),
            )
            .wrap(),
        );
    }

    // ----- confirmations and fallbacks -----

    fn delete_confirmation(&mut self, ctx: &egui::Context) {
        let Some(id) = self.pending_delete.clone() else {
            return;
        };
        let Some(title) = self
            .chats
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.title.clone())
        else {
            self.pending_delete = None;
            return;
        };
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("delete_confirmation")).show(ctx, |ui| {
            ui.set_max_width(360.0);
            ui.label(egui::RichText::new("Delete this chat?").strong());
            ui.add(
                egui::Label::new(format!(
                    "\u{201c}{title}\u{201d} and its messages are deleted."
                ))
                .wrap(),
            );
            ui.weak(format!("Undo is offered for {UNDO_SECONDS} seconds."));
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if ui.add(theme::danger_button("Delete chat")).clicked() {
                    answer = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(false);
                }
            });
        });
        match answer {
            Some(true) => {
                self.pending_delete = None;
                self.delete_chat(&id);
            }
            Some(false) => self.pending_delete = None,
            None => {}
        }
    }

    /// Where no file dialog could open (no desktop portal, no zenity): a path field instead.
    fn path_prompt_window(&mut self, ctx: &egui::Context) {
        let Some((purpose, text)) = &mut self.path_prompt else {
            return;
        };
        let (title, hint) = match purpose {
            AppDialog::LoadModel => ("Load a model", "/path/to/model.cellm"),
            AppDialog::Attach => ("Attach a file", "/path/to/image.png or recording.wav"),
            AppDialog::Export(_) => ("Export the chat", "/path/to/chat.md"),
            AppDialog::SaveCopy(_) => ("Save a copy", "/path/to/recording.wav"),
        };
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("path_prompt")).show(ctx, |ui| {
            ui.set_width(420.0_f32.min(ctx.content_rect().width() - 64.0));
            ui.label(egui::RichText::new(title).strong());
            ui.add(
                egui::Label::new(
                    "No file dialog is available on this system (it needs a desktop portal or \
                     zenity). Type the path instead:",
                )
                .wrap(),
            );
            let r = ui.add(
                egui::TextEdit::singleline(text)
                    .hint_text(hint)
                    .desired_width(f32::INFINITY),
            );
            r.request_focus();
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.horizontal(|ui| {
                if ui.add(theme::primary_button("OK")).clicked() || enter {
                    answer = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(false);
                }
            });
        });
        match answer {
            Some(true) => {
                if let Some((purpose, text)) = self.path_prompt.take() {
                    let text = text.trim();
                    if !text.is_empty() {
                        let path = PathBuf::from(text);
                        let opening = matches!(purpose, AppDialog::LoadModel | AppDialog::Attach);
                        if opening && !path.is_file() {
                            self.notice(format!("{} is not a file.", path.display()));
                        } else {
                            self.use_paths(purpose, vec![path]);
                        }
                    }
                }
            }
            Some(false) => self.path_prompt = None,
            None => {}
        }
    }

    /// Ends the Undo offer, the "Copied" and the busy hints when their time is up; asks for
    /// one repaint at that time rather than every frame.
    fn expire_transients(&mut self, ctx: &egui::Context) {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut wake = |left: Duration| next = Some(next.map_or(left, |n| n.min(left)));
        if let Some((_, at)) = &self.undo_delete {
            let left = Duration::from_secs(UNDO_SECONDS).saturating_sub(now - *at);
            if left.is_zero() {
                self.undo_delete = None;
            } else {
                wake(left);
            }
        }
        let confirm = Duration::from_secs_f32(CONFIRM_SECONDS);
        if let Some((_, at)) = &self.copied {
            let left = confirm.saturating_sub(now - *at);
            if left.is_zero() {
                self.copied = None;
            } else {
                wake(left);
            }
        }
        if let Some(at) = self.busy_hint {
            let left = (confirm * 2).saturating_sub(now - at);
            if left.is_zero() {
                self.busy_hint = None;
            } else {
                wake(left);
            }
        }
        if let Some(d) = next {
            ctx.request_repaint_after(d);
        }
    }
}

/// Where a save dialog's typed-path fallback starts.
fn dirs_home() -> PathBuf {
    directories::UserDirs::new()
        .map(|d| d.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."))
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.settings);
    }
}
