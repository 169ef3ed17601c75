//! The Gemma 4 GGUF source against the Hugging Face source of the same weights: the fixtures in
//! testdata/gguf-gemma4 are llama.cpp's conversion of testdata/tiny-gemma4
//! (testdata/make_gguf4_fixtures.py). Every tensor must come back under its Hugging Face name and
//! shape with the same values, and the rebuilt config must give the engine the same model.

use cellm_convert::open_source;
use cellm_convert::source::Source;
use cellm_convert::source::gguf::GgufSource;
use cellm_engine::tokenizer::Tokenizer;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(p)
}

fn hf() -> Box<dyn Source> {
    open_source(&testdata("tiny-gemma4")).unwrap()
}

fn gguf(name: &str) -> Box<dyn Source> {
    open_source(&testdata(&format!("gguf-gemma4/{name}"))).unwrap()
}

fn err(r: Result<Box<dyn Source>, cellm_convert::ConvertError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn names(s: &dyn Source) -> BTreeSet<String> {
    s.tensors().iter().map(|t| t.name.clone()).collect()
}

/// sqrt(sum (a-b)^2 / sum b^2)
fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut d, mut n) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += ((x - y) as f64).powi(2);
        n += (y as f64).powi(2);
    }
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn gguf4_f32_tensors_match_hf() {
    let (h, g) = (hf(), gguf("tiny-gemma4-f32.gguf"));
    assert_eq!(g.family(), "gemma4");
    assert_eq!(names(&*h), names(&*g), "same tensor names");
    for t in h.tensors() {
        let gt = g.tensors().iter().find(|x| x.name == t.name).unwrap();
        assert_eq!(t.shape, gt.shape, "{}", t.name);
        let (a, b) = (h.read_f32(&t.name).unwrap(), g.read_f32(&t.name).unwrap());
        if t.name.ends_with("per_dim_scale") {
            // stored as softplus(w) by llama.cpp, inverted here
            assert!(rel_rms(&b, &a) < 1e-6, "{}: {}", t.name, rel_rms(&b, &a));
        } else {
            assert_eq!(a, b, "{}", t.name);
        }
    }
    // Row reads (used to stream big tensors) give the same rows.
    let name = "model.language_model.embed_tokens_per_layer.weight";
    let all = g.read_f32(name).unwrap();
    assert!(g.supports_row_reads());
    assert_eq!(g.read_f32_rows(name, 3..7).unwrap(), all[3 * 48..7 * 48]);
}

/// Numbers compare as f64 (1e-6 stored as f32 in the GGUF reads back as 1e-6).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[test]
fn gguf4_config_rebuilds_the_same_model() {
    let (h, g) = (hf(), gguf("tiny-gemma4-f32.gguf"));
    let (hc, gc) = (h.config(), g.config());
    let a = cellm_engine::models::config::gemma4(hc).unwrap();
    let b = cellm_engine::models::config::gemma4(gc).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    for part in ["vision_config", "audio_config"] {
        let (hp, gp) = (&hc[part], &gc[part]);
        let gp = gp.as_object().unwrap_or_else(|| panic!("no {part}"));
        for (k, v) in hp.as_object().unwrap() {
            // initializer / dropout / clip bookkeeping are not model math
            if [
                "initializer_range",
                "attention_dropout",
                "max_position_embeddings",
            ]
            .contains(&k.as_str())
            {
                continue;
            }
            let ours = gp.get(k).unwrap_or_else(|| panic!("{part}.{k} missing"));
            assert!(same(v, ours), "{part}.{k}: hf {v} gguf {ours}");
        }
    }
    for k in [
        "image_token_id",
        "audio_token_id",
        "video_token_id",
        "boi_token_id",
        "eoi_token_id",
        "boa_token_id",
        "eoa_token_id",
    ] {
        assert_eq!(hc[k], gc[k], "{k}");
    }
}

