//! Gemma 4 from llama.cpp's GGUF pair against the same weights from the Hugging Face folder: the
//! fixtures in testdata/gguf-gemma4 are llama.cpp's conversion of testdata/tiny-gemma4
//! (testdata/make_gguf4_fixtures.py). Converted at f32 both ways, the two .cellm files must give
//! the same image and audio soft tokens and the same logits (f32 KV cache, KL < 1e-6), and the
//! `cellm convert --mmproj` command line must build the same file.

mod parity;

use cellm_convert::{ConvertOptions, Profile, convert};
use cellm_encoders::MediaEncoders;
use cellm_engine::kv_cache::KvPrecision;
use cellm_engine::session::{MediaEmbedding, Session, SessionOptions};
use parity::*;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE_BUDGET: usize = 70;

fn session(path: &Path) -> Session {
    Session::load(
        path,
        SessionOptions {
            threads: Some(2),
            kv_precision: KvPrecision::F32,
            ..Default::default()
        },
    )
    .unwrap()
}

fn gguf(name: &str) -> PathBuf {
    testdata("gguf-gemma4").join(name)
}

fn convert_with(model: &Path, mmproj: Option<&Path>, out: PathBuf) -> PathBuf {
    let source = cellm_convert::open_source_with_mmproj(model, mmproj).unwrap();
    convert(
        &*source,
        &out,
        &ConvertOptions::new(Profile::F32),
        &mut |_| {},
    )
    .unwrap();
    out
}

/// Image and audio soft tokens from the fixture's media files, through the file's own towers.
fn media(s: &Session) -> Vec<MediaEmbedding> {
    let enc = MediaEncoders::load(s.file()).unwrap();
    let dir = testdata("tiny-gemma4");
    let image = enc
        .encode_image_with_budget(&dir.join("tiny_image.png"), IMAGE_BUDGET)
        .unwrap();
    let mut audio = enc.encode_audio(&dir.join("tiny_audio.wav")).unwrap();
    vec![image, audio.remove(0)]
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, &x| m.max(x.abs())).max(1e-30) as f64;
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).abs() / scale)
        .fold(0.0, f64::max)
}

struct Reference(Vec<u8>);

impl Reference {
    fn load() -> Self {
        Self::of("tiny-gemma4")
    }
    fn of(fixture: &str) -> Self {
        Self(std::fs::read(testdata(fixture).join("reference.safetensors")).unwrap())
    }
    fn ids(&self, name: &str) -> Vec<u32> {
        ids(&SafeTensors::deserialize(&self.0).unwrap(), name)
    }
    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        floats(&SafeTensors::deserialize(&self.0).unwrap(), name)
    }
}

/// One HF fixture folder and llama.cpp's F32 GGUF of it (its mmproj found next to it), converted
/// at f32 both ways: the same soft tokens, the same logits, and the GGUF path against transformers.
fn pair_matches_hf(fixture: &str, model_gguf: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let from_hf = convert_to(&testdata(fixture), Profile::F32, tmp.path());
    // The mmproj is found next to the model (same folder, "mmproj" in its name).
    let from_gguf = convert_with(model_gguf, None, tmp.path().join("gguf.cellm"));
    let (mut a, mut b) = (session(&from_hf), session(&from_gguf));
    let (ma, mb) = (media(&a), media(&b));
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x.tokens, y.tokens);
        let e = max_rel(&y.embeddings, &x.embeddings);
        println!(
            "{fixture} {:?} soft tokens: GGUF vs HF max rel diff {e:.3e}",
            x.kind
        );
        assert!(e < 1e-5, "{fixture} {:?}: {e}", x.kind);
    }
    let r = Reference::of(fixture);
    let vocab = 512;
    for (label, ids, media_a, media_b) in [
        ("text", r.ids("input_ids"), vec![], vec![]),
        ("image + audio", r.ids("mm_input_ids"), ma, mb),
    ] {
        let la = a.logits_for(&ids, &media_a).unwrap();
        let lb = b.logits_for(&ids, &media_b).unwrap();
        let g = agreement_full(&la, &lb, vocab);
        println!(
            "{fixture} {label}: GGUF vs HF KL mean {:.3e} max {:.3e}, top-1 {:.1}%",
            g.kl_mean,
            g.kl_max,
            g.top1 * 100.0
        );
        assert!(g.kl_max < 1e-6, "{fixture} {label}: {g:?}");
        assert_eq!(g.top1, 1.0, "{fixture} {label}");
    }
    // And against transformers itself (its own soft tokens in the reference prompt).
    let (want, _) = r.f32s("logits");
    let got = b.logits_for(&r.ids("input_ids"), &[]).unwrap();
    let t = agreement_full(&want, &got, vocab);
    println!(
        "{fixture} GGUF path vs transformers (text): KL mean {:.3e} max {:.3e}",
        t.kl_mean, t.kl_max
    );
    assert!(t.kl_mean < 1e-6 && t.kl_max < 1e-3, "{fixture}: {t:?}");
}

