//! User settings (persisted through eframe storage) and the Settings window.

use cellm_engine::sampler::SamplingParams;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const STORAGE_KEY: &str = "cellm.settings";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThemeChoice {
    Dark,
    Light,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    pub theme: ThemeChoice,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// The model loaded last time; loaded again at start.
    pub last_model: Option<PathBuf>,
    /// Input device for recordings (None: the system default).
    pub microphone: Option<String>,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            theme: ThemeChoice::Dark,
            sampling: SamplingParams {
                temperature: 0.7,
                ..SamplingParams::default()
            },
            max_new_tokens: 1024,
            last_model: None,
            microphone: None,
        }
    }
}

/// Draws the sampling controls; returns true when something changed.
pub fn sampling_controls(ui: &mut egui::Ui, settings: &mut AppSettings) -> bool {
    let before = settings.clone();
    egui::Grid::new("sampling_grid")
        .num_columns(2)
        .spacing([16.0, 10.0])
        .show(ui, |ui| {
            let s = &mut settings.sampling;
            ui.label("Temperature");
            ui.add(egui::Slider::new(&mut s.temperature, 0.0..=2.0).step_by(0.05))
                .on_hover_text("0 always picks the most likely token (greedy).");
            ui.end_row();

            ui.label("Top-k");
            ui.add(egui::Slider::new(&mut s.top_k, 0..=200))
                .on_hover_text("0 turns top-k off.");
            ui.end_row();

            ui.label("Top-p");
            ui.add(egui::Slider::new(&mut s.top_p, 0.05..=1.0).step_by(0.01))
                .on_hover_text("1.0 turns top-p off.");
            ui.end_row();

            ui.label("Repetition penalty");
            ui.add(egui::Slider::new(&mut s.repetition_penalty, 1.0..=2.0).step_by(0.01))
                .on_hover_text("1.0 turns the penalty off.");
            ui.end_row();

            ui.label("Max new tokens");
            ui.add(egui::Slider::new(&mut settings.max_new_tokens, 16..=8192).logarithmic(true));
            ui.end_row();

            let s = &mut settings.sampling;
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut s.seed).speed(1));
            ui.end_row();
        });
    ui.add_space(8.0);
    if ui.button("Reset to defaults").clicked() {
        let keep = settings.clone();
        *settings = AppSettings {
            theme: keep.theme,
            last_model: keep.last_model,
            microphone: keep.microphone,
            ..AppSettings::default()
        };
    }
    *settings != before
}
