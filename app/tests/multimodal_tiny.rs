//! The tiny Gemma 4 fixture end to end from media FILES: testdata/tiny-gemma4/tiny_image.png
//! through our preprocessing and vision tower, tiny_audio.wav through our WAV reader, log-mel
//! features and audio tower, merged into the converted model, against transformers' `mm_logits`
//! (testdata/README.md describes the prompt: 60 image tokens at budget 70, 25 audio tokens).
//! Also the `cellm run` / `cellm compare` binaries with `--image` / `--audio`.

mod parity;

use cellm_convert::Profile;
use cellm_encoders::MediaEncoders;
use cellm_encoders::vision::PreprocessedImage;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::session::{MediaEmbedding, MediaKind, Session, SessionOptions};
use parity::*;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image budget the reference prompt was laid out with.
const IMAGE_BUDGET: usize = 70;

fn session(path: &Path, kv: KvPrecision) -> Session {
    Session::load(
        path,
        SessionOptions {
            threads: Some(2),
            kv_precision: kv,
            ..Default::default()
        },
    )
    .unwrap()
}

fn media_file(name: &str) -> PathBuf {
    testdata("tiny-gemma4").join(name)
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let bytes = std::fs::read(testdata("tiny-gemma4/reference.safetensors")).unwrap();
        Self { bytes }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        floats(&self.st(), name)
    }
    fn ids(&self, name: &str) -> Vec<u32> {
        ids(&self.st(), name)
    }
    fn embedding(&self, name: &str, kind: MediaKind) -> MediaEmbedding {
        let (embeddings, shape) = self.f32s(name);
        MediaEmbedding {
            kind,
            embeddings,
            tokens: shape[0],
        }
    }
    /// The reference processor's output (`pixel_values`, `image_position_ids`).
    fn preprocessed_image(&self) -> PreprocessedImage {
        let (pixel_values, shape) = self.f32s("pixel_values");
        let st = self.st();
        let pos = st.tensor("image_position_ids").unwrap();
        let p: Vec<i64> = pos
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let positions: Vec<(i32, i32)> = p
            .chunks_exact(2)
            .map(|xy| (xy[0] as i32, xy[1] as i32))
            .collect();
        let num_patches = positions.iter().filter(|&&(x, _)| x >= 0).count();
        let (w, h) = positions
            .iter()
            .fold((0, 0), |(w, h), &(x, y)| (w.max(x + 1), h.max(y + 1)));
        PreprocessedImage {
            pixel_values,
            positions,
            num_patches,
            max_patches: shape[0],
            width: w as usize * 16,
            height: h as usize * 16,
        }
    }
}

/// Relative error ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += ((x - y) as f64).powi(2);
        n += (y as f64).powi(2);
    }
    (d / n.max(1e-30)).sqrt()
}

/// Image and audio soft tokens computed from the fixture's files.
fn from_files(s: &Session) -> (MediaEmbedding, MediaEmbedding) {
    let enc = MediaEncoders::load(s.file()).unwrap();
    let image = enc
        .encode_image_with_budget(&media_file("tiny_image.png"), IMAGE_BUDGET)
        .unwrap();
    let mut audio = enc.encode_audio(&media_file("tiny_audio.wav")).unwrap();
    assert_eq!(audio.len(), 1, "1 s of audio is one clip");
    (image, audio.remove(0))
}

/// Logits of `mm_input_ids` with `media` merged, against `mm_logits`.
fn mm_agreement(s: &mut Session, r: &Reference, media: &[MediaEmbedding]) -> Agreement {
    let input = r.ids("mm_input_ids");
    let (want, shape) = r.f32s("mm_logits");
    let got = s.logits_for(&input, media).unwrap();
    agreement_full(&want, &got, shape[1])
}

fn show(label: &str, a: &Agreement) {
    println!(
        "{label:<44} KL mean {:.3e} max {:.3e}, top-1 {:.1}%",
        a.kl_mean,
        a.kl_max,
        a.top1 * 100.0
    );
}

