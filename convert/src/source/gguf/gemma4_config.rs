//! A Hugging Face `Gemma4ForConditionalGeneration` config.json rebuilt from the metadata of a
//! llama.cpp Gemma 4 text GGUF and, when given, its mmproj GGUF, so that the engine builds the same
//! model as from the Hugging Face folder.
//!
//! What llama.cpp does not store is filled in from the facts it hard-codes for Gemma 4 (the same
//! values as transformers' Gemma4 config defaults): the audio tower's chunked attention, soft-cap and
//! residual weight (tools/mtmd/models/gemma4a.cpp), the vision tower's RoPE base and pooling kernel
//! (clip.cpp, PROJECTOR_TYPE_GEMMA4V), and the sliding layers' plain RoPE.

use super::config::{get_f64, get_u64};
use super::parse::{GgufFile, GgufValue, TensorInfo};
use crate::error::ConvertError;
use serde_json::{Value, json};

const A: &str = "gemma4";

// Audio tower constants llama.cpp hard-codes (gemma4a.cpp) and transformers defaults to.
const AUDIO_CHUNK: u64 = 12;
const AUDIO_CONTEXT_LEFT: u64 = 13;
const AUDIO_CONTEXT_RIGHT: u64 = 0;
const AUDIO_LOGIT_CAP: f64 = 50.0;
const AUDIO_INVALID_LOGITS: f64 = -1.0e9;
const AUDIO_RESIDUAL_WEIGHT: f64 = 0.5;
const AUDIO_GRADIENT_CLIPPING: f64 = 1.0e10;
// Vision tower constants (clip.cpp: rope_theta 100, n_merge 3 unless the file sets a scale factor).
const VISION_ROPE_THETA: f64 = 100.0;
const VISION_POOLING: u64 = 3;
const VISION_SOFT_TOKENS: u64 = 280;
const SLIDING_ROPE_THETA: f64 = 10_000.0;

fn invalid(msg: String) -> ConvertError {
    ConvertError::Invalid(format!("Gemma 4 GGUF: {msg}"))
}

fn req_u64(f: &GgufFile, key: &str) -> Result<u64, ConvertError> {
    get_u64(f, key)?.ok_or_else(|| invalid(format!("metadata lacks '{key}'")))
}

/// A per-layer metadata value: a scalar for every layer, or an array with one value per layer.
fn per_layer_u64(f: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<u64>>, ConvertError> {
    let Some(v) = f.get(key) else { return Ok(None) };
    if let Some(x) = v.as_u64() {
        return Ok(Some(vec![x; n]));
    }
    let arr = v
        .as_array()
        .ok_or_else(|| invalid(format!("'{key}' is neither an integer nor an array")))?;
    let vals = arr
        .iter()
        .map(GgufValue::as_u64)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid(format!("'{key}' holds a non-integer")))?;
    if vals.len() != n {
        return Err(invalid(format!(
            "'{key}' has {} values for {n} layers",
            vals.len()
        )));
    }
    Ok(Some(vals))
}

fn tensor<'a>(f: &'a GgufFile, name: &str) -> Option<&'a TensorInfo> {
    f.tensor(name)
}

fn ne(t: &TensorInfo, i: usize) -> u64 {
    t.ne.get(i).copied().unwrap_or(1)
}

/// Token ids the multimodal prompt needs, found by their spelling in the vocabulary.
fn token_ids(f: &GgufFile) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(tokens) = f.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array) else {
        return out;
    };
    let find = |s: &str| tokens.iter().position(|t| t.as_str() == Some(s));
    for (key, tok) in [
        ("image_token_id", "<|image|>"),
        ("audio_token_id", "<|audio|>"),
        ("video_token_id", "<|video|>"),
        ("boi_token_id", "<|image>"),
        ("eoi_token_id", "<image|>"),
        ("boa_token_id", "<|audio>"),
        ("eoa_token_id", "<audio|>"),
    ] {
        if let Some(id) = find(tok) {
            out.insert(key.into(), json!(id));
        }
    }
    out
}

