//! The JSON header of a `.cellm` file.

use crate::tensor::DType;
use serde::{Deserialize, Serialize};

/// Everything about the model except the tensor bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Model family: "gemma3" or "gemma4".
    pub family: String,
    /// The full source configuration (HF config.json, with text/vision/audio sub-configs, or an
    /// equivalent one built from GGUF metadata).
    pub config: serde_json::Value,
    pub tokenizer: TokenizerInfo,
    pub quantization: QuantizationInfo,
    pub provenance: Provenance,
    /// Measured fidelity against the unquantized source, when known (free-form JSON object:
    /// kl_mean, kl_max, top1_match, correlation, positions, calibration text ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<serde_json::Value>,
    pub tensors: Vec<TensorEntry>,
}

/// Tokenizer and prompt format.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenizerInfo {
    /// A complete Hugging Face `tokenizer.json` document, embedded as a string.
    pub tokenizer_json: String,
    /// Jinja chat template, when the source had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    /// Generation stops on any of these.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Whether a BOS token is prepended when encoding a prompt.
    #[serde(default = "yes")]
    pub add_bos: bool,
    /// Named special tokens (e.g. "boi" -> 255999, "image" -> 258880) from config and tokenizer.
    #[serde(default)]
    pub special_tokens: std::collections::BTreeMap<String, u32>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct QuantizationInfo {
    /// Profile name as given to `cellm convert --profile`.
    pub profile: String,
    /// Default group size of quantized tensors.
    pub group_size: usize,
    /// Layers kept at f16 by `--exclude-layers`.
    #[serde(default)]
    pub excluded_layers: Vec<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    pub converter_version: String,
    pub source_files: Vec<SourceFile>,
    /// RFC 3339 UTC time of conversion.
    #[serde(default)]
    pub created: String,
    /// Remarks of the converter, e.g. the AWQ scale exponents chosen per layer (awq-int4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One row of the tensor table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorEntry {
    /// Hugging Face tensor name (GGUF names are mapped to HF names by the converter).
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Offset of the first byte, relative to the start of the data section; multiple of 64.
    pub offset: u64,
    pub byte_len: u64,
    /// Group size for q8/q4 (0 for float dtypes).
    #[serde(default)]
    pub group_size: usize,
    /// CRC-32 (IEEE) of the tensor bytes.
    pub crc32: u32,
}

impl TensorEntry {
    /// Which part of the model the tensor belongs to, for size reports.
    pub fn component(&self) -> &'static str {
        let n = self.name.as_str();
        if n.contains("vision_tower") || n.contains("embed_vision") {
            "vision"
        } else if n.contains("audio_tower") || n.contains("embed_audio") {
            "audio"
        } else if n.contains("embed_tokens") {
            "embeddings"
        } else {
            "text"
        }
    }
}
