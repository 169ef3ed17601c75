//! The GGUF SentencePiece vocabulary (`tokenizer.ggml.*`) turned into cellm's [`TokenizerInfo`]:
//! a Hugging Face tokenizer.json built by the engine's `spm_tokenizer_json`, special ids, template.

use super::parse::{GgufFile, GgufValue};
use crate::error::ConvertError;
use cellm_engine::format::TokenizerInfo;
use cellm_engine::tokenizer::{SpmVocab, spm_tokenizer_json};

fn invalid(what: String) -> ConvertError {
    ConvertError::Invalid(format!("GGUF tokenizer: {what}"))
}

fn array<'a>(f: &'a GgufFile, key: &str) -> Result<&'a [GgufValue], ConvertError> {
    f.get(key)
        .ok_or_else(|| invalid(format!("metadata lacks '{key}'")))?
        .as_array()
        .ok_or_else(|| invalid(format!("'{key}' is not an array")))
}

fn token_id(f: &GgufFile, key: &str, n_tokens: usize) -> Result<Option<u32>, ConvertError> {
    let Some(v) = f.get(key) else { return Ok(None) };
    let id = v
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .filter(|&id| (id as usize) < n_tokens)
        .ok_or_else(|| {
            invalid(format!(
                "'{key}' = {v:?} is not a token id below {n_tokens}"
            ))
        })?;
    Ok(Some(id))
}

fn flag(f: &GgufFile, key: &str, default: bool) -> Result<bool, ConvertError> {
    match f.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("'{key}' is not a bool: {v:?}"))),
    }
}

/// GGUF token type of control tokens (llama.cpp `LLAMA_TOKEN_TYPE_CONTROL`) and of normal ones.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
/// Gemma's bracketed markers without a pipe (Gemma 3 turn and image markers, kept in Gemma 4).
const GEMMA_MARKERS: &[&str] = &[
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
];

/// llama.cpp types a Gemma 4 marker as CONTROL only when the checkpoint's tokenizer_config lists
/// it among the special tokens (gguf-py LlamaHfVocab); otherwise it is NORMAL and would be split
/// into pieces, while transformers' tokenizer.json matches every marker whole. Gemma 4's markers
/// are spelled `<|name>`, `<name|>` or `<|name|>` (and the Gemma 3 ones above); no text piece
/// looks like that, so a NORMAL one is taken as the control token it is.
fn promote_gemma4_markers(tokens: &[String], types: &mut [i32]) {
    for (t, ty) in tokens.iter().zip(types.iter_mut()) {
        let marker = t.len() > 3
            && t.starts_with('<')
            && t.ends_with('>')
            && !t.contains(char::is_whitespace)
            && (t.starts_with("<|") || t.ends_with("|>") || GEMMA_MARKERS.contains(&t.as_str()));
        if *ty == TYPE_NORMAL && marker {
            *ty = TYPE_CONTROL;
        }
    }
}

