//! The left panel: chats (new, search, rename, export, delete) and the loaded model.

use super::app::{App, AppDialog, ModelState};
use super::dialogs::{DialogKind, PendingDialog};
use super::text::{human_bytes, human_count};
use super::theme;

/// Below this window width the sidebar starts hidden (the top bar's "Chats" shows it).
pub const NARROW: f32 = 700.0;

#[derive(Default)]
pub struct SidebarState {
    /// Hidden by the top bar's toggle (or by default on a narrow window).
    pub collapsed: Option<bool>,
    pub search: String,
    /// (chat id, title being typed)
    pub renaming: Option<(String, String)>,
}

enum RowAction {
    Select(String),
    StartRename(String),
    Export(String),
    Delete(String),
}

impl App {
    /// Whether the sidebar shows: the user's choice, else only where the window is wide enough.
    pub fn sidebar_visible(&self, ctx: &egui::Context) -> bool {
        match self.sidebar.collapsed {
            Some(c) => !c,
            None => ctx.content_rect().width() >= NARROW,
        }
    }

    /// Shows or hides the sidebar (the top bar's "Chats" toggle).
    pub fn set_sidebar_shown(&mut self, shown: bool) {
        self.sidebar.collapsed = Some(!shown);
    }

    pub(super) fn sidebar_panel(&mut self, ui: &mut egui::Ui) {
        if !self.sidebar_visible(ui.ctx()) {
            return;
        }
        let max = (ui.ctx().content_rect().width() * 0.45).clamp(220.0, 420.0);
        egui::Panel::left("sidebar")
            .resizable(true)
            .default_size(260.0)
            .min_size(210.0)
            .max_size(max)
            .frame(egui::Frame::side_top_panel(ui.style()).inner_margin(egui::Margin::same(12)))
            .show(ui, |ui| {
                // The model card takes what it needs at the bottom; on a short window its
                // details fold so the chat list keeps room.
                let short = ui.ctx().content_rect().height() < 640.0;
                egui::Panel::bottom("model_panel")
                    .frame(egui::Frame::NONE.inner_margin(egui::Margin {
                        top: 10,
                        ..Default::default()
                    }))
                    .show(ui, |ui| self.model_card(ui, short));
                self.chat_list(ui);
            });
    }

