//! The real-layout fixtures (testdata/make_layout_fixtures.py, saved by transformers 5 with
//! zero-padded `per_layer_config` keys): `e2b-layout` (the Gemma 4 E2B layer layout at toy
//! widths) and `mixed-layout` (12 layers, another layer-type pattern), each end to end: the
//! `cellm convert` binary, the converter library at f32, the image and audio files through our
//! towers, CPU and GPU logits against transformers, and `cellm run --image --audio`.

mod parity;

use cellm_convert::Profile;
use cellm_encoders::MediaEncoders;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::session::{Backend, MediaEmbedding, MediaKind, Session, SessionOptions};
use parity::*;
use safetensors::SafeTensors;
use std::path::Path;
use std::process::Command;

const LAYOUTS: [&str; 2] = ["e2b-layout", "mixed-layout"];
/// The image budget the reference prompt was laid out with (as in tiny-gemma4).
const IMAGE_BUDGET: usize = 70;

fn cellm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(args)
        .output()
        .expect("run cellm");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked"),
        "cellm {args:?} panicked:\n{stderr}"
    );
    (out.status.success(), stdout, stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn session(path: &Path, backend: Backend) -> Session {
    Session::load(
        path,
        SessionOptions {
            threads: Some(2),
            kv_precision: KvPrecision::F32,
            backend,
            ..Default::default()
        },
    )
    .unwrap()
}

fn embedding(st: &SafeTensors<'_>, name: &str, kind: MediaKind) -> MediaEmbedding {
    let (embeddings, shape) = floats(st, name);
    MediaEmbedding {
        kind,
        embeddings,
        tokens: shape[0],
    }
}

/// Logits of `ids_name` with `media` merged against `logits_name`.
fn agreement(
    s: &mut Session,
    st: &SafeTensors<'_>,
    ids_name: &str,
    logits_name: &str,
    media: &[MediaEmbedding],
) -> Agreement {
    let (want, shape) = floats(st, logits_name);
    let got = s.logits_for(&ids(st, ids_name), media).unwrap();
    agreement_full(&want, &got, shape[1])
}

/// `cellm convert DIR -o x.cellm` on the folder transformers saved: exits 0 and the file loads
/// and answers (the user-visible bug: zero-padded `per_layer_config` keys were not read).
#[test]
fn cli_converts_transformers_saved_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    for name in LAYOUTS {
        let out = tmp.path().join(format!("{name}.cellm"));
        let dir = testdata(name);
        let (ok, stdout, err) = cellm(&["convert", s(&dir), "-o", s(&out), "--profile", "int4"]);
        assert!(ok, "{name}: {err}");
        assert!(stdout.contains("wrote"), "{stdout}");
        let (ok, out_text, err) = cellm(&[
            "run",
            "-m",
            s(&out),
            "-p",
            "Hello",
            "-n",
            "4",
            "--threads",
            "2",
        ]);
        assert!(ok, "{name}: {err}");
        assert!(
            !out_text.trim().is_empty(),
            "{name}: no output; stderr:\n{err}"
        );
    }
}

