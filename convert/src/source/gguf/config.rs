//! A Hugging Face `config.json` for `Gemma3ForCausalLM` built from GGUF metadata, matching what
//! transformers' `AutoConfig.from_pretrained(dir, gguf_file=...)` builds, plus the facts the GGUF
//! leaves implicit (local RoPE base 10 000, one full-attention layer in six), written out
//! explicitly the way the original Hugging Face config has them.

use super::parse::{GgufFile, GgufValue};
use crate::error::ConvertError;
use serde_json::{Value, json};

/// Gemma 3 constants that llama.cpp hard-codes instead of storing (llama-model.cpp, LLM_ARCH_GEMMA3).
const SLIDING_WINDOW_PATTERN: usize = 6;
const ROPE_LOCAL_BASE_FREQ: f64 = 10_000.0;
/// Gemma3TextConfig defaults, used when a key is absent (as transformers does).
const DEFAULT_ROPE_THETA: f64 = 1_000_000.0;
const DEFAULT_SLIDING_WINDOW: u64 = 4096;
/// Gemma 3 27B is the one size whose attention scale is 1/sqrt(hidden / heads) instead of
/// 1/sqrt(head_dim) (llama.cpp: `type == LLM_TYPE_27B`); it is the one with 62 layers.
const GEMMA3_27B_LAYERS: u64 = 62;

fn missing(key: &str) -> ConvertError {
    ConvertError::Invalid(format!(
        "GGUF metadata lacks '{key}' (needed for config.json)"
    ))
}

pub(crate) fn get_u64(f: &GgufFile, key: &str) -> Result<Option<u64>, ConvertError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ConvertError::Invalid(format!(
                "GGUF metadata '{key}' is not a non-negative integer: {v:?}"
            ))
        }),
    }
}

fn req_u64(f: &GgufFile, key: &str) -> Result<u64, ConvertError> {
    get_u64(f, key)?.ok_or_else(|| missing(key))
}

pub(crate) fn get_f64(f: &GgufFile, key: &str) -> Result<Option<f64>, ConvertError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => float_value(v).map(Some).ok_or_else(|| {
            ConvertError::Invalid(format!("GGUF metadata '{key}' is not a number: {v:?}"))
        }),
    }
}

/// f32 metadata as the f64 with the same shortest decimal form (1e-6, not 9.99999997e-7), as in the
/// Hugging Face config the GGUF was made from.
fn float_value(v: &GgufValue) -> Option<f64> {
    match *v {
        GgufValue::F32(x) => format!("{x}").parse().ok(),
        _ => v.as_f64(),
    }
}

/// "sliding_attention" / "full_attention" for each layer: every 6th layer is full.
pub fn gemma3_layer_types(n_layers: usize) -> Vec<&'static str> {
    (0..n_layers)
        .map(|i| {
            if (i + 1) % SLIDING_WINDOW_PATTERN == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect()
}

/// Build the config. `tied` is whether the file lacks `output.weight` (the head is the embedding).
pub fn gemma3_config(f: &GgufFile, tied: bool) -> Result<Value, ConvertError> {
    let a = "gemma3";
    let key = |k: &str| format!("{a}.{k}");
    let hidden = req_u64(f, &key("embedding_length"))?;
    let n_layers = req_u64(f, &key("block_count"))?;
    let intermediate = req_u64(f, &key("feed_forward_length"))?;
    let heads = req_u64(f, &key("attention.head_count"))?;
    if heads == 0 || n_layers == 0 || n_layers > 10_000 {
        return Err(ConvertError::Invalid(format!(
            "GGUF metadata: implausible head_count {heads} / block_count {n_layers}"
        )));
    }
    let kv_heads = get_u64(f, &key("attention.head_count_kv"))?.unwrap_or(heads);
    let head_dim = get_u64(f, &key("attention.key_length"))?.unwrap_or(hidden / heads);
    let context = req_u64(f, &key("context_length"))?;
    let eps = get_f64(f, &key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| missing(&key("attention.layer_norm_rms_epsilon")))?;
    let rope_theta = get_f64(f, &key("rope.freq_base"))?.unwrap_or(DEFAULT_ROPE_THETA);
    let sliding_window =
        get_u64(f, &key("attention.sliding_window"))?.unwrap_or(DEFAULT_SLIDING_WINDOW);
    let vocab = match get_u64(f, &key("vocab_size"))? {
        Some(v) => v,
        None => f
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array)
            .map(|t| t.len() as u64)
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
    };
    let query_pre_attn_scalar = if n_layers == GEMMA3_27B_LAYERS {
        hidden / heads
    } else {
        head_dim
    };
    // Gemma 3 >= 4B scales the global RoPE linearly (factor 8); llama.cpp stores it.
    let rope_scaling = match (
        f.get(&key("rope.scaling.type")).and_then(GgufValue::as_str),
        get_f64(f, &key("rope.scaling.factor"))?,
    ) {
        (Some(ty), Some(factor)) if ty != "none" => Some((ty.to_string(), factor)),
        _ => None,
    };
    let full_rope = match &rope_scaling {
        Some((ty, factor)) => json!({"rope_type": ty, "factor": factor, "rope_theta": rope_theta}),
        None => json!({"rope_type": "default", "rope_theta": rope_theta}),
    };
    let token_id = |k: &str| get_u64(f, &format!("tokenizer.ggml.{k}_token_id"));

    Ok(json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rms_norm_eps": eps,
        "hidden_activation": "gelu_pytorch_tanh",
        "rope_theta": rope_theta,
        "rope_local_base_freq": ROPE_LOCAL_BASE_FREQ,
        "rope_scaling": rope_scaling.map(|(ty, factor)| json!({"rope_type": ty, "factor": factor})),
        // transformers >= 5 form of the same RoPE settings
        "rope_parameters": {
            "full_attention": full_rope,
            "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL_BASE_FREQ},
        },
        "sliding_window": sliding_window,
        "sliding_window_pattern": SLIDING_WINDOW_PATTERN,
        "layer_types": gemma3_layer_types(n_layers as usize),
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "use_bidirectional_attention": false,
        "tie_word_embeddings": tied,
        "bos_token_id": token_id("bos")?,
        "eos_token_id": token_id("eos")?,
        "pad_token_id": token_id("padding")?,
        "unk_token_id": token_id("unknown")?,
        "initializer_range": 0.02,
        "use_cache": true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_layer_types_every_sixth_full() {
        let t = gemma3_layer_types(18);
        let full: Vec<usize> = (0..18).filter(|&i| t[i] == "full_attention").collect();
        assert_eq!(full, vec![5, 11, 17]);
        assert_eq!(gemma3_layer_types(2), vec!["sliding_attention"; 2]);
    }

    #[test]
    fn gguf_f32_metadata_keeps_short_decimal() {
        assert_eq!(float_value(&GgufValue::F32(1e-6)), Some(1e-6));
        assert_eq!(float_value(&GgufValue::F32(1e6)), Some(1e6));
        assert_eq!(float_value(&GgufValue::U32(7)), Some(7.0));
    }
}
