//! Hugging Face model folders: config.json + model.safetensors (or sharded with
//! model.safetensors.index.json) + tokenizer files. Tensors are memory-mapped and converted to
//! f32 one at a time (or one row block at a time), so memory stays at one tensor.

use super::tokenizer_files::{read_json, tokenizer_info};
use super::{Source, SourceTensor};
use crate::error::ConvertError;
use cellm_engine::format::TokenizerInfo;
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Which checkpoint layout the config announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Gemma3ForCausalLM: `model.*` names.
    Gemma3Text,
    /// Gemma3ForConditionalGeneration: only the language model is converted, renamed to the
    /// `model.*` names of Gemma3ForCausalLM.
    Gemma3Multimodal,
    /// Gemma 4 (both the multimodal and the text-only class): names kept as they are.
    Gemma4,
}

fn detect_layout(config: &Value) -> Result<Layout, ConvertError> {
    let arch = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    let model_type = config.get("model_type").and_then(Value::as_str);
    let layout = match (arch, model_type) {
        (Some("Gemma3ForCausalLM"), _) => Layout::Gemma3Text,
        (Some("Gemma3ForConditionalGeneration"), _) => Layout::Gemma3Multimodal,
        (Some("Gemma4ForConditionalGeneration" | "Gemma4ForCausalLM"), _) => Layout::Gemma4,
        (Some(other), _) => return Err(ConvertError::UnsupportedArchitecture(other.to_owned())),
        (None, Some("gemma3_text")) => Layout::Gemma3Text,
        (None, Some("gemma3")) => Layout::Gemma3Multimodal,
        (None, Some("gemma4" | "gemma4_text")) => Layout::Gemma4,
        (None, Some(other)) => return Err(ConvertError::UnsupportedArchitecture(other.to_owned())),
        (None, None) => {
            return Err(ConvertError::Invalid(
                "config.json names neither `architectures` nor `model_type`".into(),
            ));
        }
    };
    Ok(layout)
}

/// Where one tensor's bytes live.
#[derive(Clone, Debug)]
struct Stored {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    bytes: Range<usize>,
}

/// A Hugging Face folder opened for conversion.
pub struct HfSource {
    family: String,
    config: Value,
    tokenizer: TokenizerInfo,
    tensors: Vec<SourceTensor>,
    stored: HashMap<String, Stored>,
    files: Vec<(PathBuf, Mmap)>,
    extra_files: Vec<PathBuf>,
    notes: Vec<String>,
}

impl HfSource {
    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        if !dir.is_dir() {
            return Err(ConvertError::Invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ConvertError::Invalid(format!(
                "{} has no config.json; is it a Hugging Face model folder?",
                dir.display()
            )));
        }
        let raw_config = read_json(&config_path)?;
        let layout = detect_layout(&raw_config)?;
        let tokenizer = tokenizer_info(dir, &raw_config)?;

        let (family, config) = match layout {
            Layout::Gemma3Text => ("gemma3", raw_config.clone()),
            Layout::Gemma3Multimodal => ("gemma3", gemma3_text_config(&raw_config)?),
            Layout::Gemma4 => ("gemma4", raw_config.clone()),
        };

        let (files, raw) = map_safetensors(dir)?;
        let mut notes = Vec::new();
        let tied = tie_word_embeddings(&raw_config);
        let shared = kv_shared_from(layout, &raw_config);
        let mut stored = HashMap::new();
        let mut skipped_vision = 0usize;
        let mut skipped_shared = 0usize;
        for (name, s) in raw {
            let name = match layout {
                Layout::Gemma3Multimodal => match gemma3_text_name(&name) {
                    Some(n) => n,
                    None => {
                        skipped_vision += 1;
                        continue;
                    }
                },
                _ => name,
            };
            if tied && name.ends_with("lm_head.weight") {
                continue;
            }
            if let Some(first_shared) = shared
                && is_unused_shared_kv(&name, first_shared)
            {
                skipped_shared += 1;
                continue;
            }
            stored.insert(name, s);
        }
        if skipped_vision > 0 {
            notes.push(format!(
                "Gemma 3 vision is not supported: converted the language model only, skipped \
                 {skipped_vision} vision/projector tensors"
            ));
        }
        if skipped_shared > 0 {
            notes.push(format!(
                "skipped {skipped_shared} k_proj/v_proj/k_norm tensors of KV-shared layers \
                 (unused by the model)"
            ));
        }
        if stored.is_empty() {
            return Err(ConvertError::Invalid(format!(
                "{} holds no tensors to convert",
                dir.display()
            )));
        }

