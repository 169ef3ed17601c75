//! Builders for tiny Hugging Face folders used by the integration tests.
#![allow(dead_code)]

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor to serialize: name, shape, values, stored dtype.
pub struct T {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub dtype: Dtype,
}

pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bytes_of(t: &T) -> Vec<u8> {
    match t.dtype {
        Dtype::F32 => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => t
            .values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => t
            .values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("unsupported test dtype {other:?}"),
    }
}

pub fn write_safetensors(path: &Path, tensors: &[&T]) {
    let data: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), bytes_of(t)))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|(t, (n, b))| {
            (
                n.clone(),
                TensorView::new(t.dtype, t.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// H 64, 2 layers, 2 heads of 32, 1 KV head, ffn 128, vocab 256.
pub const H: usize = 64;
pub const LAYERS: usize = 2;
pub const VOCAB: usize = 256;

pub fn gemma3_tensors() -> Vec<T> {
    let (hd, heads, ffn) = (32, 2, 128);
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, H])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}.");
        for (n, s) in [
            ("input_layernorm.weight", vec![H]),
            ("self_attn.q_proj.weight", vec![heads * hd, H]),
            ("self_attn.k_proj.weight", vec![hd, H]),
            ("self_attn.v_proj.weight", vec![hd, H]),
            ("self_attn.o_proj.weight", vec![H, heads * hd]),
            ("self_attn.q_norm.weight", vec![hd]),
            ("self_attn.k_norm.weight", vec![hd]),
            ("post_attention_layernorm.weight", vec![H]),
            ("pre_feedforward_layernorm.weight", vec![H]),
            ("post_feedforward_layernorm.weight", vec![H]),
            ("mlp.gate_proj.weight", vec![ffn, H]),
            ("mlp.up_proj.weight", vec![ffn, H]),
            ("mlp.down_proj.weight", vec![H, ffn]),
        ] {
            shapes.push((format!("{p}{n}"), s));
        }
    }
    shapes.push(("model.norm.weight".into(), vec![H]));
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| T {
            values: values(shape.iter().product(), i as u32),
            // A mix of stored dtypes: the reader must handle all three.
            dtype: [Dtype::F32, Dtype::BF16, Dtype::F16][i % 3],
            name,
            shape,
        })
        .collect()
}

pub fn gemma3_config() -> Value {
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128, "vocab_size": VOCAB,
        "sliding_window": 16, "query_pre_attn_scalar": 32, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    })
}

/// A minimal valid WordLevel tokenizer.json with a few special tokens.
pub fn tokenizer_json() -> String {
    let mut vocab = BTreeMap::new();
    for (i, t) in ["<pad>", "<eos>", "<bos>", "<unk>"].iter().enumerate() {
        vocab.insert(t.to_string(), i);
    }
    vocab.insert("<start_of_turn>".into(), 105);
    vocab.insert("<end_of_turn>".into(), 106);
    for i in 4..VOCAB {
        if i != 105 && i != 106 {
            vocab.insert(format!("w{i}"), i);
        }
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<eos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "<bos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

pub fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Writes config, tokenizer files and a single model.safetensors.
pub fn gemma3_folder(dir: &Path) -> Vec<T> {
    let tensors = gemma3_tensors();
    write_json(&dir.join("config.json"), &gemma3_config());
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"add_bos_token": true, "bos_token": "<bos>", "eos_token": "<eos>",
                "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}),
    );
    write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": 2, "eos_token_id": [1, 106]}),
    );
    let refs: Vec<&T> = tensors.iter().collect();
    write_safetensors(&dir.join("model.safetensors"), &refs);
    tensors
}

/// Files in `dir` (names), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