#[test]
fn gguf4_tokenizer_matches_hf() {
    let (h, g) = (hf(), gguf("tiny-gemma4-f32.gguf"));
    let (ht, gt) = (h.tokenizer(), g.tokenizer());
    let a = Tokenizer::from_json(&ht.tokenizer_json).unwrap();
    let b = Tokenizer::from_json(&gt.tokenizer_json).unwrap();
    for text in [
        "The little robot read every book in the old house, and then it asked: where?",
        "<|turn>user\nHello  there<turn|>\n<|turn>model\n",
        "ümlaut 漢字 \u{1F600} tabs\tand\nnewlines",
    ] {
        assert_eq!(
            a.encode(text, true).unwrap(),
            b.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(ht.bos_token_id, gt.bos_token_id);
    assert_eq!(ht.add_bos, gt.add_bos);
    for id in &ht.eos_token_ids {
        assert!(gt.eos_token_ids.contains(id), "stop id {id}");
    }
    for (k, v) in &ht.special_tokens {
        assert_eq!(gt.special_tokens.get(k), Some(v), "special token {k}");
    }
}

#[test]
fn gguf4_quantized_files_dequantize_close() {
    let h = hf();
    for (file, bound) in [
        ("tiny-gemma4-q8_0.gguf", 0.01),
        ("tiny-gemma4-mixed.gguf", 0.1),
    ] {
        let g = gguf(file);
        assert_eq!(names(&*h), names(&*g), "{file}");
        let mut worst = (0f64, String::new());
        for t in h.tensors() {
            let e = rel_rms(&g.read_f32(&t.name).unwrap(), &h.read_f32(&t.name).unwrap());
            if e > worst.0 {
                worst = (e, t.name.clone());
            }
        }
        println!(
            "{file}: worst tensor rel RMS error {:.3e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 < bound, "{file}: {worst:?}");
    }
}

#[test]
fn gguf4_mmproj_found_given_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::copy(testdata("gguf-gemma4/tiny-gemma4-f32.gguf"), &model).unwrap();

    // Alone: text only, with a note saying so.
    let s = open_source(&model).unwrap();
    assert!(s.config().get("vision_config").is_none());
    assert!(s.config().get("audio_config").is_none());
    assert!(!s.tensors().iter().any(|t| t.name.contains("tower")));
    assert!(
        s.notes().iter().any(|n| n.contains("text-only")),
        "{:?}",
        s.notes()
    );

    // Given explicitly from elsewhere.
    let mm = testdata("gguf-gemma4/mmproj-tiny-gemma4-f32.gguf");
    let s = cellm_convert::open_source_with_mmproj(&model, Some(&mm)).unwrap();
    assert!(s.config().get("vision_config").is_some());
    assert_eq!(s.source_files().len(), 2);

    // Found next to the model by name.
    let found = dir.path().join("Some-Model-MMPROJ-f16.gguf");
    std::fs::copy(&mm, &found).unwrap();
    let s = GgufSource::open(&model).unwrap();
    assert_eq!(
        s.mmproj().map(|f| f.path().to_path_buf()),
        Some(found.clone())
    );

    // The mmproj itself is not a model.
    let e = err(open_source(&found));
    assert!(e.contains("mmproj") && e.contains("--mmproj"), "{e}");

    // Two candidates: ambiguous, one clear line.
    std::fs::copy(&mm, dir.path().join("mmproj-other.gguf")).unwrap();
    let e = err(open_source(&model));
    assert!(e.contains("several mmproj") && !e.contains('\n'), "{e}");

    // A text GGUF given as the mmproj, and --mmproj with a folder.
    let e = err(cellm_convert::open_source_with_mmproj(&model, Some(&model)));
    assert!(e.contains("not a Gemma 4 mmproj"), "{e}");
    let e = err(cellm_convert::open_source_with_mmproj(
        &testdata("tiny-gemma4"),
        Some(&mm),
    ));
    assert!(e.contains("not a .gguf"), "{e}");
}
