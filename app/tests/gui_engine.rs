//! The app on the real engine: convert the tiny Gemma 3 fixture, load it through the worker, send
//! a message and watch the reply stream in while frames keep coming.

use cellm_app::gui::app::{App, AppConfig, ModelState};
use cellm_app::gui::backend::EngineBackend;
use cellm_app::gui::settings::{AppSettings, ComputeBackend};
use cellm_convert::{ConvertOptions, Profile};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::Path;
use std::time::{Duration, Instant};

/// Steps frames until `done` holds; returns (frames drawn, slowest frame).
fn pump(h: &mut Harness<'_, App>, what: &str, done: impl Fn(&App) -> bool) -> (usize, Duration) {
    let start = Instant::now();
    let (mut frames, mut slowest) = (0, Duration::ZERO);
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        let t = Instant::now();
        h.step();
        slowest = slowest.max(t.elapsed());
        frames += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    h.step();
    (frames, slowest)
}

/// Converts `testdata/<fixture>` to f32 in `dir`, opens the app on the real engine with greedy
/// sampling and `max_new_tokens`, and loads the model (waiting for it).
fn app_with_fixture(dir: &Path, fixture: &str, max_new_tokens: usize) -> Harness<'static, App> {
    app_on(dir, fixture, max_new_tokens, ComputeBackend::Cpu)
}

/// [`app_with_fixture`] with the compute backend of Settings > Compute.
fn app_on(
    dir: &Path,
    fixture: &str,
    max_new_tokens: usize,
    backend: ComputeBackend,
) -> Harness<'static, App> {
    let model = dir.join(format!("{fixture}.cellm"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(fixture);
    let source = cellm_convert::open_source(&fixture).unwrap();
    cellm_convert::convert(
        source.as_ref(),
        &model,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    let mut settings = AppSettings::default();
    settings.sampling.temperature = 0.0;
    settings.max_new_tokens = max_new_tokens;
    settings.compute.backend = backend;
    let app = App::new(AppConfig {
        data_dir: dir.join("data"),
        settings,
        backend: Box::new(EngineBackend::default()),
        autoload: false,
    });
    // A random tiny model emits any bytes; draw what has no glyph as tofu instead of panicking.
    let mut h = Harness::builder()
        .with_size([1100.0, 720.0])
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut App| app.draw(ui), app);
    h.step();
    h.state_mut().load_model(model);
    pump(&mut h, "the model to load", |a| {
        !matches!(a.model, ModelState::Loading(_))
    });
    h
}

#[test]
fn gui_streams_a_reply_from_the_tiny_fixture_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_with_fixture(dir.path(), "tiny-gemma3", 24);
    match &h.state().model {
        ModelState::Loaded(m) => {
            assert_eq!(m.family, "gemma3");
            // The default Compute settings: the CPU, and what the engine reported for it.
            assert!(m.backend.starts_with("cpu · "), "{}", m.backend);
            assert_eq!(m.kv_cache, "f16");
        }
        other => panic!("the fixture did not load: {other:?}"),
    }

    let input = h.get_by_role(egui::accesskit::Role::MultilineTextInput);
    input.focus();
    input.type_text("Hello there");
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
    assert!(h.state().is_generating());
    let (frames, slowest) = pump(&mut h, "the reply", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    let reply = &chat.messages[1];
    assert_eq!(reply.error, None);
    let stats = reply.stats.clone().expect("stats after the reply");
    assert!(stats.generated_tokens > 0);
    assert!(frames > 0);
    // The UI thread never waits on the model.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest frame {slowest:?}"
    );
}

#[test]
fn gui_sends_an_image_and_a_recording_to_the_tiny_gemma4_model() {
    send_image_and_recording(ComputeBackend::Cpu);
}

/// The same on the GPU backend: the text stack and both towers run on the GPU (lavapipe in CI).
#[test]
fn gui_sends_media_to_the_tiny_gemma4_model_on_the_gpu() {
    if let Err(e) = cellm_engine::kernels::gpu::GpuContext::new() {
        return println!("SKIP: no GPU adapter ({e})");
    }
    let backend = send_image_and_recording(ComputeBackend::Gpu);
    assert!(backend.starts_with("gpu"), "{backend}");
}

/// Drops the fixture's image and recording on the tiny Gemma 4 and sends them; returns the
/// model card's backend line.
fn send_image_and_recording(compute: ComputeBackend) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_on(dir.path(), "tiny-gemma4", 8, compute);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-gemma4");
    match &h.state().model {
        ModelState::Loaded(m) => assert!(m.has_vision && m.has_audio, "{m:?}"),
        other => panic!("the fixture did not load: {other:?}"),
    }
    for f in ["tiny_image.png", "tiny_audio.wav"] {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(fixture.join(f))));
    }
    h.step();
    h.step();
    h.get_by_label("Send").click();
    h.step();
    h.step();
    pump(&mut h, "the reply", |a| !a.is_generating());
    let chat = h.state().active_chat().unwrap().clone();
    assert_eq!(chat.messages[0].attachments.len(), 2);
    assert_eq!(chat.messages[1].error, None);
    assert!(chat.messages[1].stats.as_ref().unwrap().generated_tokens > 0);
    match &h.state().model {
        ModelState::Loaded(m) => m.backend.clone(),
        other => panic!("the model is gone: {other:?}"),
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
