//! End-to-end conversions of tiny Hugging Face folders, read back with `CellmFile`.

mod common;

use cellm_convert::quant::profile::decide;
use cellm_convert::{ConvertError, ConvertOptions, Profile, QuantSpec, convert, open_source};
use cellm_engine::format::CellmFile;
use cellm_engine::tensor::DType;
use common::*;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::Ordering;

fn run(
    input: &Path,
    out: &Path,
    options: &ConvertOptions,
) -> Result<cellm_convert::ConvertSummary, ConvertError> {
    let source = open_source(input)?;
    convert(source.as_ref(), out, options, &mut |_| {})
}

/// Largest acceptable |error| relative to the tensor's max |value| per stored dtype.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 0.0,
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        DType::Q8 => 1e-2,
        DType::Q4 => 0.15,
        // k-means palettes per row group: about half the widest gap between entries
        DType::Lut4 => 0.15,
        DType::Lut6 => 0.05,
    }
}

#[test]
fn gemma3_every_profile() {
    let src = tempfile::tempdir().unwrap();
    let tensors = gemma3_folder(src.path());
    let out_dir = tempfile::tempdir().unwrap();
    for profile in Profile::ALL {
        let out = out_dir.path().join(format!("m-{profile}.cellm"));
        let options = ConvertOptions::new(profile);
        let summary = run(src.path(), &out, &options).unwrap();
        assert_eq!(summary.tensors, tensors.len());
        let f = CellmFile::open(&out).unwrap();
        f.verify_checksums().unwrap();
        let h = f.header();
        assert_eq!(h.family, "gemma3");
        assert_eq!(h.quantization.profile, profile.name());
        assert_eq!(h.tokenizer.bos_token_id, Some(2));
        assert_eq!(h.tokenizer.eos_token_ids, vec![1, 106]);
        assert_eq!(h.tokenizer.special_tokens.get("end_of_turn"), Some(&106));
        assert!(
            h.tokenizer
                .chat_template
                .as_deref()
                .unwrap()
                .contains("bos_token")
        );
        assert!(h.tokenizer.add_bos);
        assert_eq!(h.config["hidden_size"], 64);
        assert!(h.provenance.converter_version.starts_with("cellm-convert"));
        assert!(h.provenance.created.ends_with('Z'));
        let st = h
            .provenance
            .source_files
            .iter()
            .find(|s| s.name == "model.safetensors")
            .unwrap();
        assert_eq!(st.sha256.len(), 64);
        assert_eq!(h.tensors.len(), tensors.len());
        let spec = QuantSpec::new(profile, None, &[]).unwrap();
        let mut quantized = 0;
        for t in &tensors {
            let e = f.tensor_entry(&t.name).unwrap();
            let d = decide(&t.name, &t.shape, &spec);
            assert_eq!(
                (e.dtype, e.group_size),
                (d.dtype, d.group_size),
                "{}",
                t.name
            );
            assert_eq!(e.shape, t.shape);
            quantized += usize::from(e.dtype.is_quantized());
            // awq-int4 stores scaled weights and folded norms (tests/awq_tiny.rs checks them).
            if profile == Profile::AwqInt4 {
                continue;
            }
            // Values: the source as stored (bf16/f16 rounding) vs what the file gives back.
            let got = f.tensor(&t.name).unwrap().to_f32_vec();
            let want: Vec<f32> = match t.dtype {
                safetensors::Dtype::BF16 => t
                    .values
                    .iter()
                    .map(|v| half::bf16::from_f32(*v).to_f32())
                    .collect(),
                safetensors::Dtype::F16 => t
                    .values
                    .iter()
                    .map(|v| half::f16::from_f32(*v).to_f32())
                    .collect(),
                _ => t.values.clone(),
            };
            let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= tolerance(e.dtype) * amax,
                "{profile} {}: err {err} amax {amax}",
                t.name
            );
        }
        if profile.is_quantized() {
            assert!(quantized > 0, "{profile} quantized nothing");
        }
    }
}

