//! Colours, text sizes and small styled widgets shared by the panels.

use super::settings::ThemeChoice;
use egui::{Color32, CornerRadius, FontId, Margin, RichText, Stroke, TextStyle};

pub const ACCENT: Color32 = Color32::from_rgb(0x4c, 0x8d, 0xf6);
const ACCENT_DARK_BG: Color32 = Color32::from_rgb(0x2a, 0x4a, 0x7a);

/// Text that needs fonts beyond egui's bundled ones: what the start-up probe and the tests check.
pub const MIXED_SCRIPTS: &str = "中文 日本語 한국어 العربية 😀👍 → ← ⇒";

/// Scripts probed at start-up, with one character each (a font for it is looked up).
const PROBES: [(&str, char); 4] = [
    ("Chinese, Japanese and Korean", '中'),
    ("Korean", '한'),
    ("Arabic", 'ع'),
    ("emoji", '😀'),
];

/// Installs the fonts: egui's defaults, then an icon font for symbols such as the Markdown code
/// blocks' copy icon (🗐) and ✔ (it ships in `assets/fonts/`, MIT), then the system's fonts,
/// found on demand for any character the others lack (CJK, Arabic, emoji, arrows...).
///
/// Returns a receiver that later yields the scripts no system font covers (empty when all
/// are); the probe runs on its own thread because listing the system fonts takes a moment.
pub fn install_fonts(ctx: &egui::Context) -> std::sync::mpsc::Receiver<Vec<&'static str>> {
    const NAME: &str = "emoji-icon-font";
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        NAME.to_owned(),
        std::sync::Arc::new(egui::FontData::from_static(include_bytes!(
            "../../../assets/fonts/emoji-icon-font.ttf"
        ))),
    );
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push(NAME.to_owned());
    }
    ctx.set_fonts(fonts);
    // egui's own system-font lookup (fontique: fontconfig on Linux, Core Text on macOS,
    // DirectWrite on Windows); what it finds is appended after the fonts above.
    let system = std::sync::Arc::new(egui_system_font_provider::SystemFontProvider::new());
    ctx.add_font_provider(system.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let repaint = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("cellm-font-probe".into())
        .spawn(move || {
            let missing = missing_scripts(system.as_ref());
            let _ = tx.send(missing);
            repaint.request_repaint();
        });
    if let Err(e) = spawned {
        log::warn!("could not probe the system fonts: {e}");
    }
    rx
}

/// The probed scripts for which `provider` finds no font.
pub fn missing_scripts(provider: &dyn egui::FontProvider) -> Vec<&'static str> {
    let family = egui::FontFamily::Proportional;
    let mut missing: Vec<&'static str> = Vec::new();
    for (script, c) in PROBES {
        let mut buf = [0u8; 4];
        let request = egui::FallbackRequest {
            cluster: c.encode_utf8(&mut buf),
            family: &family,
        };
        if provider.font_for(&request).is_none() {
            // CJK and Korean are one line in the notice when both are missing.
            if !(script == "Korean" && missing.contains(&"Chinese, Japanese and Korean")) {
                missing.push(script);
            }
        }
    }
    missing
}

/// The one notice shown when system fonts are missing, or None when every script has one.
pub fn missing_fonts_notice(missing: &[&str]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "No system font was found for {}, so such text shows as boxes. Install Noto fonts \
         (on Debian/Ubuntu: fonts-noto-cjk fonts-noto-color-emoji fonts-noto-core).",
        missing.join(", ")
    ))
}