        let mut names: Vec<&String> = stored.keys().collect();
        names.sort_by_key(|n| natural_key(n));
        let tensors = names
            .into_iter()
            .map(|n| SourceTensor {
                name: n.clone(),
                shape: stored[n].shape.clone(),
            })
            .collect();

        let extra_files = [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "chat_template.jinja",
            "model.safetensors.index.json",
        ]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();

        Ok(Self {
            family: family.to_owned(),
            config,
            tokenizer,
            tensors,
            stored,
            files,
            extra_files,
            notes,
        })
    }

    fn lookup(&self, name: &str) -> Result<&Stored, ConvertError> {
        self.stored
            .get(name)
            .ok_or_else(|| ConvertError::Invalid(format!("tensor '{name}' is not in the source")))
    }

    fn bytes(&self, s: &Stored, range: Range<usize>) -> Result<&[u8], ConvertError> {
        let (path, map) = &self.files[s.file];
        map.get(s.bytes.start + range.start..s.bytes.start + range.end)
            .ok_or_else(|| ConvertError::Invalid(format!("{} is truncated", path.display())))
    }
}

impl Source for HfSource {
    fn family(&self) -> &str {
        &self.family
    }
    fn config(&self) -> &Value {
        &self.config
    }
    fn tokenizer(&self) -> &TokenizerInfo {
        &self.tokenizer
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let s = self.lookup(name)?;
        let rows = cellm_engine::tensor::rows_cols(&s.shape).0;
        self.read_f32_rows(name, 0..rows)
    }
    fn source_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.files.iter().map(|(p, _)| p.clone()).collect();
        v.extend(self.extra_files.iter().cloned());
        v
    }
    fn supports_row_reads(&self) -> bool {
        true
    }
    fn read_f32_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>, ConvertError> {
        let s = self.lookup(name)?;
        let (nrows, cols) = cellm_engine::tensor::rows_cols(&s.shape);
        if rows.start > rows.end || rows.end > nrows {
            return Err(ConvertError::Invalid(format!(
                "rows {rows:?} out of range for '{name}' ({nrows} rows)"
            )));
        }
        let elem = match s.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(ConvertError::Invalid(format!(
                    "tensor '{name}' has dtype {other:?}; only f32, f16 and bf16 are supported"
                )));
            }
        };
        let bytes = self.bytes(s, rows.start * cols * elem..rows.end * cols * elem)?;
        let mut out = vec![0f32; (rows.end - rows.start) * cols];
        // Big chunks keep rayon overhead negligible while still using every core.
        const CHUNK: usize = 1 << 16;
        out.par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(CHUNK * elem))
            .for_each(|(o, b)| match s.dtype {
                Dtype::F32 => {
                    for (o, b) in o.iter_mut().zip(b.chunks_exact(4)) {
                        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
                Dtype::F16 => {
                    for (o, b) in o.iter_mut().zip(b.chunks_exact(2)) {
                        *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                    }
                }
                _ => {
                    for (o, b) in o.iter_mut().zip(b.chunks_exact(2)) {
                        *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                    }
                }
            });
        Ok(out)
    }
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

type Mapped = (Vec<(PathBuf, Mmap)>, HashMap<String, Stored>);

/// Checks a safetensors file held in memory as [`HfSource::open`] checks each shard (header,
/// tensor table, length); for the mutation test and the fuzz target.
pub fn check_safetensors_bytes(bytes: &[u8]) -> Result<usize, ConvertError> {
    let (n, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ConvertError::Invalid(format!("not a safetensors file: {e}")))?;
    let data_start = 8usize.saturating_add(n);
    if bytes.len() < data_start.saturating_add(meta.data_len()) {
        return Err(ConvertError::Invalid("truncated".into()));
    }
    Ok(meta.tensors().len())
}

/// The path of a shard named by model.safetensors.index.json, which must stay inside the
/// model folder: a plain relative name (no absolute path, no `..`), and, with symlinks
/// resolved, still under the folder.
fn shard_path(dir: &Path, name: &str) -> Result<PathBuf, ConvertError> {
    use std::path::Component;
    let outside = || {
        ConvertError::Invalid(format!(
            "model.safetensors.index.json names the shard '{name}', which is outside the \
             model folder {}",
            dir.display()
        ))
    };
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    let path = dir.join(rel);
    // A missing shard is reported by the caller; an existing one must resolve inside `dir`.
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize())
        && !real.starts_with(&root)
    {
        return Err(outside());
    }
    Ok(path)
}

