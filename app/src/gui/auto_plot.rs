//! The wizard's "Smallest model that keeps quality" option: the KL target picker, and a size vs
//! KL plot of every point the auto conversion measured (read back from the written file's
//! header), drawn with the egui painter (no plotting dependency).

use super::text::human_bytes;
use cellm_convert::quant::auto::PlotPoint;
use std::path::Path;

/// KL target presets: (value, words).
pub const PRESETS: [(f64, &str); 3] = [
    (0.005, "very close to the original"),
    (0.01, "close (recommended)"),
    (0.05, "smaller, some drift"),
];

/// Profile string the conversion job understands: `auto:<target>`.
pub fn job_profile(target: f64) -> String {
    format!("auto:{target}")
}

/// Preset buttons plus a log-scale slider for the KL target.
pub fn target_picker(ui: &mut egui::Ui, target: &mut f64) {
    ui.horizontal(|ui| {
        ui.weak("KL target");
        for (v, words) in PRESETS {
            if ui
                .selectable_label((*target - v).abs() < 1e-12, format!("{v}"))
                .on_hover_text(words)
                .clicked()
            {
                *target = v;
            }
        }
        ui.add(
            egui::Slider::new(target, 0.001..=0.2)
                .logarithmic(true)
                .max_decimals(4),
        );
    });
    ui.weak(
        "Measures every layer's tensors at int8 and int4 on a calibration text, then keeps the \
         smallest mix whose KL to the original stays under the target (a few minutes).",
    );
}

/// What the auto conversion measured, from a written file's header.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoResult {
    pub target: f64,
    /// KL of the written file (full vocabulary).
    pub kl: f64,
    pub file_bytes: u64,
    /// Bytes of its tensors (what the plot's points count; the file adds its header).
    pub tensor_bytes: u64,
    pub points: Vec<PlotPoint>,
    /// e.g. "111 int8, 16 int4".
    pub mix: String,
}

/// Reads `fidelity.auto` of a `.cellm` file (None for files of other profiles).
pub fn read_result(path: &Path) -> Option<AutoResult> {
    let file = cellm_engine::format::CellmFile::open(path).ok()?;
    let fid = file.header().fidelity.as_ref()?;
    let auto = fid.get("auto")?;
    let points: Vec<PlotPoint> = serde_json::from_value(auto.get("points")?.clone()).ok()?;
    let mix = auto
        .get("mix")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Some(AutoResult {
        target: auto.get("target_kl")?.as_f64()?,
        kl: fid.get("kl_mean")?.as_f64()?,
        file_bytes: file.file_len(),
        tensor_bytes: file.file_len().saturating_sub(file.data_offset()),
        points,
        mix,
    })
}