#[test]
fn sharded_folder_with_index() {
    let src = tempfile::tempdir().unwrap();
    let tensors = gemma3_folder(src.path());
    std::fs::remove_file(src.path().join("model.safetensors")).unwrap();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    write_safetensors(
        &src.path().join("model-00001-of-00002.safetensors"),
        &a.iter().collect::<Vec<_>>(),
    );
    write_safetensors(
        &src.path().join("model-00002-of-00002.safetensors"),
        &b.iter().collect::<Vec<_>>(),
    );
    let mut map = serde_json::Map::new();
    for t in a {
        map.insert(t.name.clone(), json!("model-00001-of-00002.safetensors"));
    }
    for t in b {
        map.insert(t.name.clone(), json!("model-00002-of-00002.safetensors"));
    }
    write_json(
        &src.path().join("model.safetensors.index.json"),
        &json!({"metadata": {}, "weight_map": map}),
    );

    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.cellm");
    run(src.path(), &out, &ConvertOptions::new(Profile::F32)).unwrap();
    let f = CellmFile::open(&out).unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    let names: Vec<&str> = f
        .header()
        .provenance
        .source_files
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        names.contains(&"model-00002-of-00002.safetensors"),
        "{names:?}"
    );
    // f32 profile keeps f32 sources bit-exact.
    let t = tensors
        .iter()
        .find(|t| t.dtype == safetensors::Dtype::F32 && t.shape.len() == 2)
        .unwrap();
    assert_eq!(f.tensor(&t.name).unwrap().to_f32_vec(), t.values);

    // A shard named by the index but missing: a clear error.
    std::fs::remove_file(src.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = open_source(src.path()).err().unwrap().to_string();
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    gemma3_folder(src.path());
    let mut c = gemma3_config();
    c["architectures"] = json!(["LlamaForCausalLM"]);
    c["model_type"] = json!("llama");
    write_json(&src.path().join("config.json"), &c);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.cellm");
    let err = run(src.path(), &out, &ConvertOptions::new(Profile::Int8)).unwrap_err();
    assert!(matches!(err, ConvertError::UnsupportedArchitecture(_)));
    assert!(err.to_string().contains("LlamaForCausalLM"), "{err}");
    assert!(listing(out_dir.path()).is_empty());
}

#[test]
fn cancel_after_first_tensor() {
    let src = tempfile::tempdir().unwrap();
    gemma3_folder(src.path());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.cellm");
    let options = ConvertOptions::new(Profile::Int4);
    let cancel = options.cancel.clone();
    let source = open_source(src.path()).unwrap();
    let mut seen = 0;
    let err = convert(source.as_ref(), &out, &options, &mut |p| {
        if p.phase == cellm_convert::Phase::Converting && p.index >= 1 {
            cancel.store(true, Ordering::Relaxed);
        }
        seen = seen.max(p.index);
    })
    .unwrap_err();
    assert!(matches!(err, ConvertError::Cancelled), "{err}");
    assert!(seen <= 2);
    assert!(
        listing(out_dir.path()).is_empty(),
        "{:?}",
        listing(out_dir.path())
    );
}