#[test]
fn gguf4_pair_matches_hf_logits_and_media() {
    pair_matches_hf("tiny-gemma4", &gguf("tiny-gemma4-f32.gguf"));
    // And against transformers with our towers' soft tokens from the media files.
    let tmp = tempfile::tempdir().unwrap();
    let from_gguf = convert_with(
        &gguf("tiny-gemma4-f32.gguf"),
        None,
        tmp.path().join("gguf.cellm"),
    );
    let mut b = session(&from_gguf);
    let r = Reference::load();
    let (want, _) = r.f32s("mm_logits");
    let got = b.logits_for(&r.ids("mm_input_ids"), &media(&b)).unwrap();
    let t = agreement_full(&want, &got, 512);
    println!(
        "GGUF path vs transformers: KL mean {:.3e} max {:.3e}",
        t.kl_mean, t.kl_max
    );
    assert!(t.kl_mean < 1e-4 && t.kl_max < 1e-3, "{t:?}");
}

/// The real E2B layer layout (35 layers, zero-padded `per_layer_config` keys, 20 KV-shared
/// layers, double-wide MLP) as transformers saved it and as llama.cpp converted it: both convert
/// and load, and agree.
#[test]
fn gguf4_e2b_layout_pair_matches_hf() {
    pair_matches_hf("e2b-layout", &gguf("e2b-layout/e2b-layout-f32.gguf"));
}

/// The quantized GGUFs through the dequantizers: printed, and bounded against what the converter's
/// own int8 / int4 profiles lose on the same (very sensitive: random weights, final-norm gain ~35)
/// tiny model.
#[test]
fn gguf4_quantized_text_close_to_hf() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = Reference::load().ids("input_ids");
    let logits = |p: &Path| session(p).logits_for(&ids, &[]).unwrap();
    let la = logits(&convert_to(
        &testdata("tiny-gemma4"),
        Profile::F32,
        tmp.path(),
    ));
    let kl = |lb: &[f32]| agreement_full(&la, lb, 512);
    let int8 = kl(&logits(&convert_to(
        &testdata("tiny-gemma4"),
        Profile::Int8,
        tmp.path(),
    )));
    let int4 = kl(&logits(&convert_to(
        &testdata("tiny-gemma4"),
        Profile::Int4,
        tmp.path(),
    )));
    println!(
        "HF -> int8: KL mean {:.3e}; HF -> int4: KL mean {:.3e}",
        int8.kl_mean, int4.kl_mean
    );
    for (file, bound) in [
        ("tiny-gemma4-q8_0.gguf", 3.0 * int8.kl_mean + 1e-3),
        ("tiny-gemma4-mixed.gguf", 3.0 * int4.kl_mean + 1e-3),
    ] {
        let out = convert_with(&gguf(file), None, tmp.path().join(format!("{file}.cellm")));
        let g = kl(&logits(&out));
        println!(
            "{file} (f32 profile): vs HF f32 KL mean {:.3e} max {:.3e}, top-1 {:.1}%",
            g.kl_mean,
            g.kl_max,
            g.top1 * 100.0
        );
        assert!(g.kl_mean < bound, "{file}: {g:?}, bound {bound}");
    }
}

fn cellm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellm"))
        .args(args)
        .output()
        .expect("run cellm");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "cellm {args:?} panicked:\n{err}");
    (out.status.success(), err)
}

#[test]
fn gguf4_cli_mmproj_flag() {
    let tmp = tempfile::tempdir().unwrap();
    // The model alone in a folder: text only unless --mmproj is given.
    let model = tmp.path().join("gemma4.gguf");
    std::fs::copy(gguf("tiny-gemma4-f32.gguf"), &model).unwrap();
    let mm = gguf("mmproj-tiny-gemma4-f32.gguf");
    let (m, o1, o2) = (
        model.to_str().unwrap(),
        tmp.path().join("text.cellm"),
        tmp.path().join("all.cellm"),
    );
    let (ok, err) = cellm(&[
        "convert",
        m,
        "-o",
        o1.to_str().unwrap(),
        "--profile",
        "int8",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("text-only"), "{err}");
    let s = session(&o1);
    assert!(MediaEncoders::load(s.file()).unwrap().vision.is_none());

    let (ok, err) = cellm(&[
        "convert",
        m,
        "--mmproj",
        mm.to_str().unwrap(),
        "-o",
        o2.to_str().unwrap(),
        "--profile",
        "int8",
    ]);
    assert!(ok, "{err}");
    let s = session(&o2);
    let enc = MediaEncoders::load(s.file()).unwrap();
    assert!(enc.vision.is_some() && enc.audio.is_some());

    // The mmproj as the model: one clear line, no output file.
    let o3 = tmp.path().join("bad.cellm");
    let (ok, err) = cellm(&["convert", mm.to_str().unwrap(), "-o", o3.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("--mmproj"), "{err}");
    assert!(!o3.exists());
}

/// The wizard's source check: a Gemma 4 .gguf with its mmproj next to it shows all three parts;
/// the mmproj itself gets one clear message.
#[test]
fn gguf4_wizard_finds_the_mmproj() {
    let facts = cellm_app::gui::convert_job::inspect(&gguf("tiny-gemma4-f32.gguf")).unwrap();
    assert_eq!(facts.family, "gemma4");
    assert_eq!(facts.towers, vec!["text", "vision", "audio"]);
    let e = cellm_app::gui::convert_job::inspect(&gguf("mmproj-tiny-gemma4-f32.gguf")).unwrap_err();
    assert!(e.contains("--mmproj") && !e.contains('\n'), "{e}");
}