    fn chat_list(&mut self, ui: &mut egui::Ui) {
        let w = ui.available_width();
        if ui
            .add_sized([w, 32.0], theme::primary_button("+  New chat"))
            .on_hover_text("Ctrl+N")
            .clicked()
        {
            self.new_chat();
            self.composer.focus_next = true;
        }
        ui.add_space(4.0);
        ui.add(
            egui::TextEdit::singleline(&mut self.sidebar.search)
                .hint_text("Search chats")
                .desired_width(w),
        );
        ui.add_space(6.0);
        theme::section_label(ui, "Chats");

        let needle = self.sidebar.search.trim().to_lowercase();
        let mut action = None;
        let mut finish_rename = None;
        // The row of actions under the list needs its height kept free.
        let actions_h = if self.active.is_some() { 36.0 } else { 0.0 };
        egui::ScrollArea::vertical()
            .id_salt("chat_list")
            .auto_shrink([false, false])
            .max_height((ui.available_height() - actions_h).max(0.0))
            .show(ui, |ui| {
                let mut shown = 0;
                for chat in &self.chats {
                    if !needle.is_empty()
                        && !chat.title.to_lowercase().contains(&needle)
                        && !chat
                            .messages
                            .iter()
                            .any(|m| m.text.to_lowercase().contains(&needle))
                    {
                        continue;
                    }
                    shown += 1;
                    let selected = self.active.as_deref() == Some(chat.id.as_str());
                    if let Some((id, buffer)) = &mut self.sidebar.renaming
                        && *id == chat.id
                    {
                        let r = ui.add(
                            egui::TextEdit::singleline(buffer)
                                .id(egui::Id::unique("rename_field"))
                                .desired_width(ui.available_width()),
                        );
                        r.request_focus();
                        if ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                            finish_rename = Some(Some((id.clone(), buffer.clone())));
                        } else if ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                            finish_rename = Some(None);
                        }
                        continue;
                    }
                    let generating = self
                        .generation
                        .as_ref()
                        .is_some_and(|g| g.chat_id == chat.id);
                    let drafted = self.drafts.contains_key(&chat.id);
                    let title = chat.title.clone();
                    // Text on the left, the rest of the row filled (a grow atom after it); the
                    // chat being written to keeps room for its spinner on the right.
                    let r = ui.add(
                        egui::Button::selectable(selected, (title, egui::Atom::grow()))
                            .truncate()
                            .min_size(egui::vec2(ui.available_width(), 28.0)),
                    );
                    if generating {
                        let size = 14.0;
                        let at = egui::Rect::from_center_size(
                            egui::pos2(r.rect.right() - 16.0, r.rect.center().y),
                            egui::vec2(size, size),
                        );
                        egui::Spinner::new().size(size).paint_at(ui, at);
                    }
                    let r = if generating {
                        r.on_hover_text("A reply is being written in this chat")
                    } else if drafted {
                        r.on_hover_text("Has an unsent draft")
                    } else {
                        r
                    };
                    if r.clicked() {
                        action = Some(RowAction::Select(chat.id.clone()));
                    }
                    r.context_menu(|ui| {
                        if ui.button("Rename").clicked() {
                            action = Some(RowAction::StartRename(chat.id.clone()));
                        }
                        if ui.button("Export as Markdown…").clicked() {
                            action = Some(RowAction::Export(chat.id.clone()));
                        }
                        if ui.button("Delete").clicked() {
                            action = Some(RowAction::Delete(chat.id.clone()));
                        }
                    });
                }
                if shown == 0 {
                    ui.add_space(8.0);
                    ui.weak(if needle.is_empty() {
                        "No chats yet."
                    } else {
                        "No chat matches."
                    });
                }
            });

        // Actions on the selected chat, visible without a right click.
        if let Some(id) = self.active.clone()
            && self.sidebar.renaming.is_none()
        {
            ui.add_space(4.0);
            ui.horizontal_wrapped(|ui| {
                if ui.small_button("Rename").clicked() {
                    action = Some(RowAction::StartRename(id.clone()));
                }
                if ui.small_button("Export…").clicked() {
                    action = Some(RowAction::Export(id.clone()));
                }
                if ui.small_button("Delete").clicked() {
                    action = Some(RowAction::Delete(id.clone()));
                }
            });
        }

        if let Some(done) = finish_rename {
            if let Some((id, title)) = done {
                self.rename_chat(&id, &title);
            }
            self.sidebar.renaming = None;
        }
        match action {
            Some(RowAction::Select(id)) => self.select_chat(Some(id)),
            Some(RowAction::StartRename(id)) => {
                let title = self
                    .chats
                    .iter()
                    .find(|c| c.id == id)
                    .map(|c| c.title.clone())
                    .unwrap_or_default();
                self.sidebar.renaming = Some((id, title));
            }
            Some(RowAction::Export(id)) if self.dialog.is_none() => {
                let name = self
                    .chats
                    .iter()
                    .find(|c| c.id == id)
                    .map(|c| format!("{}.md", sanitize_file_name(&c.title)))
                    .unwrap_or_else(|| "chat.md".to_owned());
                self.dialog = Some((
                    AppDialog::Export(id),
                    PendingDialog::open(DialogKind::Save(name), ui.ctx().clone()),
                ));
            }
            Some(RowAction::Delete(id)) => self.request_delete(&id),
            Some(RowAction::Export(_)) | None => {}
        }
    }

    fn model_card(&mut self, ui: &mut egui::Ui, short: bool) {
        let rss = self.worker.rss_bytes();
        let model = self.model.clone();
        {
            theme::card(ui).show(ui, |ui| {
                ui.set_width(ui.available_width());
                theme::section_label(ui, "Model");
                ui.add_space(2.0);
                match &model {
                    ModelState::None => {
                        ui.weak("No model loaded.");
                    }
                    ModelState::Loading(path) => {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            let name = path
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            ui.add(egui::Label::new(format!("Loading {name}…")).truncate())
                                .on_hover_text(path.display().to_string());
                        });
                    }
                    ModelState::Failed(message) => {
                        egui::ScrollArea::vertical()
                            .id_salt("model_error")
                            .max_height(if short { 60.0 } else { 140.0 })
                            .show(ui, |ui| theme::error_box(ui, message));
                    }
                    ModelState::Loaded(m) => {
                        ui.add(
                            egui::Label::new(egui::RichText::new(m.file_name()).strong())
                                .truncate(),
                        )
                        .on_hover_text(m.path.display().to_string());
                        let software = super::text::software_adapter(&m.backend);
                        if let Some(adapter) = &software {
                            ui.add(
                                egui::Label::new(
                                    egui::RichText::new(format!(
                                        "Runs on {adapter}, a software GPU: slower than the CPU."
                                    ))
                                    .color(theme::error_color(ui)),
                                )
                                .wrap(),
                            );
                        }
                        let details = egui::CollapsingHeader::new("Details")
                            .id_salt("model_details")
                            .default_open(!short)
                            .show_unindented(ui, |ui| {
                                egui::Grid::new("model_facts")
                                    .num_columns(2)
                                    .spacing([12.0, 2.0])
                                    .show(ui, |ui| {
                                        // long values (a GPU's full name, the auto probe's
                                        // reason) end in "…" and show whole on hover
                                        let mut row = |k: &str, v: String| {
                                            ui.weak(k);
                                            ui.add(egui::Label::new(&v).truncate())
                                                .on_hover_text(v);
                                            ui.end_row();
                                        };
                                        row("Family", m.family.clone());
                                        row("Size", human_bytes(m.file_bytes));
                                        row("Profile", m.profile.clone());
                                        if m.parameters > 0 {
                                            row("Parameters", human_count(m.parameters));
                                        }
                                        if m.context_length > 0 {
                                            row("Context", format!("{} tokens", m.context_length));
                                        }
                                        if let Some(f) = &m.fidelity {
                                            row("Fidelity", f.clone());
                                        }
                                        let mut media = vec!["text"];
                                        if m.has_vision {
                                            media.push("images");
                                        }
                                        if m.has_audio {
                                            media.push("audio");
                                        }
                                        row("Input", media.join(", "));
                                        if let Some(adapter) = &software {
                                            row("Backend", format!("gpu: {adapter} (software)"));
                                        } else if !m.backend.is_empty() {
                                            row("Backend", m.backend.clone());
                                        }
                                        if !m.kv_cache.is_empty() {
                                            row("KV cache", m.kv_cache.clone());
                                        }
                                        if m.completion_mode {
                                            row("Mode", "text completion".into());
                                        }
                                    });
                            });
                        let _ = details;
                    }
                }
                if rss > 0 {
                    ui.add_space(2.0);
                    ui.weak(format!("App memory {}", human_bytes(rss)));
                }
            });
        }
        ui.add_space(6.0);
        let loaded = matches!(self.model, ModelState::Loaded(_));
        let busy = matches!(self.model, ModelState::Loading(_)) || self.generation.is_some();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!busy, egui::Button::new("Load model…"))
                .on_hover_text("Open a .cellm file (Ctrl+O)")
                .clicked()
            {
                self.open_model_dialog(ui.ctx());
            }
            if loaded && ui.add_enabled(!busy, egui::Button::new("Unload")).clicked() {
                self.unload_model();
            }
        });
    }
}

fn sanitize_file_name(title: &str) -> String {
    let s: String = title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "chat".to_owned()
    } else {
        s.to_owned()
    }
}
