//! Tokenizer and prompt-format facts of a Hugging Face folder: tokenizer.json,
//! tokenizer_config.json, chat_template.jinja, generation_config.json and config.json ids.

use crate::error::ConvertError;
use cellm_engine::format::TokenizerInfo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Special-token id fields of Gemma configs and the names they get in the header.
const CONFIG_SPECIAL_IDS: &[(&str, &[&str])] = &[
    ("boi", &["boi_token_id", "boi_token_index"]),
    ("eoi", &["eoi_token_id", "eoi_token_index"]),
    ("image", &["image_token_id", "image_token_index"]),
    ("video", &["video_token_id", "video_token_index"]),
    ("audio", &["audio_token_id", "audio_token_index"]),
    ("boa", &["boa_token_id", "boa_token_index"]),
    ("eoa", &["eoa_token_id", "eoa_token_index"]),
];

/// Turn markers worth naming when the vocabulary has them (Gemma 3 and Gemma 4 spellings).
const NAMED_TOKENS: &[(&str, &str)] = &[
    ("start_of_turn", "<start_of_turn>"),
    ("end_of_turn", "<end_of_turn>"),
    ("turn_start", "<|turn>"),
    ("turn_end", "<turn|>"),
    ("think", "<|think|>"),
    ("channel_start", "<|channel>"),
    ("channel_end", "<channel|>"),
    ("tool_response", "<|tool_response>"),
];

pub(crate) fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::Invalid(format!("{} is not valid JSON: {e}", path.display())))
}

pub(crate) fn read_text(path: &Path) -> Result<String, ConvertError> {
    std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A u32 from a JSON number, or the first element of a list of numbers.
fn as_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Value::Array(a) => a.first().and_then(as_id),
        _ => None,
    }
}

fn as_ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Array(a) => a.iter().filter_map(as_id).collect(),
        other => as_id(other).into_iter().collect(),
    }
}

/// Looks a field up in the config, then in its text_config.
fn config_field<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config
        .get(key)
        .filter(|v| !v.is_null())
        .or_else(|| config.get("text_config")?.get(key).filter(|v| !v.is_null()))
}

/// Token string -> id, from tokenizer.json's added tokens and model vocabulary.
fn token_id(tokenizer: &Value, token: &str) -> Option<u32> {
    if let Some(added) = tokenizer.get("added_tokens").and_then(Value::as_array) {
        for t in added {
            if t.get("content").and_then(Value::as_str) == Some(token) {
                return t.get("id").and_then(as_id);
            }
        }
    }
    let vocab = tokenizer.get("model")?.get("vocab")?;
    match vocab {
        Value::Object(map) => map.get(token).and_then(as_id),
        // Unigram vocabularies are [[piece, score], ...]; the index is the id.
        Value::Array(list) => list
            .iter()
            .position(|e| e.get(0).and_then(Value::as_str) == Some(token))
            .and_then(|i| u32::try_from(i).ok()),
        _ => None,
    }
}

/// tokenizer_config.json spells special tokens as strings or as {"content": ...}.
fn token_string(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// The chat template of tokenizer_config.json: a string, or a list of named templates.
fn config_chat_template(tc: &Value) -> Option<String> {
    match tc.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// Builds the header's tokenizer section from the files of `dir` and the model config.
pub(crate) fn tokenizer_info(dir: &Path, config: &Value) -> Result<TokenizerInfo, ConvertError> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ConvertError::Invalid(format!(
            "{} has no tokenizer.json (cellm embeds the Hugging Face tokenizer in the model file)",
            dir.display()
        )));
    }
    let tokenizer_json = read_text(&tok_path)?;
    let tokenizer: Value = serde_json::from_str(&tokenizer_json).map_err(|e| {
        ConvertError::Invalid(format!("{} is not valid JSON: {e}", tok_path.display()))
    })?;

    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.is_file() {
        read_json(&tc_path)?
    } else {
        Value::Null
    };
    let gen_path = dir.join("generation_config.json");
    let generation = if gen_path.is_file() {
        read_json(&gen_path)?
    } else {
        Value::Null
    };

    let jinja = dir.join("chat_template.jinja");
    let chat_template = if jinja.is_file() {
        Some(read_text(&jinja)?)
    } else {
        config_chat_template(&tc)
    };

    let from_tc = |key: &str| {
        tc.get(key)
            .and_then(token_string)
            .and_then(|s| token_id(&tokenizer, s))
    };
    let bos_token_id = config_field(config, "bos_token_id")
        .and_then(as_id)
        .or_else(|| generation.get("bos_token_id").and_then(as_id))
        .or_else(|| from_tc("bos_token"));
    let mut eos_token_ids = generation
        .get("eos_token_id")
        .map(as_ids)
        .filter(|v| !v.is_empty())
        .or_else(|| config.get("eos_token_id").map(as_ids))
        .or_else(|| config_field(config, "eos_token_id").map(as_ids))
        .unwrap_or_default();
    if eos_token_ids.is_empty() {
        eos_token_ids.extend(from_tc("eos_token"));
    }
    let pad_token_id = config_field(config, "pad_token_id")
        .and_then(as_id)
        .or_else(|| generation.get("pad_token_id").and_then(as_id))
        .or_else(|| from_tc("pad_token"));
    let add_bos = tc
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let mut special_tokens = BTreeMap::new();
    for (name, keys) in CONFIG_SPECIAL_IDS {
        if let Some(id) = keys.iter().find_map(|k| config.get(*k).and_then(as_id)) {
            special_tokens.insert((*name).to_owned(), id);
        }
    }
    for (name, token) in NAMED_TOKENS {
        if let Some(id) = token_id(&tokenizer, token) {
            special_tokens.insert((*name).to_owned(), id);
        }
    }

    Ok(TokenizerInfo {
        tokenizer_json,
        chat_template,
        bos_token_id,
        eos_token_ids,
        pad_token_id,
        add_bos,
        special_tokens,
    })
}