/// f32 conversion, CPU and GPU (lavapipe in CI), against transformers: the text prompt and the
/// multimodal prompt with transformers' soft tokens at mean KL < 1e-6; the same prompt with the soft
/// tokens our towers make from the image and audio files within the bounds of tiny-gemma4's
/// from-files test (preprocessing differs slightly).
#[test]
fn f32_parity_cpu_and_gpu_with_media_files() {
    let gpu_ok = cellm_engine::kernels::gpu::GpuContext::new()
        .map_err(|e| println!("SKIP the GPU half: {e}"))
        .is_ok();
    let tmp = tempfile::tempdir().unwrap();
    let media = testdata("tiny-gemma4");
    for name in LAYOUTS {
        let dir = testdata(name);
        let out_dir = tmp.path().join(name);
        std::fs::create_dir(&out_dir).unwrap();
        let path = convert_to(&dir, Profile::F32, &out_dir);
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let reference_media = [
            embedding(&st, "vision_embedded", MediaKind::Image),
            embedding(&st, "audio_embedded", MediaKind::Audio),
        ];
        let mut backends = vec![Backend::Cpu];
        if gpu_ok {
            backends.push(Backend::Gpu);
        }
        for backend in backends {
            let mut sess = session(&path, backend);
            let tag = format!("{name} on {}", sess.backend());
            let text = agreement(&mut sess, &st, "input_ids", "logits", &[]);
            let mm = agreement(
                &mut sess,
                &st,
                "mm_input_ids",
                "mm_logits",
                &reference_media,
            );
            println!(
                "{tag}: text KL mean {:.3e} max {:.3e}, image + audio (reference soft tokens) KL mean {:.3e} max {:.3e}",
                text.kl_mean, text.kl_max, mm.kl_mean, mm.kl_max
            );
            // Mean KL over positions < 1e-6 (the bound); no position above 1e-3.
            assert!(text.kl_mean < 1e-6, "{tag} text: {}", text.kl_mean);
            assert!(mm.kl_mean < 1e-6, "{tag} multimodal: {}", mm.kl_mean);
            assert!(
                text.kl_max < 1e-3 && mm.kl_max < 1e-3,
                "{tag}: {} {}",
                text.kl_max,
                mm.kl_max
            );

            let enc = MediaEncoders::load(sess.file()).unwrap();
            let image = enc
                .encode_image_with_budget(&media.join("tiny_image.png"), IMAGE_BUDGET)
                .unwrap();
            let mut audio = enc.encode_audio(&media.join("tiny_audio.wav")).unwrap();
            assert_eq!(audio.len(), 1);
            let files = agreement(
                &mut sess,
                &st,
                "mm_input_ids",
                "mm_logits",
                &[image, audio.remove(0)],
            );
            println!(
                "{tag}: image + audio from files KL mean {:.3e} max {:.3e}",
                files.kl_mean, files.kl_max
            );
            assert!(files.kl_mean < 1e-4, "{tag}: {}", files.kl_mean);
            assert!(files.kl_max < 1e-3, "{tag}: {}", files.kl_max);
        }
    }
}

/// `cellm run --image --audio` on both layouts (int4: the quantized towers and text stack).
#[test]
fn run_with_image_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let media = testdata("tiny-gemma4");
    let (img, wav) = (media.join("tiny_image.png"), media.join("tiny_audio.wav"));
    for name in LAYOUTS {
        let out_dir = tmp.path().join(name);
        std::fs::create_dir(&out_dir).unwrap();
        let model = convert_to(&testdata(name), Profile::Int4, &out_dir);
        let (ok, out, err) = cellm(&[
            "run",
            "-m",
            s(&model),
            "--image",
            s(&img),
            "--audio",
            s(&wav),
            "-p",
            "Look and listen.",
            "-n",
            "4",
            "--threads",
            "2",
        ]);
        assert!(ok, "{name}: {err}");
        assert!(!out.trim().is_empty(), "{name}: no output; stderr:\n{err}");
        assert!(err.contains("soft tokens"), "{err}");
    }
}

/// The wizard's source check (`convert_job::inspect`, run when a checkpoint is picked): a folder
/// transformers saved is read with its towers; the unsupported Gemma 4 variants (MoE,
/// `attention_k_eq_v`) are refused with a message naming the setting, before any conversion.
#[test]
fn wizard_reads_saved_folder_and_names_unsupported_variants() {
    use cellm_app::gui::convert_job::inspect;
    let facts = inspect(&testdata("mixed-layout")).unwrap();
    assert_eq!(facts.family, "gemma4");
    assert_eq!(facts.towers, ["text", "vision", "audio"]);

    for key in ["enable_moe_block", "attention_k_eq_v"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = testdata("mixed-layout");
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors",
        ] {
            std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
        config["text_config"][key] = serde_json::Value::Bool(true);
        std::fs::write(
            tmp.path().join("config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        let msg = inspect(tmp.path()).unwrap_err();
        println!("{key}: {msg}");
        assert!(msg.contains(key) && msg.contains("not supported"), "{msg}");
    }
}
