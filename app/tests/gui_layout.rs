//! Layout and feedback tests of the desktop app at small and large window sizes: no widget
//! overlaps another at 800x500, every Settings control can be scrolled to, the system fonts
//! cover mixed scripts, and the wizard closes after "Load this model" without spinning.

use cellm_app::gui::app::{App, AppConfig, ModelState};
use cellm_app::gui::backend::{Backend, GenerateOutcome, GenerateRequest, ModelSummary};
use cellm_app::gui::model::{AttachmentKind, ChatMessage};
use cellm_app::gui::settings::AppSettings;
use cellm_engine::session::{CancelToken, SessionOptions};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use std::path::Path;
use std::time::{Duration, Instant};

/// Answers every prompt with `reply`, or fails when the prompt says "fail".
struct Echo {
    reply: &'static str,
    cancel: CancelToken,
}

impl Backend for Echo {
    fn load(
        &mut self,
        path: &Path,
        _options: &SessionOptions,
    ) -> Result<(ModelSummary, CancelToken), String> {
        if path.to_string_lossy().contains("broken") {
            return Err("broken.cellm is truncated: tensor data".to_owned());
        }
        Ok((
            ModelSummary {
                path: path.to_path_buf(),
                family: "gemma4".into(),
                profile: "int8".into(),
                file_bytes: 3_000_000_000,
                parameters: 5_100_000_000,
                context_length: 4096,
                has_vision: true,
                has_audio: true,
                completion_mode: false,
                fidelity: None,
                backend: "gpu: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)".into(),
                kv_cache: "f16".into(),
            },
            self.cancel.clone(),
        ))
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutcome, String> {
        if request
            .messages
            .last()
            .is_some_and(|m| m.text.contains("fail"))
        {
            return Err("the model ran out of memory".to_owned());
        }
        on_text(self.reply);
        Ok(GenerateOutcome {
            prompt_tokens: 30,
            generated_tokens: 12,
            decode_tok_s: 20.0,
            prompt_tok_s: 300.0,
            stop_reason: "end of turn".into(),
            ..GenerateOutcome::default()
        })
    }

    fn unload(&mut self) {}

    fn supports_media(&self, _kind: AttachmentKind) -> bool {
        true
    }
}

fn app(dir: &Path, reply: &'static str) -> App {
    let mut settings = AppSettings::default();
    settings.compute.backend = cellm_app::gui::settings::ComputeBackend::Gpu;
    App::new(AppConfig {
        data_dir: dir.to_path_buf(),
        settings,
        backend: Box::new(Echo {
            reply,
            cancel: CancelToken::new(),
        }),
        autoload: false,
    })
}

fn harness<'a>(app: App, size: [f32; 2]) -> Harness<'a, App> {
    Harness::builder()
        .with_size(size)
        .build_ui_state(|ui, app: &mut App| app.draw(ui), app)
}

fn pump(h: &mut Harness<'_, App>, what: &str, done: impl Fn(&App) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
    h.step();
}

fn load(h: &mut Harness<'_, App>, path: &str) {
    h.state_mut().load_model(path.into());
    pump(h, "the load", |a| {
        !matches!(a.model, ModelState::Loading(_))
    });
}

/// Sends `text` through the composer and waits for the reply.
fn send(h: &mut Harness<'_, App>, text: &str) {
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text(text);
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    pump(h, "the reply", |a| !a.is_generating());
}

const INTERACTIVE: [Role; 8] = [
    Role::Button,
    Role::TextInput,
    Role::MultilineTextInput,
    Role::CheckBox,
    Role::RadioButton,
    Role::Slider,
    Role::ComboBox,
    Role::SpinButton,
];

/// Every pair of interactive widgets whose rectangles overlap (more than a pixel's sliver), and
/// every one that reaches past the window's edge.
fn layout_problems(h: &Harness<'_, App>, size: [f32; 2]) -> Vec<String> {
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, size.into());
    let nodes: Vec<(String, egui::Rect)> = INTERACTIVE
        .iter()
        .flat_map(|role| h.query_all_by_role(*role))
        .map(|n| {
            let name = n.accesskit_node().label().unwrap_or_default();
            (
                format!("{:?} {name:?}", n.accesskit_node().role()),
                n.rect(),
            )
        })
        .collect();
    let mut problems = Vec::new();
    for (i, (a, ra)) in nodes.iter().enumerate() {
        if !screen.expand(0.5).contains_rect(*ra) {
            problems.push(format!("{a} at {ra:?} is outside the {size:?} window"));
        }
        for (b, rb) in &nodes[i + 1..] {
            let overlap = ra.intersect(*rb);
            if overlap.is_positive() && overlap.width() > 1.0 && overlap.height() > 1.0 {
                problems.push(format!("{a} at {ra:?} overlaps {b} at {rb:?}"));
            }
        }
    }
    problems
}

