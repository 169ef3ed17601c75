//! The composer at the bottom: attachments, multi-line input (Enter sends, Shift+Enter adds a
//! line), Attach, Send / Stop.

use super::app::{App, AppDialog, ModelState};
use super::dialogs::{DialogKind, PendingDialog};
use super::model::{Attachment, AttachmentKind};
use super::theme;
use super::waveform::WaveCache;

pub const INPUT_ID: &str = "composer_input";

#[derive(Default)]
pub struct ComposerState {
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// Index of the user message being edited (sending replaces it and what follows).
    pub editing: Option<usize>,
    /// Move keyboard focus to the input on the next frame.
    pub focus_next: bool,
}

impl App {
    pub(super) fn composer_panel(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("composer")
            .frame(
                egui::Frame::side_top_panel(ui.style())
                    .inner_margin(egui::Margin::symmetric(16, 12)),
            )
            .show(ui, |ui| {
                if let Some(i) = self.composer.editing {
                    ui.horizontal(|ui| {
                        ui.weak(format!(
                            "Editing message {} — sending replaces it and every reply after it.",
                            i + 1
                        ));
                        if ui.small_button("Cancel edit").clicked() {
                            self.composer.editing = None;
                            self.composer.text.clear();
                            self.composer.attachments.clear();
                        }
                    });
                }
                if self.recorder.is_some() {
                    self.recording_bar(ui);
                    ui.add_space(6.0);
                }
                if !self.composer.attachments.is_empty() {
                    self.attachment_row(ui);
                    ui.add_space(6.0);
                }
                self.input_row(ui);
            });
    }

    fn recording_bar(&mut self, ui: &mut egui::Ui) {
        let Some(rec) = &self.recorder else {
            return;
        };
        let (elapsed, level, device, error) =
            (rec.elapsed(), rec.level(), rec.device.clone(), rec.error());
        let mut action = None;
        ui.horizontal_wrapped(|ui| {
            // A red dot, painted (the bundled fonts have no filled-circle glyph).
            let (dot, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
            ui.painter()
                .circle_filled(dot.center(), 5.0, theme::error_color(ui));
            let s = elapsed.as_secs_f32();
            ui.label(format!("Recording {}:{:04.1}", (s / 60.0) as u32, s % 60.0));
            if ui.button("Stop and attach").clicked() {
                action = Some(true);
            }
            if ui.button("Discard").clicked() {
                action = Some(false);
            }
            ui.add(
                egui::ProgressBar::new(level)
                    .desired_width(140.0)
                    .desired_height(8.0)
                    .fill(theme::ACCENT),
            );
            ui.add(egui::Label::new(egui::RichText::new(device).weak()).truncate());
            if let Some(e) = error {
                ui.colored_label(theme::error_color(ui), e);
            }
        });
        if let Some(keep) = action {
            self.finish_recording(keep);
        }
    }

    fn attachment_row(&mut self, ui: &mut egui::Ui) {
        let mut remove = None;
        let mut toggle = None;
        let playing = self.playing().map(std::path::Path::to_path_buf);
        let waves = &mut self.waves;
        ui.horizontal_wrapped(|ui| {
            for (i, a) in self.composer.attachments.iter().enumerate() {
                theme::card(ui)
                    .inner_margin(egui::Margin::same(6))
                    .show(ui, |ui| {
                        ui.horizontal(|ui| {
                            if attachment_preview(ui, a, 48.0, waves, playing.as_deref()) {
                                toggle = Some(a.path.clone());
                            }
                            if ui
                                .small_button("Remove")
                                .on_hover_text("Remove this attachment")
                                .clicked()
                            {
                                remove = Some(i);
                            }
                        });
                    });
            }
        });
        if let Some(p) = toggle {
            self.toggle_playback(&p);
        }
        if let Some(i) = remove {
            if self
                .composer
                .attachments
                .get(i)
                .is_some_and(|a| self.playing() == Some(a.path.as_path()))
            {
                self.player = None; // removing what plays stops it
            }
            self.composer.attachments.remove(i);
        }
    }

    fn input_row(&mut self, ui: &mut egui::Ui) {
        let id = egui::Id::unique(INPUT_ID);
        let generating = self.is_generating();
        // Enter sends; Shift+Enter falls through to the text edit as a new line.
        let mut send = false;
        if ui.memory(|m| m.has_focus(id))
            && !ui.input(|i| i.modifiers.shift)
            && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Enter))
        {
            send = true;
        }
        // What the loaded model reads (unknown before a load: everything is offered).
        let (images, audio) = match &self.model {
            ModelState::Loaded(m) => (m.has_vision, m.has_audio),
            _ => (true, true),
        };
        let media = images || audio;
        if let ModelState::Loaded(m) = &self.model {
            let mut reads = vec!["text"];
            if m.has_vision {
                reads.push("images");
            }
            if m.has_audio {
                reads.push("audio");
            }
            ui.weak(format!("{} reads {}", m.file_name(), reads.join(", ")));
        }
        let (attach_hint, no_media) = match (images, audio) {
            (true, true) => ("Attach an image (PNG, JPEG) or a WAV recording", ""),
            (true, false) => ("Attach an image (PNG, JPEG)", ""),
            (false, true) => ("Attach a WAV recording", ""),
            (false, false) => ("", "The loaded model reads text only"),
        };
        ui.horizontal(|ui| {
            if ui
                .add_enabled(
                    media,
                    egui::Button::new("+").min_size(egui::vec2(34.0, 34.0)),
                )
                .on_hover_text(attach_hint)
                .on_disabled_hover_text(no_media)
                .clicked()
                && self.dialog.is_none()
            {
                self.dialog = Some((
                    AppDialog::Attach,
                    PendingDialog::open(
                        DialogKind::OpenFiles("Images and audio", &["png", "jpg", "jpeg", "wav"]),
                        ui.ctx().clone(),
                    ),
                ));
            }
            if ui
                .add_enabled(
                    images,
                    egui::Button::new("Paste").min_size(egui::vec2(52.0, 34.0)),
                )
                .on_hover_text("Attach the image on the clipboard (Ctrl+V)")
                .on_disabled_hover_text("The loaded model does not read images")
                .clicked()
            {
                self.paste(true);
            }
            let recording = self.recorder.is_some();
            if ui
                .add_enabled(
                    !recording && audio,
                    egui::Button::new("Mic").min_size(egui::vec2(44.0, 34.0)),
                )
                .on_hover_text("Record from the microphone (choose it in Settings)")
                .on_disabled_hover_text(if audio {
                    "Recording…"
                } else {
                    "The loaded model does not read audio"
                })
                .clicked()
            {
                self.start_recording();
            }
            let button_w = 84.0;
            let w = ui.available_width() - button_w - ui.spacing().item_spacing.x;
            let edit = ui.add(
                egui::TextEdit::multiline(&mut self.composer.text)
                    .id(id)
                    .hint_text("Message  (Enter to send, Shift+Enter for a new line)")
                    .desired_rows(2)
                    .desired_width(w)
                    .margin(egui::Margin::symmetric(10, 8))
                    .return_key(Some(egui::KeyboardShortcut::new(
                        egui::Modifiers::SHIFT,
                        egui::Key::Enter,
                    ))),
            );
            if self.composer.focus_next {
                edit.request_focus();
                self.composer.focus_next = false;
            }
            if generating {
                let cancelling = self.generation.as_ref().is_some_and(|g| g.cancelling);
                let label = if cancelling { "Cancelling…" } else { "Stop" };
                if ui
                    .add_enabled(
                        !cancelling,
                        egui::Button::new(label).min_size(egui::vec2(button_w, 34.0)),
                    )
                    .on_hover_text("Esc")
                    .clicked()
                {
                    self.stop();
                }
            } else {
                let can_send =
                    !self.composer.text.trim().is_empty() || !self.composer.attachments.is_empty();
                if ui
                    .add_enabled(
                        can_send,
                        theme::primary_button("Send").min_size(egui::vec2(button_w, 34.0)),
                    )
                    .clicked()
                {
                    send = true;
                }
            }
        });
        if send {
            // While a reply is being written this only shows a hint (the text stays).
            self.send();
            self.composer.focus_next = true;
        }
    }
}