/// Read the SentencePiece ("llama" model, Gemma 3) or Gemma 4 ("gemma4": the same byte-fallback
/// BPE with its merges stored) vocabulary.
pub fn spm_vocab(f: &GgufFile) -> Result<SpmVocab, ConvertError> {
    let model = f.get("tokenizer.ggml.model").and_then(GgufValue::as_str);
    if !matches!(model, Some("llama" | "gemma4")) {
        return Err(invalid(format!(
            "tokenizer.ggml.model is {model:?}; cellm reads SentencePiece (\"llama\") and Gemma 4 \
             (\"gemma4\") vocabularies only"
        )));
    }
    let tokens = array(f, "tokenizer.ggml.tokens")?
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid("tokenizer.ggml.tokens holds a non-string".into()))?;
    let n = tokens.len();
    let scores = match f.get("tokenizer.ggml.scores") {
        None => vec![0.0; n],
        Some(_) => array(f, "tokenizer.ggml.scores")?
            .iter()
            .map(|s| match *s {
                GgufValue::F32(x) => Some(x),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("tokenizer.ggml.scores holds a non-f32".into()))?,
    };
    let token_types = match f.get("tokenizer.ggml.token_type") {
        None => vec![1; n],
        Some(_) => array(f, "tokenizer.ggml.token_type")?
            .iter()
            .map(|t| t.as_i64().and_then(|x| i32::try_from(x).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("tokenizer.ggml.token_type holds a non-integer".into()))?,
    };
    let mut token_types = token_types;
    if model == Some("gemma4") {
        promote_gemma4_markers(&tokens, &mut token_types);
    }
    if scores.len() != n || token_types.len() != n {
        return Err(invalid(format!(
            "{n} tokens but {} scores and {} token types",
            scores.len(),
            token_types.len()
        )));
    }
    // Real vocabularies repeat a handful of entries at most; one that is mostly repeats cannot
    // tokenize text and is corrupt.
    let distinct = tokens
        .iter()
        .map(String::as_str)
        .collect::<std::collections::HashSet<&str>>()
        .len();
    if n > 1 && distinct * 2 < n {
        return Err(invalid(format!(
            "only {distinct} of the {n} tokens are distinct"
        )));
    }
    Ok(SpmVocab {
        bos_id: token_id(f, "tokenizer.ggml.bos_token_id", n)?,
        eos_id: token_id(f, "tokenizer.ggml.eos_token_id", n)?,
        unk_id: token_id(f, "tokenizer.ggml.unknown_token_id", n)?,
        pad_id: token_id(f, "tokenizer.ggml.padding_token_id", n)?,
        add_bos: flag(f, "tokenizer.ggml.add_bos_token", true)?,
        // llama.cpp's default for SPM vocabularies is to add the prefix space
        add_space_prefix: flag(f, "tokenizer.ggml.add_space_prefix", true)?,
        tokens,
        scores,
        token_types,
    })
}

/// Gemma 4 stores the BPE merges ("left right"); use them instead of the derived ones.
fn with_stored_merges(f: &GgufFile, tokenizer_json: String) -> Result<String, ConvertError> {
    let Some(v) = f.get("tokenizer.ggml.merges") else {
        return Ok(tokenizer_json);
    };
    let merges = v
        .as_array()
        .ok_or_else(|| invalid("tokenizer.ggml.merges is not an array".into()))?
        .iter()
        .map(|m| {
            let (l, r) = m.as_str()?.split_once(' ')?;
            Some(serde_json::json!([l, r]))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            invalid("tokenizer.ggml.merges holds an entry that is not \"left right\"".into())
        })?;
    let mut doc: serde_json::Value = serde_json::from_str(&tokenizer_json)
        .map_err(|e| invalid(format!("re-reading tokenizer.json: {e}")))?;
    doc["model"]["merges"] = serde_json::Value::Array(merges);
    serde_json::to_string(&doc).map_err(|e| invalid(format!("writing tokenizer.json: {e}")))
}

/// Tokenizer, stop ids and chat template of a Gemma GGUF.
pub fn tokenizer_info(f: &GgufFile) -> Result<TokenizerInfo, ConvertError> {
    let vocab = spm_vocab(f)?;
    let find = |tok: &str| vocab.tokens.iter().position(|t| t == tok).map(|i| i as u32);
    // Generation stops on <eos> and on Gemma's end-of-turn marker (Gemma 3 <end_of_turn>, Gemma 4
    // <turn|>) and llama.cpp's EOT id if set.
    let mut eos_token_ids = Vec::new();
    let eot = token_id(f, "tokenizer.ggml.eot_token_id", vocab.tokens.len())?;
    for id in [vocab.eos_id, find("<end_of_turn>"), find("<turn|>"), eot]
        .into_iter()
        .flatten()
    {
        if !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    }
    let mut special_tokens = std::collections::BTreeMap::new();
    for (name, tok) in [
        ("start_of_turn", "<start_of_turn>"),
        ("end_of_turn", "<end_of_turn>"),
        ("boi", "<start_of_image>"),
        ("eoi", "<end_of_image>"),
        ("image", "<image_soft_token>"),
        // Gemma 4 spellings (the same names the Hugging Face source gives them)
        ("turn_start", "<|turn>"),
        ("turn_end", "<turn|>"),
        ("think", "<|think|>"),
        ("channel_start", "<|channel>"),
        ("channel_end", "<channel|>"),
        ("tool_response", "<|tool_response>"),
        ("boi", "<|image>"),
        ("eoi", "<image|>"),
        ("image", "<|image|>"),
        ("video", "<|video|>"),
        ("audio", "<|audio|>"),
        ("boa", "<|audio>"),
        ("eoa", "<audio|>"),
    ] {
        if let Some(id) = find(tok) {
            special_tokens.insert(name.to_string(), id);
        }
    }
    let chat_template = match f.get("tokenizer.chat_template") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| invalid("tokenizer.chat_template is not a string".into()))?
                .to_string(),
        ),
    };
    let tokenizer_json =
        spm_tokenizer_json(&vocab).map_err(|e| invalid(format!("building tokenizer.json: {e}")))?;
    let tokenizer_json = with_stored_merges(f, tokenizer_json)?;
    Ok(TokenizerInfo {
        tokenizer_json,
        chat_template,
        bos_token_id: vocab.bos_id,
        eos_token_ids,
        pad_token_id: vocab.pad_id,
        add_bos: vocab.add_bos,
        special_tokens,
    })
}