/// Maps model.safetensors, or every shard named by model.safetensors.index.json.
fn map_safetensors(dir: &Path) -> Result<Mapped, ConvertError> {
    let single = dir.join("model.safetensors");
    let index_path = dir.join("model.safetensors.index.json");
    let (file_names, expected): (Vec<String>, Option<HashMap<String, String>>) = if index_path
        .is_file()
    {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ConvertError::Invalid(format!("{} has no weight_map object", index_path.display()))
            })?;
        let mut expected = HashMap::new();
        let mut names = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                ConvertError::Invalid(format!(
                    "{}: weight_map entry '{tensor}' is not a file name",
                    index_path.display()
                ))
            })?;
            names.insert(file.to_owned());
            expected.insert(tensor.clone(), file.to_owned());
        }
        (names.into_iter().collect(), Some(expected))
    } else if single.is_file() {
        (vec!["model.safetensors".to_owned()], None)
    } else {
        return Err(ConvertError::Invalid(format!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        )));
    };

    let mut files = Vec::new();
    let mut stored = HashMap::new();
    for (i, fname) in file_names.iter().enumerate() {
        let path = shard_path(dir, fname)?;
        if !path.is_file() {
            return Err(ConvertError::Invalid(format!(
                "tensor file {} (named in model.safetensors.index.json) is missing",
                path.display()
            )));
        }
        let file = std::fs::File::open(&path).map_err(|source| ConvertError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: the file is only read; a concurrent writer would corrupt the values, not memory
        // safety of this process beyond what every mmap-based loader accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ConvertError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
            ConvertError::Invalid(format!("{} is not a safetensors file: {e}", path.display()))
        })?;
        let data_start = 8 + n;
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            stored.insert(
                name,
                Stored {
                    file: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + a..data_start + b,
                },
            );
        }
        if map.len() < data_start + meta.data_len() {
            return Err(ConvertError::Invalid(format!(
                "{} is truncated",
                path.display()
            )));
        }
        files.push((path, map));
    }
    if let Some(expected) = expected {
        for (tensor, file) in expected {
            if !stored.contains_key(&tensor) {
                return Err(ConvertError::Invalid(format!(
                    "tensor '{tensor}' is listed in model.safetensors.index.json for {file} but \
                     that file does not contain it"
                )));
            }
        }
    }
    Ok((files, stored))
}