#[test]
fn clear_errors_for_bad_folders() {
    let src = tempfile::tempdir().unwrap();
    let err = open_source(src.path()).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");

    write_json(&src.path().join("config.json"), &gemma3_config());
    std::fs::write(src.path().join("tokenizer.json"), tokenizer_json()).unwrap();
    let err = open_source(src.path()).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    let err = open_source(Path::new("/nonexistent/model"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = open_source(Path::new("synthetic:nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("synthetic:gemma3-270m"), "{err}");
}

#[test]
fn output_checks() {
    let src = tempfile::tempdir().unwrap();
    gemma3_folder(src.path());
    let options = ConvertOptions::new(Profile::F16);
    // Missing output directory.
    let err = run(
        src.path(),
        &src.path().join("no/such/dir/m.cellm"),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not exist"), "{err}");
    // The input file itself.
    let err = run(src.path(), &src.path().join("model.safetensors"), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("overwrite"), "{err}");
    // Bad group size.
    let mut o = ConvertOptions::new(Profile::Int4);
    o.group_size = Some(40);
    let err = run(src.path(), &src.path().join("m.cellm"), &o)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of 32"), "{err}");
    // A layer the model does not have.
    let mut o = ConvertOptions::new(Profile::Int4);
    o.exclude_layers = vec![1, 7];
    let err = run(src.path(), &src.path().join("m.cellm"), &o)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--exclude-layers 7"), "{err}");
}

#[test]
fn exclude_layers_and_group_size() {
    let src = tempfile::tempdir().unwrap();
    gemma3_folder(src.path());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("m.cellm");
    let mut o = ConvertOptions::new(Profile::Int4);
    o.group_size = Some(64);
    o.exclude_layers = vec![1];
    run(src.path(), &out, &o).unwrap();
    let f = CellmFile::open(&out).unwrap();
    assert_eq!(f.header().quantization.group_size, 64);
    assert_eq!(f.header().quantization.excluded_layers, vec![1]);
    let e0 = f.tensor_entry("model.layers.0.mlp.up_proj.weight").unwrap();
    assert_eq!((e0.dtype, e0.group_size), (DType::Q4, 64));
    let e1 = f.tensor_entry("model.layers.1.mlp.up_proj.weight").unwrap();
    assert_eq!(e1.dtype, DType::F16);
}

/// Gemma 4 text-only folder: KV-shared layers' k/v tensors and a tied lm_head are skipped.
#[test]
fn gemma4_skips_unused_tensors() {
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    let (h, hd) = (64usize, 32usize);
    let config = json!({
        "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
        "tie_word_embeddings": true, "boi_token_id": 250, "eoi_token_id": 251,
        "image_token_id": 252, "audio_token_id": 253, "boa_token_id": 254, "eoa_token_index": 255,
        "eos_token_id": [1, 106],
        "text_config": {"model_type": "gemma4_text", "hidden_size": h, "num_hidden_layers": 2,
            "num_kv_shared_layers": 1, "head_dim": hd, "vocab_size": VOCAB, "bos_token_id": 2,
            "pad_token_id": 0}
    });
    write_json(&d.join("config.json"), &config);
    std::fs::write(d.join("tokenizer.json"), tokenizer_json()).unwrap();
    std::fs::write(d.join("chat_template.jinja"), "{{ bos_token }}jinja").unwrap();
    let m = "model.language_model.";
    let mut tensors = vec![
        (format!("{m}embed_tokens.weight"), vec![VOCAB, h]),
        ("lm_head.weight".to_string(), vec![VOCAB, h]),
        (format!("{m}norm.weight"), vec![h]),
    ];
    for l in 0..2 {
        for n in ["q_proj", "k_proj", "v_proj"] {
            tensors.push((
                format!("{m}layers.{l}.self_attn.{n}.weight"),
                vec![hd * 2, h],
            ));
        }
        tensors.push((format!("{m}layers.{l}.self_attn.k_norm.weight"), vec![hd]));
        tensors.push((format!("{m}layers.{l}.layer_scalar"), vec![1]));
    }
    let ts: Vec<T> = tensors
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| T {
            values: values(shape.iter().product(), i as u32),
            name,
            shape,
            dtype: safetensors::Dtype::BF16,
        })
        .collect();
    write_safetensors(&d.join("model.safetensors"), &ts.iter().collect::<Vec<_>>());

    let source = open_source(d).unwrap();
    assert_eq!(source.family(), "gemma4");
    let names: Vec<&str> = source.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(!names.contains(&"lm_head.weight"));
    assert!(names.contains(&"model.language_model.layers.0.self_attn.k_proj.weight"));
    for n in ["k_proj.weight", "v_proj.weight", "k_norm.weight"] {
        assert!(
            !names.contains(&format!("{m}layers.1.self_attn.{n}").as_str()),
            "{n}"
        );
    }
    assert!(names.contains(&"model.language_model.layers.1.self_attn.q_proj.weight"));
    let tok = source.tokenizer();
    assert_eq!(tok.chat_template.as_deref(), Some("{{ bos_token }}jinja"));
    assert_eq!(tok.eos_token_ids, vec![1, 106]);
    assert_eq!(tok.bos_token_id, Some(2));
    assert_eq!(tok.special_tokens.get("boi"), Some(&250));
    assert_eq!(tok.special_tokens.get("eoa"), Some(&255));
    assert!(source.notes().iter().any(|n| n.contains("KV-shared")));

    // This partial folder (no MLPs, no intermediate_size) could never load: the converter's plan
    // check refuses it before writing anything (convert/tests/plan_check.rs has the full cases).
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("g4.cellm");
    let err = convert(
        source.as_ref(),
        &out,
        &ConvertOptions::new(Profile::MixedInt4),
        &mut |_| {},
    )
    .expect_err("an unloadable model is refused");
    assert!(err.to_string().contains("intermediate_size"), "{err}");
    assert_eq!(listing(out_dir.path()), Vec::<String>::new());
}

/// Gemma 3 multimodal checkpoints: the language model only, renamed to Gemma3ForCausalLM names.
#[test]
fn gemma3_multimodal_text_only() {
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    let mut text = gemma3_config();
    text.as_object_mut().unwrap().remove("architectures");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                "text_config": text, "boi_token_index": 255, "image_token_index": 254}),
    );
    std::fs::write(d.join("tokenizer.json"), tokenizer_json()).unwrap();
    let ts = [
        T {
            name: "language_model.model.embed_tokens.weight".into(),
            shape: vec![VOCAB, H],
            values: values(VOCAB * H, 1),
            dtype: safetensors::Dtype::F32,
        },
        T {
            name: "language_model.model.norm.weight".into(),
            shape: vec![H],
            values: values(H, 2),
            dtype: safetensors::Dtype::F32,
        },
        T {
            name: "vision_tower.vision_model.post_layernorm.weight".into(),
            shape: vec![H],
            values: values(H, 3),
            dtype: safetensors::Dtype::F32,
        },
    ];
    write_safetensors(&d.join("model.safetensors"), &ts.iter().collect::<Vec<_>>());
    let source = open_source(d).unwrap();
    assert_eq!(source.family(), "gemma3");
    assert_eq!(source.config()["architectures"][0], "Gemma3ForCausalLM");
    let names: Vec<&str> = source.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["model.embed_tokens.weight", "model.norm.weight"]);
    assert!(
        source
            .notes()
            .iter()
            .any(|n| n.contains("vision is not supported"))
    );
    assert_eq!(source.tokenizer().special_tokens.get("boi"), Some(&255));
}