#[test]
fn gui_layout_800x500_has_no_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let size = [800.0, 500.0];
    let mut h = harness(app(dir.path(), "A short answer."), size);
    h.step();
    load(&mut h, "gemma-4-e2b-int8.cellm");
    send(&mut h, "Hello there");
    // A long notice wraps inside the column instead of pushing Dismiss off the window.
    h.state_mut().notice(
        "A very long notice that goes on and on about something that went wrong, with a long \
         path /home/someone/models/gemma-3-270m-it-with-a-long-name/model.safetensors in it."
            .to_owned(),
    );
    // The sidebar shows at this width (the toggle hides it); both layouts are checked.
    for shown in [true, false] {
        h.state_mut().set_sidebar_shown(shown);
        for _ in 0..4 {
            h.step();
        }
        let problems = layout_problems(&h, size);
        assert!(
            problems.is_empty(),
            "sidebar {shown}: {}",
            problems.join("\n")
        );
    }
    // The pieces of the composer and the reply's actions are all there.
    for label in ["Send", "Copy", "Regenerate", "Dismiss", "Mic", "Paste"] {
        assert!(
            h.query_all_by_label(label).count() > 0,
            "{label} is missing"
        );
    }
}

#[test]
fn gui_layout_large_window_has_no_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    for size in [[1400.0, 900.0], [2560.0, 1440.0]] {
        let mut h = harness(app(dir.path(), "Fine."), size);
        h.step();
        load(&mut h, "gemma-4-e2b-int8.cellm");
        send(&mut h, "Hello");
        let problems = layout_problems(&h, size);
        assert!(problems.is_empty(), "{size:?}: {}", problems.join("\n"));
    }
}

#[test]
fn gui_every_settings_control_is_reachable_at_800x500() {
    let dir = tempfile::tempdir().unwrap();
    let size = [800.0, 500.0];
    let mut h = harness(app(dir.path(), "ok"), size);
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Comma);
    for _ in 0..3 {
        h.step();
    }
    assert!(h.state().settings_open);
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, size.into());
    for label in [
        "Temperature",
        "Max new tokens",
        "Seed",
        "Reset to defaults",
        "CPU",
        "GPU",
        "Threads",
        "KV cache",
        "Dark",
        "Light",
        "Refresh",
    ] {
        h.get_by_label(label).scroll_to_me();
        h.step();
        h.step();
        let r = h.get_by_label(label).rect();
        assert!(
            screen.contains_rect(r),
            "{label} at {r:?} cannot be brought into the {size:?} window"
        );
    }
    // Esc closes it.
    h.key_press(egui::Key::Escape);
    h.step();
    assert!(!h.state().settings_open);
}

#[test]
fn gui_mixed_scripts_have_glyphs() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), "ok"), [800.0, 500.0]);
    // The first frame installs the fonts; the provider is asked from the next one on.
    h.step();
    h.step();
    let text = cellm_app::gui::theme::MIXED_SCRIPTS;
    let missing: Vec<char> = h.ctx.fonts_mut(|f| {
        text.chars()
            .filter(|c| !c.is_whitespace())
            .filter(|c| !f.has_glyph(&egui::FontId::proportional(14.5), *c))
            .collect()
    });
    assert!(
        missing.is_empty(),
        "no font has {missing:?}: install fonts-noto-cjk, fonts-noto-color-emoji and \
         fonts-noto-core (see .ci/run)"
    );
    // Drawn as a message (kittest panics on a glyph it cannot draw), and no fonts notice.
    h.state_mut().new_chat();
    if let Some(chat) = h.state_mut().chats.first_mut() {
        chat.messages.push(ChatMessage::user(text, Vec::new()));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.get_by_label(text);
    assert!(
        h.query_by_label_contains("No system font").is_none(),
        "the missing-fonts notice shows although fonts were found"
    );
}