fn tie_word_embeddings(config: &Value) -> bool {
    config
        .get("tie_word_embeddings")
        .or_else(|| config.get("text_config")?.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// For Gemma 4: the first KV-shared layer, when the config has shared layers.
fn kv_shared_from(layout: Layout, config: &Value) -> Option<usize> {
    if layout != Layout::Gemma4 {
        return None;
    }
    let text = config.get("text_config").unwrap_or(config);
    let layers = text.get("num_hidden_layers")?.as_u64()?;
    let shared = text.get("num_kv_shared_layers")?.as_u64()?;
    (shared > 0 && shared <= layers).then(|| (layers - shared) as usize)
}

/// Layer index of a text-stack tensor (`...layers.N....`, not in a vision/audio tower).
pub(crate) fn text_layer_index(name: &str) -> Option<usize> {
    if name.contains("vision_tower") || name.contains("audio_tower") {
        return None;
    }
    let rest = &name[name.find(".layers.")? + ".layers.".len()..];
    rest.split('.').next()?.parse().ok()
}

/// transformers never loads k_proj/v_proj/k_norm of KV-shared layers (spec §3.5).
fn is_unused_shared_kv(name: &str, first_shared: usize) -> bool {
    let kv = [
        ".self_attn.k_proj.",
        ".self_attn.v_proj.",
        ".self_attn.k_norm.",
    ];
    kv.iter().any(|p| name.contains(p)) && text_layer_index(name).is_some_and(|l| l >= first_shared)
}

/// Gemma3ForConditionalGeneration text config, presented as a Gemma3ForCausalLM config.
fn gemma3_text_config(config: &Value) -> Result<Value, ConvertError> {
    let mut text = config.get("text_config").cloned().ok_or_else(|| {
        ConvertError::Invalid("Gemma 3 multimodal config has no text_config".into())
    })?;
    let obj = text
        .as_object_mut()
        .ok_or_else(|| ConvertError::Invalid("text_config is not an object".into()))?;
    obj.insert(
        "architectures".into(),
        serde_json::json!(["Gemma3ForCausalLM"]),
    );
    obj.entry("model_type").or_insert("gemma3_text".into());
    for key in [
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ] {
        if let Some(v) = config.get(key) {
            obj.entry(key).or_insert(v.clone());
        }
    }
    Ok(text)
}

/// Language-model names of a Gemma 3 multimodal checkpoint mapped to Gemma3ForCausalLM names
/// (both the module-tree and the older hub spellings); None for vision/projector tensors.
fn gemma3_text_name(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        return Some(format!("model.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("language_model.model.") {
        return Some(format!("model.{rest}"));
    }
    if name == "lm_head.weight" || name == "language_model.lm_head.weight" {
        return Some("lm_head.weight".into());
    }
    None
}

/// Sort key that orders digit runs numerically (layers.2 before layers.10).
pub(crate) fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut num = c.to_digit(10).map_or(0, u64::from);
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                num = num.saturating_mul(10).saturating_add(u64::from(d));
                chars.next();
            }
            key.push((std::mem::take(&mut text), num));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["a.layers.10.x", "a.layers.2.x", "a.layers.1.y", "a.norm"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(
            v,
            ["a.layers.1.y", "a.layers.2.x", "a.layers.10.x", "a.norm"]
        );
    }

    #[test]
    fn shared_kv_names() {
        let n = "model.language_model.layers.15.self_attn.k_proj.weight";
        assert!(is_unused_shared_kv(n, 15));
        assert!(!is_unused_shared_kv(n, 16));
        assert!(!is_unused_shared_kv(
            "model.language_model.layers.20.self_attn.q_proj.weight",
            15
        ));
        assert!(!is_unused_shared_kv(
            "model.audio_tower.layers.11.self_attn.k_proj.linear.weight",
            2
        ));
    }

    #[test]
    fn layouts() {
        let c = |a: &str| serde_json::json!({ "architectures": [a] });
        assert_eq!(
            detect_layout(&c("Gemma3ForCausalLM")).ok(),
            Some(Layout::Gemma3Text)
        );
        assert_eq!(
            detect_layout(&c("Gemma4ForCausalLM")).ok(),
            Some(Layout::Gemma4)
        );
        match detect_layout(&c("LlamaForCausalLM")) {
            Err(ConvertError::UnsupportedArchitecture(a)) => assert_eq!(a, "LlamaForCausalLM"),
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
        let t = serde_json::json!({ "model_type": "gemma4_text" });
        assert_eq!(detect_layout(&t).ok(), Some(Layout::Gemma4));
    }

    #[test]
    fn gemma3_multimodal_names() {
        assert_eq!(
            gemma3_text_name("language_model.model.layers.0.mlp.up_proj.weight").as_deref(),
            Some("model.layers.0.mlp.up_proj.weight")
        );
        assert_eq!(gemma3_text_name("vision_tower.vision_model.x"), None);
    }
}