#[test]
fn multimodal_logits_from_files_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let path = convert_to(&testdata("tiny-gemma4"), Profile::F32, tmp.path());
    let r = Reference::load();
    let mut s = session(&path, KvPrecision::F32);
    let (image, audio) = from_files(&s);
    assert_eq!(image.tokens, 60);
    assert_eq!(audio.tokens, 25);

    // Soft tokens against transformers' (isolates the towers from the text stack).
    let (want_img, _) = r.f32s("vision_embedded");
    let (want_aud, _) = r.f32s("audio_embedded");
    let (ei, ea) = (
        rel_err(&image.embeddings, &want_img),
        rel_err(&audio.embeddings, &want_aud),
    );
    println!("soft tokens from files: image rel err {ei:.3e}, audio rel err {ea:.3e}");
    assert!(ei < 1e-3 && ea < 1e-3, "image {ei}, audio {ea}");

    // The image fed from the reference's pixel_values isolates our preprocessing.
    let ref_pixels = {
        let enc = MediaEncoders::load(s.file()).unwrap();
        let tower = enc.vision.as_ref().unwrap();
        MediaEmbedding {
            kind: MediaKind::Image,
            embeddings: tower.encode(&r.preprocessed_image()).unwrap(),
            tokens: 60,
        }
    };
    println!(
        "soft tokens from reference pixel_values: image rel err {:.3e}",
        rel_err(&ref_pixels.embeddings, &want_img)
    );

    let ref_img = r.embedding("vision_embedded", MediaKind::Image);
    let ref_aud = r.embedding("audio_embedded", MediaKind::Audio);
    let both = mm_agreement(&mut s, &r, &[image.clone(), audio.clone()]);
    let image_only = mm_agreement(&mut s, &r, &[image, ref_aud]);
    let audio_only = mm_agreement(&mut s, &r, &[ref_img.clone(), audio.clone()]);
    let pixels = mm_agreement(&mut s, &r, &[ref_pixels, audio]);
    show("f32, image + audio from files", &both);
    show("f32, image from file (ref audio tokens)", &image_only);
    show("f32, audio from file (ref image tokens)", &audio_only);
    show("f32, ref pixel_values + audio file", &pixels);
    for (name, a) in [
        ("image + audio", both),
        ("image only", image_only),
        ("audio only", audio_only),
        ("ref pixels", pixels),
    ] {
        assert!(a.kl_mean < 1e-4, "{name}: KL mean {}", a.kl_mean);
        assert!(a.kl_max < 1e-3, "{name}: KL max {}", a.kl_max);
    }
}

/// int8 / int4 towers and text stack (the converter quantizes all of them): printed, loosely
/// bounded only (the numbers go in the report).
#[test]
fn multimodal_logits_quantized() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Reference::load();
    for profile in [
        Profile::F16,
        Profile::BF16,
        Profile::Int8,
        Profile::Int4,
        Profile::MixedInt4,
    ] {
        let path = convert_to(&testdata("tiny-gemma4"), profile, tmp.path());
        let mut s = session(&path, KvPrecision::F16);
        let (image, audio) = from_files(&s);
        let (want_img, _) = r.f32s("vision_embedded");
        let (want_aud, _) = r.f32s("audio_embedded");
        let (ei, ea) = (
            rel_err(&image.embeddings, &want_img),
            rel_err(&audio.embeddings, &want_aud),
        );
        let a = mm_agreement(&mut s, &r, &[image, audio]);
        // The same model fed transformers' soft tokens: what the text stack alone loses.
        let text_only = mm_agreement(
            &mut s,
            &r,
            &[
                r.embedding("vision_embedded", MediaKind::Image),
                r.embedding("audio_embedded", MediaKind::Audio),
            ],
        );
        show(&format!("{}, image + audio from files", profile.name()), &a);
        show(
            &format!("{}, reference soft tokens", profile.name()),
            &text_only,
        );
        println!("    soft tokens rel err: image {ei:.3e}, audio {ea:.3e}");
        assert!(a.kl_mean.is_finite(), "{}", a.kl_mean);
        // Gates only where dtype_kl.json gives one (2x the rounded-weights reference).
        match profile {
            Profile::F16 => assert!(a.kl_mean < 2.0 * 1.58e-4, "f16: {}", a.kl_mean),
            Profile::BF16 => assert!(a.kl_mean < 2.0 * 5.28e-3, "bf16: {}", a.kl_mean),
            _ => {}
        }
    }
}

// ---- the binary ----

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