/// Size (y) against KL (x, log scale) of every measured point; the written file is the ringed
/// point, the target a dashed vertical line.
pub fn size_kl_plot(ui: &mut egui::Ui, r: &AutoResult) {
    ui.label(format!(
        "Chose {}: {} at KL {:.2e} (target {}).",
        r.mix,
        human_bytes(r.file_bytes),
        r.kl,
        r.target
    ));
    let (rect, _) = ui.allocate_exact_size(
        egui::vec2(ui.available_width(), 190.0),
        egui::Sense::hover(),
    );
    let painter = ui.painter_at(rect);
    let visuals = ui.visuals();
    let text = visuals.text_color();
    let weak = visuals.weak_text_color();
    let grid = visuals.widgets.noninteractive.bg_stroke.color;
    let font = egui::FontId::proportional(11.0);
    painter.rect_filled(rect, 4.0, visuals.extreme_bg_color);

    let plot = egui::Rect::from_min_max(
        rect.min + egui::vec2(70.0, 10.0),
        rect.max - egui::vec2(12.0, 30.0),
    );
    let kl_floor = 1e-6;
    let xs: Vec<f64> = r
        .points
        .iter()
        .map(|p| p.kl.max(kl_floor).log10())
        .chain([r.target.max(kl_floor).log10(), r.kl.max(kl_floor).log10()])
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max).ceil(),
    );
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let ys: Vec<f64> = r
        .points
        .iter()
        .map(|p| mib(p.bytes))
        .chain([mib(r.tensor_bytes)])
        .collect();
    let y1 = ys.iter().copied().fold(0.0, f64::max) * 1.08;
    let to_screen = |kl: f64, bytes: u64| {
        let x = (kl.max(kl_floor).log10() - x0) / (x1 - x0).max(1e-9);
        let y = mib(bytes) / y1.max(1e-9);
        egui::pos2(
            plot.left() + x as f32 * plot.width(),
            plot.bottom() - y as f32 * plot.height(),
        )
    };

    // Axes: decades of KL, four size lines.
    for d in (x0 as i32)..=(x1 as i32) {
        let x = to_screen(10f64.powi(d), 0).x;
        painter.line_segment(
            [egui::pos2(x, plot.top()), egui::pos2(x, plot.bottom())],
            egui::Stroke::new(1.0, grid),
        );
        painter.text(
            egui::pos2(x, plot.bottom() + 4.0),
            egui::Align2::CENTER_TOP,
            format!("1e{d}"),
            font.clone(),
            weak,
        );
    }
    for i in 0..=4 {
        let v = y1 * i as f64 / 4.0;
        let y = plot.bottom() - (i as f32 / 4.0) * plot.height();
        painter.line_segment(
            [egui::pos2(plot.left(), y), egui::pos2(plot.right(), y)],
            egui::Stroke::new(1.0, grid),
        );
        painter.text(
            egui::pos2(plot.left() - 6.0, y),
            egui::Align2::RIGHT_CENTER,
            human_bytes((v * (1u64 << 20) as f64) as u64),
            font.clone(),
            weak,
        );
    }
    painter.text(
        egui::pos2(plot.center().x, rect.bottom() - 2.0),
        egui::Align2::CENTER_BOTTOM,
        "KL to the original (calibration text, log scale)",
        font.clone(),
        weak,
    );

    // The target.
    let tx = to_screen(r.target, 0).x;
    painter.add(egui::Shape::dashed_line(
        &[egui::pos2(tx, plot.top()), egui::pos2(tx, plot.bottom())],
        egui::Stroke::new(1.5, egui::Color32::from_rgb(220, 120, 40)),
        6.0,
        4.0,
    ));
    painter.text(
        egui::pos2(tx + 4.0, plot.top() + 2.0),
        egui::Align2::LEFT_TOP,
        "target",
        font.clone(),
        egui::Color32::from_rgb(220, 120, 40),
    );

    // The auto mixes as a line (sorted by size), then every point.
    let accent = egui::Color32::from_rgb(70, 130, 220);
    let mut auto: Vec<&PlotPoint> = r.points.iter().filter(|p| p.auto).collect();
    auto.sort_by_key(|p| p.bytes);
    let line: Vec<egui::Pos2> = auto.iter().map(|p| to_screen(p.kl, p.bytes)).collect();
    if line.len() > 1 {
        painter.add(egui::Shape::line(line, egui::Stroke::new(1.5, accent)));
    }
    for p in &r.points {
        let at = to_screen(p.kl, p.bytes);
        if p.auto {
            painter.circle_filled(at, 3.5, accent);
        } else {
            painter.circle_filled(at, 4.5, text);
            // Labels near the right edge go to the left of their point.
            let (off, align) = if at.x > plot.right() - 80.0 {
                (egui::vec2(-6.0, -2.0), egui::Align2::RIGHT_BOTTOM)
            } else {
                (egui::vec2(6.0, -2.0), egui::Align2::LEFT_BOTTOM)
            };
            painter.text(at + off, align, &p.label, font.clone(), text);
        }
    }
    let chosen = to_screen(r.kl, r.tensor_bytes);
    painter.circle_stroke(
        chosen,
        7.0,
        egui::Stroke::new(2.0, egui::Color32::from_rgb(40, 170, 90)),
    );
    painter.text(
        chosen + egui::vec2(-9.0, 6.0),
        egui::Align2::RIGHT_TOP,
        "this file",
        font,
        egui::Color32::from_rgb(40, 170, 90),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_profile_round_trips() {
        let s = job_profile(0.01);
        assert_eq!(s, "auto:0.01");
        assert_eq!(
            s.strip_prefix("auto:").unwrap().parse::<f64>().unwrap(),
            0.01
        );
    }
}