/// A thumbnail for an image; for a WAV file a chip with its name, waveform, duration and a
/// Play / Stop button (`playing`: the file playing now). Returns true when Play / Stop was clicked.
pub fn attachment_preview(
    ui: &mut egui::Ui,
    a: &Attachment,
    size: f32,
    waves: &mut WaveCache,
    playing: Option<&std::path::Path>,
) -> bool {
    let mut toggle = false;
    match a.kind {
        AttachmentKind::Image => {
            ui.add(
                egui::Image::new(format!("file://{}", a.path.display()))
                    .fit_to_exact_size(egui::vec2(size, size))
                    .maintain_aspect_ratio(true)
                    .corner_radius(6),
            )
            .on_hover_text(a.path.display().to_string());
        }
        AttachmentKind::Audio => {
            egui::Frame::new()
                .fill(ui.visuals().faint_bg_color)
                .corner_radius(6)
                .inner_margin(egui::Margin::symmetric(8, 6))
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        let (label, hint) = if playing == Some(a.path.as_path()) {
                            ("■ Stop", "Stop playing")
                        } else {
                            ("▶ Play", "Play this recording on the default audio output")
                        };
                        toggle = ui.small_button(label).on_hover_text(hint).clicked();
                        ui.label(egui::RichText::new("WAV").small().strong());
                        ui.label(a.file_name());
                        match waves.get(&a.path, ui.ctx()) {
                            Some(Ok(preview)) => super::waveform::show(ui, preview, size * 2.0),
                            Some(Err(e)) if e != "reading…" => {
                                ui.colored_label(theme::error_color(ui), e.as_str());
                            }
                            _ => {
                                ui.spinner();
                            }
                        }
                    });
                })
                .response
                .on_hover_text(a.path.display().to_string());
        }
    }
    toggle
}