#[test]
fn run_with_image_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma4"), Profile::F32, tmp.path());
    let (img, wav) = (media_file("tiny_image.png"), media_file("tiny_audio.wav"));
    let m = s(&model);

    let (ok, out, err) = cellm(&[
        "run",
        "-m",
        m,
        "--image",
        s(&img),
        "--audio",
        s(&wav),
        "-p",
        "Look and listen.",
        "-n",
        "6",
        "--threads",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty(), "no output; stderr:\n{err}");
    assert!(err.contains("soft tokens"), "{err}");
    // Without -p the default prompts are used.
    let (ok, _, err) = cellm(&["run", "-m", m, "--image", s(&img), "-n", "3"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cellm(&["run", "-m", m, "--audio", s(&wav), "-n", "3"]);
    assert!(ok, "{err}");
    // Two images and a clip.
    let (ok, _, err) = cellm(&[
        "run",
        "-m",
        m,
        "--image",
        s(&img),
        "--image",
        s(&img),
        "--audio",
        s(&wav),
        "-n",
        "2",
    ]);
    assert!(ok, "{err}");
}

/// A mono 16-bit PCM WAV file's bytes.
fn pcm16_wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for x in samples {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

#[test]
fn run_media_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma4"), Profile::F32, tmp.path());
    let text_dir = tmp.path().join("text");
    std::fs::create_dir(&text_dir).unwrap();
    let text_model = convert_to(&testdata("tiny-gemma3"), Profile::F32, &text_dir);
    let (img, wav) = (media_file("tiny_image.png"), media_file("tiny_audio.wav"));
    let corrupt = tmp.path().join("corrupt.png");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.truncate(100);
    std::fs::write(&corrupt, &bytes).unwrap();
    let garbage_wav = tmp.path().join("garbage.wav");
    std::fs::write(&garbage_wav, b"RIFF not really a wav").unwrap();
    let empty_wav = tmp.path().join("empty.wav");
    std::fs::write(&empty_wav, pcm16_wav(&[], 16_000)).unwrap();
    let one_sample = tmp.path().join("one.wav");
    std::fs::write(&one_sample, pcm16_wav(&[1000], 16_000)).unwrap();
    let folder = tmp.path().to_str().unwrap();
    let m = s(&model);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-m", m, "--audio", s(&empty_wav), "-n", "2"],
            "no audio samples",
        ),
        (
            vec!["run", "-m", m, "--audio", s(&one_sample), "-n", "2"],
            "too short",
        ),
        (
            vec!["run", "-m", m, "--image", folder, "-n", "2"],
            "is a folder",
        ),
        (
            vec!["run", "-m", m, "--image", s(&corrupt), "-n", "2"],
            "not a readable image",
        ),
        (
            vec!["run", "-m", m, "--audio", s(&garbage_wav), "-n", "2"],
            "not a readable WAV",
        ),
        (
            vec!["run", "-m", m, "--image", "/no/such/photo.jpg", "-n", "2"],
            "cannot read the image file",
        ),
        (
            vec!["run", "-m", s(&text_model), "--image", s(&img), "-n", "2"],
            "this model has no vision tower",
        ),
        (
            vec!["run", "-m", s(&text_model), "--audio", s(&wav), "-n", "2"],
            "this model has no audio tower",
        ),
        (
            vec!["run", "-m", m, "--raw", "--image", s(&img), "-p", "x"],
            "media needs the chat template",
        ),
        (
            vec![
                "compare",
                "-m",
                s(&text_model),
                "--reference",
                s(&img),
                "--image",
                s(&img),
            ],
            "error",
        ),
    ];
    for (args, want) in cases {
        let (ok, _, err) = cellm(&args);
        assert!(!ok, "cellm {args:?} succeeded");
        assert!(
            err.contains(want),
            "cellm {args:?}: expected '{want}' in:\n{err}"
        );
    }
}

#[test]
fn compare_with_image_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let model = convert_to(&testdata("tiny-gemma4"), Profile::F32, tmp.path());
    let r = Reference::load();
    // A compare reference in the CLI's layout: mm_input_ids / mm_logits renamed.
    let st = r.st();
    let ids = st.tensor("mm_input_ids").unwrap();
    let logits = st.tensor("mm_logits").unwrap();
    let reference = tmp.path().join("mm_ref.safetensors");
    safetensors::serialize_to_file([("input_ids", ids), ("logits", logits)], None, &reference)
        .unwrap();
    let (img, wav) = (media_file("tiny_image.png"), media_file("tiny_audio.wav"));
    let (ok, out, err) = cellm(&[
        "compare",
        "-m",
        s(&model),
        "--reference",
        s(&reference),
        "--image",
        s(&img),
        "--audio",
        s(&wav),
        "--json",
        "--threads",
        "2",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    println!("cellm compare --image --audio: {v}");
    let kl = v["kl_mean"].as_f64().unwrap();
    assert!(kl < 1e-4, "KL {kl}");
    // Without the media the placeholders stay plain tokens: far off.
    let (ok, out, err) = cellm(&[
        "compare",
        "-m",
        s(&model),
        "--reference",
        s(&reference),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["kl_mean"].as_f64().unwrap() > 1e-3, "{v}");
}
