//! Committed tiny fixtures (testdata/tiny-gemma*) with every profile, and synthetic models.

use cellm_convert::{ConvertOptions, Profile, convert, open_source};
use cellm_engine::format::CellmFile;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name);
    if p.join("config.json").is_file() {
        Some(p)
    } else {
        println!("note: {} is absent; skipping", p.display());
        None
    }
}

fn every_profile(dir: &Path, family: &str) {
    let source = open_source(dir).unwrap();
    assert_eq!(source.family(), family);
    let out_dir = tempfile::tempdir().unwrap();
    for profile in Profile::ALL {
        let out = out_dir.path().join(format!("{profile}.cellm"));
        let summary = convert(
            source.as_ref(),
            &out,
            &ConvertOptions::new(profile),
            &mut |_| {},
        )
        .unwrap();
        let f = CellmFile::open(&out).unwrap();
        f.verify_checksums().unwrap();
        assert_eq!(f.header().family, family);
        assert_eq!(f.tensors().len(), summary.tensors);
        assert_eq!(f.tensors().len(), source.tensors().len());
        assert!(!f.header().tokenizer.tokenizer_json.is_empty());
        // Norms and scalars stay exact in every profile (awq-int4 folds its scales into the
        // norms before the layers it scales: tests/awq_tiny.rs checks that fold).
        let folded = |name: &str| {
            profile == Profile::AwqInt4
                && (name.ends_with("input_layernorm.weight")
                    || name.ends_with("pre_feedforward_layernorm.weight"))
        };
        for t in source
            .tensors()
            .iter()
            .filter(|t| t.shape.len() < 2 && !folded(&t.name))
        {
            assert_eq!(
                f.tensor(&t.name).unwrap().to_f32_vec(),
                source.read_f32(&t.name).unwrap(),
                "{}",
                t.name
            );
        }
    }
}

#[test]
fn tiny_gemma3_fixture_every_profile() {
    if let Some(d) = fixture("tiny-gemma3") {
        every_profile(&d, "gemma3");
    }
}

#[test]
fn tiny_gemma4_fixture_every_profile() {
    if let Some(d) = fixture("tiny-gemma4") {
        every_profile(&d, "gemma4");
    }
}

#[test]
fn synthetic_tokenizer_loads_in_tokenizers() {
    let source = open_source(Path::new("synthetic:gemma3-270m")).unwrap();
    let tok =
        tokenizers::Tokenizer::from_bytes(source.tokenizer().tokenizer_json.as_bytes()).unwrap();
    assert_eq!(tok.get_vocab_size(true), 262144);
    let enc = tok.encode("<bos> <t5> <t262143>", false).unwrap();
    assert_eq!(enc.get_ids(), &[2, 5, 262143]);
}

/// The tokenizer, config and a few tensors of synthetic:gemma4-e2b, without converting 4.6 G
/// parameters.
#[test]
fn synthetic_e2b_reads_rows() {
    let source = open_source(Path::new("synthetic:gemma4-e2b")).unwrap();
    assert_eq!(source.config()["text_config"]["num_hidden_layers"], 35);
    let ple = "model.language_model.embed_tokens_per_layer.weight";
    let rows = source.read_f32_rows(ple, 262_000..262_002).unwrap();
    assert_eq!(rows.len(), 2 * 8960);
    let s = source
        .read_f32("model.language_model.layers.3.layer_scalar")
        .unwrap();
    assert_eq!(s, vec![1.0]);
}

/// Full-size Gemma 3 270M at int4 (about 10 s on 2 cores): run with --ignored.
#[test]
#[ignore]
fn synthetic_gemma3_270m_int4() {
    let source = open_source(Path::new("synthetic:gemma3-270m")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("s.cellm");
    let s = convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(Profile::Int4),
        &mut |_| {},
    )
    .unwrap();
    let f = CellmFile::open(&out).unwrap();
    assert_eq!(f.tensors().len(), 236);
    assert!(s.file_bytes < 200 << 20, "{}", s.file_bytes);
}

#[test]
fn tiny_gguf_fixture_converts() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/tiny-gemma3.gguf");
    if !p.is_file() {
        println!("note: {} is absent; skipping", p.display());
        return;
    }
    let source = open_source(&p).unwrap();
    assert_eq!(source.family(), "gemma3");
    let out_dir = tempfile::tempdir().unwrap();
    for profile in [Profile::F32, Profile::Int4] {
        let out = out_dir.path().join(format!("{profile}.cellm"));
        convert(
            source.as_ref(),
            &out,
            &ConvertOptions::new(profile),
            &mut |_| {},
        )
        .unwrap();
        let f = CellmFile::open(&out).unwrap();
        assert_eq!(f.tensors().len(), source.tensors().len());
        let prov = &f.header().provenance.source_files;
        assert_eq!(prov.len(), 1);
        assert_eq!(prov[0].name, "tiny-gemma3.gguf");
    }
}