/// The full-attention RoPE: llama.cpp stores "proportional" RoPE as frequency factors that are 1
/// for the rotated pairs and 1e30 for the rest (Gemma4Model.generate_extra_tensors).
fn full_rope(
    text: &GgufFile,
    rope_freqs: Option<&[f32]>,
    head_dim_full: u64,
) -> Result<Value, ConvertError> {
    let theta = get_f64(text, &format!("{A}.rope.freq_base"))?.unwrap_or(1_000_000.0);
    match rope_freqs {
        Some(factors) => {
            if factors.len() as u64 * 2 != head_dim_full {
                return Err(invalid(format!(
                    "rope_freqs has {} factors for global head size {head_dim_full}",
                    factors.len()
                )));
            }
            let rotated = factors.iter().take_while(|&&x| x == 1.0).count();
            if factors[rotated..].iter().any(|&x| x < 1e29) {
                return Err(invalid(
                    "rope_freqs is not the proportional-RoPE pattern (ones then 1e30)".into(),
                ));
            }
            let factor = (2 * rotated) as f64 / head_dim_full as f64;
            Ok(json!({"rope_type": "proportional", "rope_theta": theta,
                      "partial_rotary_factor": factor}))
        }
        None => {
            let n_rot =
                get_u64(text, &format!("{A}.rope.dimension_count"))?.unwrap_or(head_dim_full);
            let mut p = json!({"rope_type": "default", "rope_theta": theta});
            if n_rot != head_dim_full {
                p["partial_rotary_factor"] = json!(n_rot as f64 / head_dim_full as f64);
            }
            Ok(p)
        }
    }
}

