//! The desktop app (eframe/egui): `cellm` with no subcommand opens it.
//!
//! Structure: [`app::App`] owns the UI state and draws the panels ([`sidebar`], [`chat_view`],
//! [`composer`], [`wizard`], [`settings`]); [`worker`] runs the model on its own thread behind
//! the [`backend::Backend`] trait; [`store`] keeps chats on disk.

pub mod app;
pub mod auto_plot;
pub mod backend;
pub mod chat_view;
pub mod clipboard;
pub mod composer;
pub mod convert_job;
pub mod dialogs;
pub mod model;
pub mod player;
pub mod recorder;
pub mod settings;
pub mod sidebar;
pub mod store;
pub mod text;
pub mod theme;
pub mod waveform;
pub mod wizard;
pub mod worker;

use anyhow::Context as _;

/// Opens the window and runs until it is closed. `model`, when given (`cellm --model FILE`), is loaded at start instead of
/// the last model of the previous run.
pub fn run(model: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let data_dir = store::ChatStore::default_dir()
        .context("cannot find a data directory for this user (is $HOME set?)")?;
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("cellm")
        .with_app_id("cellm")
        .with_inner_size([1180.0, 760.0])
        .with_min_inner_size([720.0, 480.0]);
    // The icon is compiled in; a broken one only costs the icon.
    if let Ok(icon) = eframe::icon_data::from_png_bytes(include_bytes!("../../../assets/icon.png"))
    {
        viewport = viewport.with_icon(std::sync::Arc::new(icon));
    }
    let options = eframe::NativeOptions {
        viewport,
        persist_window: true,
        // The app adds egui's system font provider itself (theme::install_fonts), so the UI
        // tests use the same fonts as the window.
        system_font_fallback: false,
        ..Default::default()
    };
    eframe::run_native(
        "cellm",
        options,
        Box::new(move |cc| {
            let mut settings: settings::AppSettings = cc
                .storage
                .and_then(|s| eframe::get_value::<settings::AppSettings>(s, settings::STORAGE_KEY))
                .unwrap_or_default()
                .clamped();
            if let Some(path) = model {
                settings.last_model = Some(path);
            }
            Ok(Box::new(app::App::new(app::AppConfig {
                data_dir,
                settings,
                backend: Box::new(backend::EngineBackend::default()),
                autoload: true,
            })))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}
