//! UI tests for pasting an image from the clipboard and the WAV chips' Play / Stop button.

use cellm_app::gui::app::{App, AppConfig};
use cellm_app::gui::backend::{Backend, GenerateOutcome, GenerateRequest, ModelSummary};
use cellm_app::gui::clipboard::{Clipboard, ClipboardSource, PastedImage};
use cellm_app::gui::model::AttachmentKind;
use cellm_app::gui::settings::AppSettings;
use cellm_engine::session::{CancelToken, SessionOptions};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// No model is needed for these tests.
struct NoModel;

impl Backend for NoModel {
    fn load(
        &mut self,
        _path: &Path,
        _options: &SessionOptions,
    ) -> Result<(ModelSummary, CancelToken), String> {
        Err("no model in this test".to_owned())
    }
    fn generate(
        &mut self,
        _request: &GenerateRequest,
        _on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutcome, String> {
        Err("no model in this test".to_owned())
    }
    fn unload(&mut self) {}
    fn supports_media(&self, _kind: AttachmentKind) -> bool {
        false
    }
}

/// A clipboard the test fills; counts reads.
#[derive(Clone)]
struct FakeClipboard(Arc<Mutex<(Result<Clipboard, String>, usize)>>);

impl FakeClipboard {
    fn new(content: Result<Clipboard, String>) -> Self {
        Self(Arc::new(Mutex::new((content, 0))))
    }
    fn reads(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

impl ClipboardSource for FakeClipboard {
    fn read(&mut self) -> Result<Clipboard, String> {
        let mut g = self.0.lock().unwrap();
        g.1 += 1;
        g.0.clone()
    }
}

fn red_square() -> PastedImage {
    PastedImage {
        width: 8,
        height: 8,
        rgba: [220u8, 30, 30, 255].repeat(64),
    }
}

fn harness<'a>(dir: &Path, clipboard: FakeClipboard) -> Harness<'a, App> {
    let mut app = App::new(AppConfig {
        data_dir: dir.to_path_buf(),
        settings: AppSettings::default(),
        backend: Box::new(NoModel),
        autoload: false,
    });
    app.set_clipboard(Box::new(clipboard));
    Harness::builder()
        .with_size([1100.0, 720.0])
        .build_ui_state(|ui, app: &mut App| app.draw(ui), app)
}

#[test]
fn gui_ctrl_v_pastes_an_image_as_an_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let clip = FakeClipboard::new(Ok(Clipboard::Image(red_square())));
    let mut h = harness(dir.path(), clip.clone());
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::V);
    h.step();
    h.step();
    assert_eq!(clip.reads(), 1);
    let atts = h.state().attachments().to_vec();
    assert_eq!(atts.len(), 1, "notices: {:?}", h.state().notices);
    assert_eq!(atts[0].kind, AttachmentKind::Image);
    // Saved as a PNG under the data dir's pasted/ folder, and it decodes to what was pasted.
    assert!(atts[0].path.starts_with(dir.path().join("pasted")));
    let back = image::open(&atts[0].path).unwrap().to_rgba8();
    assert_eq!(back.into_raw(), red_square().rgba);
    // The composer shows it (its thumbnail's hover names the file) and offers to send it.
    h.run_steps(3);
    assert!(h.state().notices.is_empty(), "{:?}", h.state().notices);
    assert!(h.query_by_label("Remove").is_some());

    // The Paste button does the same; a second paste is a second file.
    h.get_by_label("Paste").click();
    h.run_steps(2);
    let atts = h.state().attachments();
    assert_eq!(atts.len(), 2);
    assert_ne!(atts[0].path, atts[1].path);
}

#[test]
fn gui_paste_image_event_from_the_window_attaches_it() {
    // egui-winit reads the clipboard itself and sends an image paste as an event.
    let dir = tempfile::tempdir().unwrap();
    let clip = FakeClipboard::new(Ok(Clipboard::Empty));
    let mut h = harness(dir.path(), clip.clone());
    h.step();
    let img = egui::ColorImage::from_rgba_unmultiplied([8, 8], &red_square().rgba);
    h.event(egui::Event::PasteImage(Arc::new(img)));
    h.run_steps(2);
    assert_eq!(clip.reads(), 0);
    let atts = h.state().attachments();
    assert_eq!(atts.len(), 1);
    let back = image::open(&atts[0].path).unwrap().to_rgba8();
    assert_eq!(back.into_raw(), red_square().rgba);
}

#[test]
fn gui_text_paste_still_goes_to_the_composer() {
    let dir = tempfile::tempdir().unwrap();
    let clip = FakeClipboard::new(Ok(Clipboard::Text));
    let mut h = harness(dir.path(), clip.clone());
    h.step();
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .focus();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::V);
    h.event(egui::Event::Paste("hello from the clipboard".to_owned()));
    h.run_steps(2);
    assert_eq!(h.state().composer_text(), "hello from the clipboard");
    assert!(h.state().attachments().is_empty());
    assert!(h.state().notices.is_empty(), "{:?}", h.state().notices);
}

#[test]
fn gui_paste_without_an_image_or_clipboard_is_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), FakeClipboard::new(Ok(Clipboard::Empty)));
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::V);
    h.run_steps(2);
    assert!(h.state().attachments().is_empty());
    assert!(h.query_by_label_contains("no image").is_some());

    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(
        dir.path(),
        FakeClipboard::new(Err("The clipboard is not available: no display".to_owned())),
    );
    h.step();
    h.get_by_label("Paste").click();
    h.run_steps(2);
    assert!(h.state().attachments().is_empty());
    assert!(h.query_by_label_contains("not available").is_some());

    // Ctrl+V with text leaves it to the text box; the Paste button says why nothing came.
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), FakeClipboard::new(Ok(Clipboard::Text)));
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::V);
    h.run_steps(2);
    assert!(h.state().notices.is_empty());
    h.get_by_label("Paste").click();
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("holds text, not an image")
            .is_some()
    );
}

#[test]
fn gui_wav_chip_has_a_play_button() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path(), FakeClipboard::new(Ok(Clipboard::Empty)));
    h.step();
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/media/mono16k_pcm16.wav");
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(wav.clone())));
    h.run_steps(2);
    // The app's fonts draw the button's symbols (not as missing-glyph boxes).
    assert!(
        h.ctx
            .fonts_mut(|f| f.has_glyphs(&egui::FontId::proportional(12.0), "▶■"))
    );
    // Clicking Play either plays (a device is there: the button turns into Stop) or says
    // plainly that there is no output; never a panic.
    h.get_by_label_contains("Play").click();
    // Without a device, opening it fails within moments (a notice); with one, it keeps playing.
    let start = std::time::Instant::now();
    while h.state().notices.is_empty() && start.elapsed() < std::time::Duration::from_millis(600) {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let notices = h.state().notices.clone();
    if notices.is_empty() {
        assert!(h.state().playing().is_some());
        h.get_by_label_contains("■ Stop").click();
        h.run_steps(2);
        assert!(h.state().playing().is_none());
        assert!(h.query_by_label_contains("▶ Play").is_some());
        eprintln!("played on an output device, then stopped");
    } else {
        assert!(h.state().playing().is_none());
        assert!(
            notices
                .iter()
                .any(|n| n.contains("output") || n.contains("play")),
            "{notices:?}"
        );
        eprintln!("no audio output here: {notices:?}");
    }
}

#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}