fn text_config(text: &GgufFile, rope_freqs: Option<&[f32]>) -> Result<Value, ConvertError> {
    let key = |k: &str| format!("{A}.{k}");
    let hidden = req_u64(text, &key("embedding_length"))?;
    let n = req_u64(text, &key("block_count"))?;
    if n == 0 || n > 10_000 {
        return Err(invalid(format!("implausible block_count {n}")));
    }
    let n = n as usize;
    if get_u64(text, &key("expert_count"))?.unwrap_or(0) > 0 {
        return Err(invalid(
            "Gemma 4 mixture-of-experts models are not supported".into(),
        ));
    }
    let heads = per_layer_u64(text, &key("attention.head_count"), n)?
        .ok_or_else(|| invalid(format!("metadata lacks '{}'", key("attention.head_count"))))?;
    if heads.iter().any(|&h| h != heads[0]) || heads[0] == 0 {
        return Err(invalid(format!(
            "per-layer query head counts {heads:?} are not supported"
        )));
    }
    let swa: Vec<bool> = match text.get(&key("attention.sliding_window_pattern")) {
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_bool).collect::<Option<Vec<_>>>())
            .filter(|a| a.len() == n)
            .ok_or_else(|| {
                invalid("attention.sliding_window_pattern is not one bool per layer".into())
            })?,
        None => {
            return Err(invalid(format!(
                "metadata lacks '{}'",
                key("attention.sliding_window_pattern")
            )));
        }
    };
    let layer_types: Vec<&str> = swa
        .iter()
        .map(|&s| {
            if s {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    let head_dim_full = req_u64(text, &key("attention.key_length"))?;
    let head_dim_swa = get_u64(text, &key("attention.key_length_swa"))?.unwrap_or(head_dim_full);
    let v_full = get_u64(text, &key("attention.value_length"))?.unwrap_or(head_dim_full);
    let v_swa = get_u64(text, &key("attention.value_length_swa"))?.unwrap_or(head_dim_swa);
    if v_full != head_dim_full || v_swa != head_dim_swa {
        return Err(invalid(format!(
            "value head size differs from the key head size ({v_full}/{head_dim_full}, \
             {v_swa}/{head_dim_swa}); not a Gemma 4 layout cellm runs"
        )));
    }
    let kv = per_layer_u64(text, &key("attention.head_count_kv"), n)?.unwrap_or(heads.clone());
    let kv_swa = (0..n).find(|&i| swa[i]).map(|i| kv[i]).unwrap_or(kv[0]);
    let kv_full = (0..n).find(|&i| !swa[i]).map(|i| kv[i]).unwrap_or(kv_swa);
    for i in 0..n {
        let want = if swa[i] { kv_swa } else { kv_full };
        if kv[i] != want {
            return Err(invalid(format!(
                "layer {i} has {} KV heads; expected {want} like the other layers of its type",
                kv[i]
            )));
        }
    }
    let shared = get_u64(text, &key("attention.shared_kv_layers"))?.unwrap_or(0) as usize;
    if shared >= n && shared > 0 {
        return Err(invalid(format!("{shared} KV-shared layers of {n}")));
    }
    let first_shared = n - shared;
    let ff = per_layer_u64(text, &key("feed_forward_length"), n)?
        .ok_or_else(|| invalid(format!("metadata lacks '{}'", key("feed_forward_length"))))?;
    let base_ff = ff[0];
    let double_wide = ff
        .iter()
        .enumerate()
        .any(|(i, &x)| i >= first_shared && x == 2 * base_ff);
    for (i, &x) in ff.iter().enumerate() {
        let want = if double_wide && i >= first_shared {
            2 * base_ff
        } else {
            base_ff
        };
        if x != want {
            return Err(invalid(format!(
                "layer {i} has feed-forward width {x}; cellm runs widths {base_ff} (and \
                 {} for KV-shared layers with the double-wide MLP) only",
                2 * base_ff
            )));
        }
    }
    let embd = tensor(text, "token_embd.weight")
        .ok_or_else(|| invalid("no token_embd.weight tensor".into()))?;
    let vocab = ne(embd, 1);
    let ple = tensor(text, "per_layer_token_embd.weight");
    let ple_width = get_u64(text, &key("embedding_length_per_layer_input"))?.unwrap_or(0);
    let eps = get_f64(text, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6);
    let swa_theta = get_f64(text, &key("rope.freq_base_swa"))?.unwrap_or(SLIDING_ROPE_THETA);
    let n_rot_swa = get_u64(text, &key("rope.dimension_count_swa"))?.unwrap_or(head_dim_swa);
    let mut sliding_rope = json!({"rope_type": "default", "rope_theta": swa_theta});
    if n_rot_swa != head_dim_swa {
        sliding_rope["partial_rotary_factor"] = json!(n_rot_swa as f64 / head_dim_swa as f64);
    }
    let mut per_layer_config = serde_json::Map::new();
    if kv_full != kv_swa {
        for i in (0..n).filter(|&i| !swa[i]) {
            per_layer_config.insert(
                i.to_string(),
                json!({"head_dim": head_dim_full, "num_key_value_heads": kv_full}),
            );
        }
    }
    let token_id = |k: &str| get_u64(text, &format!("tokenizer.ggml.{k}_token_id"));
    let mut cfg = json!({
        "model_type": "gemma4_text",
        "hidden_size": hidden,
        "num_hidden_layers": n,
        "intermediate_size": base_ff,
        "num_attention_heads": heads[0],
        "num_key_value_heads": kv_swa,
        "head_dim": head_dim_swa,
        "global_head_dim": head_dim_full,
        "layer_types": layer_types,
        "sliding_window": get_u64(text, &key("attention.sliding_window"))?,
        "num_kv_shared_layers": shared,
        "use_double_wide_mlp": double_wide,
        "vocab_size": vocab,
        "hidden_size_per_layer_input": ple_width,
        "vocab_size_per_layer_input": ple.map(|t| ne(t, 1)).unwrap_or(vocab),
        "max_position_embeddings": get_u64(text, &key("context_length"))?,
        "rms_norm_eps": eps,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": get_f64(text, &key("final_logit_softcapping"))?,
        "rope_parameters": {
            "full_attention": full_rope(text, rope_freqs, head_dim_full)?,
            "sliding_attention": sliding_rope,
        },
        "attention_bias": false,
        "attention_k_eq_v": false,
        "enable_moe_block": false,
        "tie_word_embeddings": tensor(text, "output.weight").is_none(),
        "bos_token_id": token_id("bos")?,
        "eos_token_id": token_id("eos")?,
        "pad_token_id": token_id("padding")?,
    });
    if !per_layer_config.is_empty() {
        cfg["per_layer_config"] = Value::Object(per_layer_config);
    }
    Ok(cfg)
}

fn vision_config(mm: &GgufFile) -> Result<Value, ConvertError> {
    let key = |k: &str| format!("clip.vision.{k}");
    let heads = req_u64(mm, &key("attention.head_count"))?;
    let q_norm = tensor(mm, "v.blk.0.attn_q_norm.weight")
        .ok_or_else(|| invalid("mmproj lacks v.blk.0.attn_q_norm.weight".into()))?;
    let pos = tensor(mm, "v.position_embd.weight")
        .ok_or_else(|| invalid("mmproj lacks v.position_embd.weight".into()))?;
    Ok(json!({
        "model_type": "gemma4_vision",
        "hidden_size": req_u64(mm, &key("embedding_length"))?,
        "intermediate_size": req_u64(mm, &key("feed_forward_length"))?,
        "num_hidden_layers": req_u64(mm, &key("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": ne(q_norm, 0),
        "patch_size": req_u64(mm, &key("patch_size"))?,
        "pooling_kernel_size": get_u64(mm, &key("projector.scale_factor"))?.unwrap_or(VISION_POOLING),
        "position_embedding_size": ne(pos, 1),
        "rms_norm_eps": get_f64(mm, &key("attention.layer_norm_epsilon"))?.unwrap_or(1e-6),
        "hidden_activation": "gelu_pytorch_tanh",
        "rope_parameters": {"rope_type": "axial", "rope_theta": VISION_ROPE_THETA},
        "standardize": tensor(mm, "v.std_bias").is_some(),
        "use_clipped_linears": tensor(mm, "v.blk.0.attn_q.input_max").is_some(),
        "attention_bias": false,
    }))
}

fn audio_config(mm: &GgufFile) -> Result<Value, ConvertError> {
    let key = |k: &str| format!("clip.audio.{k}");
    let mut channels = Vec::new();
    while let Some(t) = tensor(mm, &format!("a.conv1d.{}.weight", channels.len())) {
        channels.push(ne(t, 3));
    }
    let dw = tensor(mm, "a.blk.0.conv_dw.weight")
        .ok_or_else(|| invalid("mmproj lacks a.blk.0.conv_dw.weight".into()))?;
    let out = tensor(mm, "a.pre_encode.out.weight")
        .ok_or_else(|| invalid("mmproj lacks a.pre_encode.out.weight".into()))?;
    Ok(json!({
        "model_type": "gemma4_audio",
        "hidden_size": req_u64(mm, &key("embedding_length"))?,
        "num_hidden_layers": req_u64(mm, &key("block_count"))?,
        "num_attention_heads": req_u64(mm, &key("attention.head_count"))?,
        "subsampling_conv_channels": channels,
        "conv_kernel_size": ne(dw, 0),
        "attention_chunk_size": AUDIO_CHUNK,
        "attention_context_left": AUDIO_CONTEXT_LEFT,
        "attention_context_right": AUDIO_CONTEXT_RIGHT,
        "attention_logit_cap": AUDIO_LOGIT_CAP,
        "attention_invalid_logits_value": AUDIO_INVALID_LOGITS,
        "gradient_clipping": AUDIO_GRADIENT_CLIPPING,
        "output_proj_dims": ne(out, 1),
        "residual_weight": AUDIO_RESIDUAL_WEIGHT,
        "rms_norm_eps": get_f64(mm, &key("attention.layer_norm_epsilon"))?.unwrap_or(1e-6),
        "hidden_act": "silu",
        "use_clipped_linears": tensor(mm, "a.blk.0.attn_q.input_max").is_some(),
    }))
}

/// The whole config. `rope_freqs` are the values of the text GGUF's `rope_freqs.weight`.
pub fn gemma4_config(
    text: &GgufFile,
    rope_freqs: Option<&[f32]>,
    mmproj: Option<&GgufFile>,
) -> Result<Value, ConvertError> {
    let text_cfg = text_config(text, rope_freqs)?;
    let mut cfg = json!({
        "architectures": ["Gemma4ForConditionalGeneration"],
        "model_type": "gemma4",
        "tie_word_embeddings": text_cfg["tie_word_embeddings"].clone(),
        "bos_token_id": text_cfg["bos_token_id"].clone(),
        "eos_token_id": text_cfg["eos_token_id"].clone(),
        "pad_token_id": text_cfg["pad_token_id"].clone(),
        "text_config": text_cfg,
    });
    for (k, v) in token_ids(text) {
        cfg[k] = v;
    }
    if let Some(mm) = mmproj {
        let flag = |k: &str| mm.get(k).and_then(GgufValue::as_bool).unwrap_or(false);
        if flag("clip.has_vision_encoder") {
            cfg["vision_config"] = vision_config(mm)?;
            cfg["vision_soft_tokens_per_image"] = json!(VISION_SOFT_TOKENS);
        }
        if flag("clip.has_audio_encoder") {
            cfg["audio_config"] = audio_config(mm)?;
        }
    }
    Ok(cfg)
}