pub fn apply(ctx: &egui::Context, theme: ThemeChoice) {
    let mut visuals = match theme {
        ThemeChoice::Dark => egui::Visuals::dark(),
        ThemeChoice::Light => egui::Visuals::light(),
    };
    visuals.selection.bg_fill = match theme {
        ThemeChoice::Dark => ACCENT_DARK_BG,
        ThemeChoice::Light => Color32::from_rgb(0xc8, 0xdc, 0xfd),
    };
    visuals.selection.stroke = Stroke::new(1.0, ACCENT);
    visuals.hyperlink_color = ACCENT;
    match theme {
        ThemeChoice::Dark => {
            visuals.panel_fill = Color32::from_rgb(0x1e, 0x1f, 0x22);
            visuals.window_fill = Color32::from_rgb(0x26, 0x27, 0x2b);
            visuals.extreme_bg_color = Color32::from_rgb(0x15, 0x16, 0x18);
            visuals.faint_bg_color = Color32::from_rgb(0x2a, 0x2b, 0x30);
        }
        ThemeChoice::Light => {
            visuals.panel_fill = Color32::from_rgb(0xf7, 0xf7, 0xf8);
            visuals.window_fill = Color32::WHITE;
            visuals.extreme_bg_color = Color32::WHITE;
            visuals.faint_bg_color = Color32::from_rgb(0xee, 0xef, 0xf2);
        }
    }
    // egui's default body text is a mid grey; chat text wants more contrast.
    visuals.widgets.noninteractive.fg_stroke.color = match theme {
        ThemeChoice::Dark => Color32::from_gray(218),
        ThemeChoice::Light => Color32::from_gray(28),
    };
    visuals.window_corner_radius = CornerRadius::same(10);
    visuals.widgets.noninteractive.corner_radius = CornerRadius::same(6);
    visuals.widgets.inactive.corner_radius = CornerRadius::same(6);
    visuals.widgets.hovered.corner_radius = CornerRadius::same(6);
    visuals.widgets.active.corner_radius = CornerRadius::same(6);
    ctx.set_visuals(visuals);

    ctx.global_style_mut(|style| {
        style.text_styles = [
            (TextStyle::Heading, FontId::proportional(20.0)),
            (TextStyle::Body, FontId::proportional(14.5)),
            (TextStyle::Monospace, FontId::monospace(13.5)),
            (TextStyle::Button, FontId::proportional(14.0)),
            (TextStyle::Small, FontId::proportional(11.5)),
        ]
        .into();
        style.spacing.item_spacing = egui::vec2(8.0, 6.0);
        style.spacing.button_padding = egui::vec2(10.0, 5.0);
        style.spacing.interact_size.y = 26.0;
    });
}

pub fn is_dark(ui: &egui::Ui) -> bool {
    ui.visuals().dark_mode
}

/// Background of the user's message bubbles.
pub fn user_bubble_fill(ui: &egui::Ui) -> Color32 {
    if is_dark(ui) {
        Color32::from_rgb(0x2b, 0x3a, 0x55)
    } else {
        Color32::from_rgb(0xe3, 0xed, 0xfd)
    }
}

/// Background of the model's message cards.
pub fn assistant_fill(ui: &egui::Ui) -> Color32 {
    if is_dark(ui) {
        Color32::from_rgb(0x26, 0x27, 0x2b)
    } else {
        Color32::WHITE
    }
}

pub fn border(ui: &egui::Ui) -> Stroke {
    if is_dark(ui) {
        Stroke::new(1.0, Color32::from_rgb(0x3a, 0x3c, 0x42))
    } else {
        Stroke::new(1.0, Color32::from_rgb(0xdd, 0xdf, 0xe4))
    }
}

pub fn error_color(ui: &egui::Ui) -> Color32 {
    if is_dark(ui) {
        Color32::from_rgb(0xff, 0x8a, 0x80)
    } else {
        Color32::from_rgb(0xb0, 0x26, 0x1c)
    }
}

pub fn success_color(ui: &egui::Ui) -> Color32 {
    if is_dark(ui) {
        Color32::from_rgb(0x7e, 0xd3, 0x8f)
    } else {
        Color32::from_rgb(0x1e, 0x7b, 0x34)
    }
}

/// A card with a border, used for the model box, the first-run panel and messages.
pub fn card(ui: &egui::Ui) -> egui::Frame {
    egui::Frame::new()
        .fill(assistant_fill(ui))
        .stroke(border(ui))
        .corner_radius(CornerRadius::same(10))
        .inner_margin(Margin::same(12))
}

pub fn error_box(ui: &mut egui::Ui, message: &str) {
    let color = error_color(ui);
    egui::Frame::new()
        .stroke(Stroke::new(1.0, color))
        .corner_radius(CornerRadius::same(6))
        .inner_margin(Margin::symmetric(10, 6))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.colored_label(color, message);
        });
}

pub fn step_heading(ui: &mut egui::Ui, n: usize, title: &str) -> egui::Response {
    ui.add_space(4.0);
    ui.label(RichText::new(format!("{n}. {title}")).strong().size(15.5))
}

pub fn primary_button(text: &str) -> egui::Button<'static> {
    egui::Button::new(
        RichText::new(text.to_owned())
            .color(Color32::WHITE)
            .strong(),
    )
    .fill(ACCENT)
    .min_size(egui::vec2(84.0, 30.0))
}

/// A red button for a destructive action (e.g. confirming Delete).
pub fn danger_button(text: &str) -> egui::Button<'static> {
    egui::Button::new(
        RichText::new(text.to_owned())
            .color(Color32::WHITE)
            .strong(),
    )
    .fill(Color32::from_rgb(0xc6, 0x28, 0x28))
    .min_size(egui::vec2(84.0, 30.0))
}

pub fn section_label(ui: &mut egui::Ui, text: &str) {
    ui.label(RichText::new(text.to_uppercase()).small().strong().weak());
}