#[test]
fn gui_feedback_versions_failed_regenerate_and_failed_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), "First answer."), [1100.0, 720.0]);
    h.step();
    // Send before a load: a notice, shown once however often Send is pressed, gone after a load.
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text("too early");
    h.step();
    for _ in 0..2 {
        h.key_press(egui::Key::Enter);
        h.step();
    }
    assert_eq!(
        h.query_all_by_label_contains("No model is loaded").count(),
        1
    );
    load(&mut h, "gemma-4-e2b-int8.cellm");
    assert_eq!(
        h.query_all_by_label_contains("No model is loaded").count(),
        0
    );
    // An explicit GPU choice that got a software adapter says so.
    assert!(h.query_all_by_label_contains("software renderer").count() > 0);
    assert!(h.query_all_by_label_contains("software GPU").count() > 0);
    // The draft typed before the load is still there: send it.
    h.get_by_role(Role::MultilineTextInput).focus();
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    pump(&mut h, "the first reply", |a| !a.is_generating());
    assert_eq!(
        h.state().active_chat().unwrap().messages[0].text,
        "too early"
    );
    // The stats line: speeds, time to first token, stop reason.
    assert!(h.query_all_by_label_contains("prompt 300 tok/s").count() > 0);
    assert!(h.query_all_by_label_contains("first token").count() > 0);
    assert!(h.query_all_by_label_contains("end of turn").count() > 0);
    // Copy says so (the reply's Copy: the last one).
    h.query_all_by_label("Copy")
        .last()
        .expect("the reply's Copy")
        .click();
    h.step();
    h.step();
    assert!(h.query_all_by_label_contains("Copied").count() > 0);

    // A failed load keeps the model that works, with plain advice.
    load(&mut h, "broken.cellm");
    assert!(
        matches!(&h.state().model, ModelState::Loaded(m) if m.file_name() == "gemma-4-e2b-int8.cellm")
    );
    assert!(
        h.query_all_by_label_contains("download or convert it again")
            .count()
            > 0
    );
    assert!(h.query_all_by_label_contains("Still using").count() > 0);
}

#[test]
fn gui_regenerate_failure_keeps_the_old_reply() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), "Kept."), [1100.0, 720.0]);
    h.step();
    load(&mut h, "gemma-4-e2b-int8.cellm");
    send(&mut h, "question");
    // Make the next attempt fail by editing the stored question the way a bad turn would.
    if let Some(chat) = h.state_mut().chats.first_mut() {
        chat.messages[0].text = "fail now".to_owned();
    }
    h.get_by_label("Regenerate").click();
    h.step();
    pump(&mut h, "the failed regenerate", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    assert_eq!(chat.messages.len(), 2);
    assert_eq!(chat.messages[1].text, "Kept.");
    assert!(chat.messages[1].error.is_none());
    assert!(
        h.query_all_by_label_contains("previous reply is kept")
            .count()
            > 0
    );
}

#[test]
fn gui_drafts_stay_with_their_chat() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), "ok"), [1100.0, 720.0]);
    h.step();
    let first = h.state_mut().new_chat();
    h.step();
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text("draft for the first chat");
    h.step();
    let second = h.state_mut().new_chat();
    h.step();
    h.step();
    assert_eq!(
        h.get_by_role(Role::MultilineTextInput).value().as_deref(),
        Some("")
    );
    h.state_mut().select_chat(Some(first));
    h.step();
    h.step();
    assert_eq!(
        h.get_by_role(Role::MultilineTextInput).value().as_deref(),
        Some("draft for the first chat")
    );
    h.state_mut().select_chat(Some(second));
    h.step();
    assert_eq!(
        h.get_by_role(Role::MultilineTextInput).value().as_deref(),
        Some("")
    );
}

#[test]
fn gui_wizard_fits_760_wide() {
    let dir = tempfile::tempdir().unwrap();
    let size = [760.0, 520.0];
    let mut h = harness(app(dir.path(), "ok"), size);
    h.step();
    h.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::O,
    );
    h.step();
    h.step();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/tiny-gemma3.gguf");
    h.query_all_by_role(Role::TextInput)
        .find(|n| n.is_focused())
        .expect("the focused source field")
        .type_text(source.to_str().unwrap());
    h.step();
    h.get_by_label("Read").click();
    let start = Instant::now();
    while h.query_by_label("Convert").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no Convert button"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
    h.step();
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, size.into());
    // Convert is in view without scrolling, and no size estimate runs under the scroll bar.
    let convert = h.get_by_label("Convert").rect();
    assert!(screen.contains_rect(convert), "Convert at {convert:?}");
    let wizard_right = h
        .query_all_by_role(Role::TextInput)
        .map(|n| n.rect().right())
        .fold(0.0_f32, f32::max);
    for n in h.query_all_by_label_contains("≈") {
        let r = n.rect();
        // (rows below the fold scroll; only the width matters here)
        assert!(r.right() <= size[0], "estimate at {r:?}");
        assert!(
            r.right() <= wizard_right + 120.0,
            "estimate at {r:?} sticks out of the form"
        );
    }
    // Esc closes it (nothing is converting).
    h.key_press(egui::Key::Escape);
    h.step();
    assert!(!h.state().wizard_open());
}
