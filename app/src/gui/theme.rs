//! Colours, text sizes and small styled widgets shared by the panels.

use super::settings::ThemeChoice;
use egui::{Color32, CornerRadius, FontId, Margin, RichText, Stroke, TextStyle};

pub const ACCENT: Color32 = Color32::from_rgb(0x4c, 0x8d, 0xf6);
const ACCENT_DARK_BG: Color32 = Color32::from_rgb(0x2a, 0x4a, 0x7a);

/// Adds an icon font as a fallback so symbols such as the Markdown code blocks' copy icon (🗐)
/// and ✔ have glyphs (egui's default fonts lack them). The font ships in `assets/fonts/` (MIT).
pub fn install_fonts(ctx: &egui::Context) {
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

pub fn step_heading(ui: &mut egui::Ui, n: usize, title: &str) {
    ui.add_space(4.0);
    ui.label(RichText::new(format!("{n}. {title}")).strong().size(15.5));
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

pub fn section_label(ui: &mut egui::Ui, text: &str) {
    ui.label(RichText::new(text.to_uppercase()).small().strong().weak());
}
