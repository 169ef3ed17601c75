//! User settings (persisted through eframe storage) and the Settings window.

use cellm_engine::kv_cache::{KvPrecision, KvRotation};
use cellm_engine::sampler::SamplingParams;
use cellm_engine::session::{Backend as EngineBackendKind, SessionOptions};
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
    /// Where and how the model runs; applied on the next load.
    pub compute: ComputeSettings,
}

/// Where the text model runs (mirrors the engine's `Backend`, with serde for storage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeBackend {
    #[default]
    Cpu,
    Gpu,
    Auto,
}

/// Storage of the KV cache, as offered in Settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCacheChoice {
    #[default]
    F16,
    /// int8 with a Hadamard rotation first (the rotation is what makes int8 near-lossless).
    Q8,
    Q4,
    F32,
}

impl KvCacheChoice {
    pub const ALL: [KvCacheChoice; 4] = [Self::F16, Self::Q8, Self::Q4, Self::F32];

    pub fn label(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
            Self::F32 => "f32",
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Self::F16 => "default",
            Self::Q8 => "smaller, near-lossless",
            Self::Q4 => "smallest, lossy",
            Self::F32 => "exact",
        }
    }
}

/// The load-time options of Settings > Compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ComputeSettings {
    pub backend: ComputeBackend,
    /// None: all cores.
    pub threads: Option<usize>,
    pub kv_cache: KvCacheChoice,
}

impl ComputeSettings {
    /// The engine options these settings stand for.
    pub fn session_options(&self) -> SessionOptions {
        let (kv_precision, kv_rotation) = match self.kv_cache {
            KvCacheChoice::F16 => (KvPrecision::F16, KvRotation::None),
            KvCacheChoice::Q8 => (KvPrecision::Q8, KvRotation::Hadamard),
            // Rotation spreads outliers before quantizing, which helps int4 at least as much.
            KvCacheChoice::Q4 => (KvPrecision::Q4, KvRotation::Hadamard),
            KvCacheChoice::F32 => (KvPrecision::F32, KvRotation::None),
        };
        SessionOptions {
            threads: self.threads,
            kv_precision,
            kv_rotation,
            backend: match self.backend {
                ComputeBackend::Cpu => EngineBackendKind::Cpu,
                ComputeBackend::Gpu => EngineBackendKind::Gpu,
                ComputeBackend::Auto => EngineBackendKind::Auto,
            },
            ..SessionOptions::default()
        }
    }
}

/// Cores the machine reports (the top of the Threads slider).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Draws the Compute controls; returns true when something changed.
pub fn compute_controls(ui: &mut egui::Ui, compute: &mut ComputeSettings) -> bool {
    let before = *compute;
    egui::Grid::new("compute_grid")
        .num_columns(2)
        .spacing([16.0, 10.0])
        .show(ui, |ui| {
            ui.label("Backend");
            ui.horizontal(|ui| {
                ui.selectable_value(&mut compute.backend, ComputeBackend::Cpu, "CPU");
                ui.selectable_value(&mut compute.backend, ComputeBackend::Gpu, "GPU");
                ui.selectable_value(&mut compute.backend, ComputeBackend::Auto, "Auto")
                    .on_hover_text(
                        "Whichever decodes faster on this machine, measured once per model \
                         and cached; the CPU when no hardware GPU exists.",
                    );
            });
            ui.end_row();
            ui.label("");
            ui.weak("GPU falls back to the CPU when no adapter is usable.");
            ui.end_row();

            ui.label("Threads");
            ui.horizontal(|ui| {
                let max = available_threads();
                let mut auto = compute.threads.is_none();
                if ui
                    .checkbox(&mut auto, "Auto")
                    .on_hover_text("Use every core.")
                    .changed()
                {
                    compute.threads = if auto { None } else { Some(max) };
                }
                if let Some(n) = compute.threads.as_mut() {
                    *n = (*n).clamp(1, max);
                    ui.add(egui::Slider::new(n, 1..=max))
                        .on_hover_text("Worker threads for the CPU kernels.");
                }
            });
            ui.end_row();

            ui.label("KV cache");
            egui::ComboBox::from_id_salt("kv_cache")
                .selected_text(format!(
                    "{} — {}",
                    compute.kv_cache.label(),
                    compute.kv_cache.hint()
                ))
                .width(220.0)
                .show_ui(ui, |ui| {
                    for c in KvCacheChoice::ALL {
                        ui.selectable_value(
                            &mut compute.kv_cache,
                            c,
                            format!("{} — {}", c.label(), c.hint()),
                        );
                    }
                })
                .response
                .on_hover_text("How keys and values of past tokens are stored.");
            ui.end_row();
        });
    *compute != before
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
            compute: ComputeSettings::default(),
        }
    }
}

impl AppSettings {
    /// The settings with every number brought inside the ranges the Settings window offers:
    /// stored settings are a file the user (or anything else) can edit, and a huge
    /// `max_new_tokens` or thread count, or a NaN temperature, must not reach the engine.
    pub fn clamped(mut self) -> Self {
        let finite_in = |v: f32, lo: f32, hi: f32, default: f32| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                default
            }
        };
        let d = SamplingParams::default();
        let s = &mut self.sampling;
        s.temperature = finite_in(s.temperature, 0.0, 2.0, 0.7);
        s.top_k = s.top_k.min(200);
        s.top_p = finite_in(s.top_p, 0.05, 1.0, d.top_p);
        s.min_p = finite_in(s.min_p, 0.0, 1.0, d.min_p);
        s.repetition_penalty = finite_in(s.repetition_penalty, 1.0, 2.0, d.repetition_penalty);
        s.repetition_window = s.repetition_window.min(4096);
        self.max_new_tokens = self.max_new_tokens.clamp(16, 8192);
        if let Some(n) = self.compute.threads.as_mut() {
            *n = (*n).clamp(1, available_threads());
        }
        self
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
            ui.add(egui::Slider::new(&mut settings.max_new_tokens, 16..=8192).logarithmic(true))
                .on_hover_text("The longest reply, in tokens.");
            ui.end_row();

            let s = &mut settings.sampling;
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut s.seed).speed(1))
                .on_hover_text("The same seed and settings give the same reply.");
            ui.end_row();
        });
    ui.add_space(8.0);
    if ui.button("Reset to defaults").clicked() {
        let keep = settings.clone();
        *settings = AppSettings {
            theme: keep.theme,
            last_model: keep.last_model,
            microphone: keep.microphone,
            compute: keep.compute,
            ..AppSettings::default()
        };
    }
    *settings != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_settings_are_clamped_on_load() {
        let mut s = AppSettings {
            max_new_tokens: usize::MAX,
            ..Default::default()
        };
        s.sampling.temperature = f32::NAN;
        s.sampling.top_p = 7.0;
        s.sampling.top_k = 1 << 40;
        s.sampling.repetition_penalty = -3.0;
        s.compute.threads = Some(100_000);
        let c = s.clamped();
        assert_eq!(c.max_new_tokens, 8192);
        assert_eq!(c.sampling.temperature, 0.7);
        assert_eq!(c.sampling.top_p, 1.0);
        assert_eq!(c.sampling.top_k, 200);
        assert_eq!(c.sampling.repetition_penalty, 1.0);
        assert_eq!(c.compute.threads, Some(available_threads()));
        // In-range settings come back unchanged.
        let d = AppSettings::default();
        assert_eq!(d.clone().clamped(), d);
    }
}
