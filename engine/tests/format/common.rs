//! Shared helpers for the format tests: a small header, a multi-dtype plan, and raw editing of
//! a file's JSON header (bypassing the validating API, to build broken files).

#![allow(dead_code)]

use cellm_engine::format::{
    CellmWriter, Header, PREAMBLE_LEN, Provenance, QuantizationInfo, SourceFile, TensorPlan,
    TokenizerInfo,
};
use cellm_engine::tensor::{DType, encode};
use std::path::{Path, PathBuf};

pub fn header() -> Header {
    Header {
        family: "gemma3".into(),
        config: serde_json::json!({"model_type": "gemma3_text", "hidden_size": 64,
            "num_hidden_layers": 2, "vocab_size": 128}),
        tokenizer: TokenizerInfo {
            tokenizer_json: r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1}},"added_tokens":[]}"#
                .into(),
            chat_template: Some("{{ messages }}".into()),
            bos_token_id: Some(2),
            eos_token_ids: vec![1, 106],
            pad_token_id: Some(0),
            add_bos: true,
            special_tokens: [("boi".to_string(), 255999u32)].into_iter().collect(),
        },
        quantization: QuantizationInfo {
            profile: "mixed-int4".into(),
            group_size: 32,
            excluded_layers: vec![0],
        },
        provenance: Provenance {
            converter_version: "test".into(),
            source_files: vec![SourceFile {
                name: "model.safetensors".into(),
                bytes: 1234,
                sha256: "ab".repeat(32),
            }],
            created: "2026-01-01T00:00:00Z".into(),
            notes: vec!["awq layer 0: alpha qkv 0.50".into()],
        },
        fidelity: None,
        tensors: vec![],
    }
}

/// Deterministic values (no RNG dependency).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// (plan, encoded bytes) covering every dtype with 1-D, 2-D and 3-D shapes.
pub fn sample_tensors() -> Vec<(TensorPlan, Vec<u8>)> {
    let specs: Vec<(&str, DType, Vec<usize>, usize)> = vec![
        ("model.norm.weight", DType::F32, vec![7], 0),
        ("model.embed_tokens.weight", DType::F16, vec![5, 3], 0),
        (
            "model.layers.0.mlp.up_proj.weight",
            DType::BF16,
            vec![2, 3, 5],
            0,
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            DType::Q8,
            vec![3, 64],
            32,
        ),
        (
            "model.layers.0.self_attn.k_proj.weight",
            DType::Q8,
            vec![128],
            64,
        ),
        (
            "model.layers.0.self_attn.v_proj.weight",
            DType::Q8,
            vec![2, 2, 32],
            32,
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            DType::Q4,
            vec![4, 64],
            32,
        ),
        (
            "model.layers.1.mlp.down_proj.weight",
            DType::Q4,
            vec![64],
            32,
        ),
        ("model.vision_tower.x.weight", DType::Q4, vec![2, 3, 64], 64),
        ("model.layers.1.scalar", DType::F32, vec![], 0),
        ("model.layers.1.empty", DType::F16, vec![0, 4], 0),
        ("model.layers.1.last", DType::F16, vec![3], 0),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (name, dtype, shape, gs))| {
            let n: usize = shape.iter().product();
            let bytes = encode(dtype, &values(n, i as u32), &shape, gs).expect("encode");
            let plan = TensorPlan {
                name: name.into(),
                dtype,
                shape,
                group_size: gs,
            };
            (plan, bytes)
        })
        .collect()
}

/// Writes a valid file with [`sample_tensors`] and returns its path.
pub fn write_sample(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let tensors = sample_tensors();
    let plan = tensors.iter().map(|(p, _)| p.clone()).collect();
    let mut w = CellmWriter::create(&path, header(), plan).expect("create");
    for (p, b) in &tensors {
        w.write_tensor(&p.name, b).expect("write_tensor");
    }
    w.finish().expect("finish")
}

pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Edits the header JSON of `path` as an untyped value and writes it back into the reserved
/// region, with no validation: used to build invalid files.
pub fn edit_header_raw(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = read_u64(&bytes, 16) as usize;
    let region = &bytes[PREAMBLE_LEN..PREAMBLE_LEN + header_len];
    let mut v: serde_json::Value = serde_json::from_slice(region).unwrap();
    f(&mut v);
    let mut json = serde_json::to_vec(&v).unwrap();
    assert!(json.len() <= header_len, "edited header does not fit");
    json.resize(header_len, b' ');
    bytes[PREAMBLE_LEN..PREAMBLE_LEN + header_len].copy_from_slice(&json);
    std::fs::write(path, bytes).unwrap();
}

/// Names of the entries of `dir` (to check that no temporary files are left).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
