//! [`GgufSource`]: a llama.cpp GGUF presented as a Hugging Face checkpoint (names, PyTorch shapes,
//! Hugging Face value conventions, config.json, tokenizer.json):
//! - Gemma 3 (arch `gemma3`) as `Gemma3ForCausalLM`, norm weights without llama.cpp's +1;
//! - Gemma 4 (arch `gemma4`) as `Gemma4ForConditionalGeneration`, with the vision and audio towers
//!   of its mmproj GGUF (arch `clip`) when one is given or found next to the model.

use super::config::gemma3_config;
use super::dequant;
use super::gemma4_config::gemma4_config;
use super::gemma4_names::{
    Gemma4Name, Mapped, Transform, gemma4_mmproj_name, gemma4_text_name, hf_shape,
    inverse_softplus, unpermute_patch_embed,
};
use super::names::gemma3_hf_name;
use super::parse::{GgufFile, GgufValue, TensorInfo};
use super::vocab::tokenizer_info;
use crate::error::ConvertError;
use crate::source::hf::{natural_key, text_layer_index};
use crate::source::{Source, SourceTensor};
use cellm_engine::format::TokenizerInfo;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How one Hugging Face tensor is read from the files.
struct Entry {
    /// 0: the model GGUF, 1: the mmproj GGUF.
    part: usize,
    /// Index into that file's tensor list.
    index: usize,
    transform: Transform,
    /// llama.cpp stores Gemma 3 RMSNorm weights as 1 + w; Hugging Face keeps w.
    plus_one_norm: bool,
    shape: Vec<usize>,
}

pub struct GgufSource {
    files: Vec<GgufFile>,
    family: String,
    config: serde_json::Value,
    tokenizer: TokenizerInfo,
    tensors: Vec<SourceTensor>,
    by_hf_name: HashMap<String, Entry>,
    notes: Vec<String>,
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("files", &self.files)
            .field("family", &self.family)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn architecture(file: &GgufFile) -> Result<String, ConvertError> {
    file.get("general.architecture")
        .and_then(GgufValue::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ConvertError::Invalid(format!(
                "{}: no general.architecture in the GGUF metadata",
                file.path().display()
            ))
        })
}

fn check_type(file: &GgufFile, t: &TensorInfo) -> Result<(), ConvertError> {
    if dequant::is_supported(t.ty) {
        return Ok(());
    }
    Err(ConvertError::Invalid(format!(
        "{}: tensor '{}' is stored as {}, which cellm cannot dequantize (supported: F32, F16, \
         BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K)",
        file.path().display(),
        t.name,
        t.ty
    )))
}

/// The mmproj GGUF next to a model GGUF: the one `.gguf` file in the same folder whose name
/// contains "mmproj" (None when there is none; an error when several make the choice ambiguous).
pub fn find_mmproj(model: &Path) -> Result<Option<PathBuf>, ConvertError> {
    let dir = match model.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ConvertError::Invalid(format!(
            "cannot list {} to look for an mmproj: {e}",
            dir.display()
        ))
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase());
            p.is_file()
                && name.is_some_and(|n| n.contains("mmproj") && n.ends_with(".gguf"))
                && p.file_name() != model.file_name()
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ConvertError::Invalid(format!(
            "{} holds several mmproj files ({}); choose one with --mmproj",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl GgufSource {
    /// Open a model GGUF; for Gemma 4, an mmproj found next to it is read too.
    pub fn open(path: &Path) -> Result<GgufSource, ConvertError> {
        let file = GgufFile::open(path)?;
        if architecture(&file)? == "gemma4" {
            let mmproj = find_mmproj(path)?;
            return Self::open_gemma4(file, mmproj.as_deref());
        }
        Self::from_file(file)
    }

    /// Open a model GGUF with an explicit mmproj GGUF (Gemma 4 only).
    pub fn open_with_mmproj(path: &Path, mmproj: &Path) -> Result<GgufSource, ConvertError> {
        let file = GgufFile::open(path)?;
        let arch = architecture(&file)?;
        if arch != "gemma4" {
            return Err(ConvertError::Invalid(format!(
                "{}: --mmproj is for Gemma 4 GGUF files; this one is '{arch}'",
                path.display()
            )));
        }
        Self::open_gemma4(file, Some(mmproj))
    }

    fn from_file(file: GgufFile) -> Result<GgufSource, ConvertError> {
        let path = file.path().to_path_buf();
        match architecture(&file)?.as_str() {
            "gemma3" => {}
            "clip" => {
                return Err(ConvertError::Invalid(format!(
                    "{} is a multimodal projector (mmproj); convert the model GGUF and pass this \
                     file with --mmproj",
                    path.display()
                )));
            }
            other => return Err(ConvertError::UnsupportedArchitecture(other.to_string())),
        }

        let mut tensors = Vec::with_capacity(file.tensors.len());
        let mut by_hf_name = HashMap::with_capacity(file.tensors.len());
        for (index, t) in file.tensors.iter().enumerate() {
            let hf = gemma3_hf_name(&t.name).ok_or_else(|| {
                ConvertError::Invalid(format!(
                    "{}: tensor '{}' has no Hugging Face Gemma 3 counterpart",
                    path.display(),
                    t.name
                ))
            })?;
            check_type(&file, t)?;
            tensors.push(SourceTensor {
                name: hf.name.clone(),
                shape: t.torch_shape(),
            });
            by_hf_name.insert(
                hf.name,
                Entry {
                    part: 0,
                    index,
                    transform: Transform::None,
                    plus_one_norm: hf.plus_one_norm,
                    shape: t.torch_shape(),
                },
            );
        }
        if !by_hf_name.contains_key("model.embed_tokens.weight") {
            return Err(ConvertError::Invalid(format!(
                "{}: no token_embd.weight tensor",
                path.display()
            )));
        }
        let tied = !by_hf_name.contains_key("lm_head.weight");
        let config = gemma3_config(&file, tied)?;
        let tokenizer = tokenizer_info(&file)?;
        Ok(GgufSource {
            files: vec![file],
            family: "gemma3".to_string(),
            config,
            tokenizer,
            tensors,
            by_hf_name,
            notes: Vec::new(),
        })
    }

    fn open_gemma4(text: GgufFile, mmproj: Option<&Path>) -> Result<GgufSource, ConvertError> {
        let mut files = vec![text];
        let mut notes = Vec::new();
        if let Some(mm) = mmproj {
            let f = GgufFile::open(mm)?;
            let arch = architecture(&f)?;
            let projector = |k: &str| f.get(k).and_then(GgufValue::as_str).map(str::to_string);
            let (pv, pa) = (
                projector("clip.vision.projector_type"),
                projector("clip.audio.projector_type"),
            );
            let ok = arch == "clip"
                && pv.as_deref().is_none_or(|p| p == "gemma4v")
                && pa.as_deref().is_none_or(|p| p == "gemma4a")
                && (pv.is_some() || pa.is_some());
            if !ok {
                return Err(ConvertError::Invalid(format!(
                    "{}: not a Gemma 4 mmproj (architecture '{arch}', projectors {pv:?} / {pa:?}; \
                     expected clip with gemma4v / gemma4a)",
                    mm.display()
                )));
            }
            notes.push(format!(
                "vision/audio towers read from {}",
                mm.file_name().unwrap_or_default().to_string_lossy()
            ));
            files.push(f);
        } else {
            notes.push(
                "no mmproj GGUF given or found next to the model: text-only Gemma 4 (pass \
                 --mmproj FILE for the vision and audio towers)"
                    .to_string(),
            );
        }

        let shared = files[0]
            .get("gemma4.attention.shared_kv_layers")
            .and_then(GgufValue::as_u64)
            .unwrap_or(0) as usize;
        let n_layers = files[0]
            .get("gemma4.block_count")
            .and_then(GgufValue::as_u64)
            .unwrap_or(0) as usize;
        let first_shared = n_layers.saturating_sub(shared);

        let mut by_hf_name = HashMap::new();
        let mut rope_freqs = None;
        let mut skipped_shared = 0usize;
        for (part, file) in files.iter().enumerate() {
            for (index, t) in file.tensors.iter().enumerate() {
                let mapped = if part == 0 {
                    gemma4_text_name(&t.name)
                } else {
                    gemma4_mmproj_name(&t.name)
                };
                let m: Mapped = match mapped {
                    Some(Gemma4Name::Mapped(m)) => m,
                    Some(Gemma4Name::Derived) => {
                        rope_freqs = Some(file.dequantize(t)?);
                        continue;
                    }
                    Some(Gemma4Name::Unsupported(why)) => {
                        return Err(ConvertError::Invalid(format!(
                            "{}: {why} (tensor '{}')",
                            file.path().display(),
                            t.name
                        )));
                    }
                    None => {
                        return Err(ConvertError::Invalid(format!(
                            "{}: tensor '{}' has no Hugging Face Gemma 4 counterpart",
                            file.path().display(),
                            t.name
                        )));
                    }
                };
                check_type(file, t)?;
                // transformers never loads K/V of KV-shared layers (spec §3.5); skip them as the
                // Hugging Face source does.
                if part == 0
                    && shared > 0
                    && [".k_proj.", ".v_proj.", ".k_norm."]
                        .iter()
                        .any(|p| m.name.contains(p))
                    && text_layer_index(&m.name).is_some_and(|l| l >= first_shared)
                {
                    skipped_shared += 1;
                    continue;
                }
                let shape = hf_shape(&m, &t.torch_shape()).ok_or_else(|| {
                    ConvertError::Invalid(format!(
                        "{}: tensor '{}' has shape {:?}, which does not fit '{}'",
                        file.path().display(),
                        t.name,
                        t.torch_shape(),
                        m.name
                    ))
                })?;
                let entry = Entry {
                    part,
                    index,
                    transform: m.transform,
                    plus_one_norm: false,
                    shape,
                };
                if by_hf_name.insert(m.name.clone(), entry).is_some() {
                    return Err(ConvertError::Invalid(format!(
                        "{}: two tensors map to '{}'",
                        file.path().display(),
                        m.name
                    )));
                }
            }
        }
        if skipped_shared > 0 {
            notes.push(format!(
                "skipped {skipped_shared} k/v tensors of KV-shared layers (unused by the model)"
            ));
        }
        // Gemma 4 with attention_k_eq_v stores no V projection for its full-attention layers.
        for l in 0..first_shared {
            let has = |s: &str| {
                by_hf_name.contains_key(&format!("model.language_model.layers.{l}.self_attn.{s}"))
            };
            if has("k_proj.weight") && !has("v_proj.weight") {
                return Err(ConvertError::Invalid(format!(
                    "{}: layer {l} has no V projection (attention_k_eq_v); this Gemma 4 variant \
                     is not supported",
                    files[0].path().display()
                )));
            }
        }
        let config = gemma4_config(&files[0], rope_freqs.as_deref(), files.get(1))?;
        let tokenizer = tokenizer_info(&files[0])?;
        let mut names: Vec<&String> = by_hf_name.keys().collect();
        names.sort_by_key(|n| natural_key(n));
        let tensors = names
            .into_iter()
            .map(|n| SourceTensor {
                name: n.clone(),
                shape: by_hf_name[n].shape.clone(),
            })
            .collect();
        Ok(GgufSource {
            files,
            family: "gemma4".to_string(),
            config,
            tokenizer,
            tensors,
            by_hf_name,
            notes,
        })
    }

    /// The parsed model file (metadata, ggml tensor infos).
    pub fn file(&self) -> &GgufFile {
        &self.files[0]
    }

    /// The parsed mmproj file, when one was read.
    pub fn mmproj(&self) -> Option<&GgufFile> {
        self.files.get(1)
    }

    /// The GGUF tensor behind a Hugging Face name.
    pub fn gguf_tensor(&self, hf_name: &str) -> Option<&TensorInfo> {
        self.by_hf_name
            .get(hf_name)
            .map(|m| &self.files[m.part].tensors[m.index])
    }

    fn entry(&self, name: &str) -> Result<&Entry, ConvertError> {
        self.by_hf_name.get(name).ok_or_else(|| {
            ConvertError::Invalid(format!(
                "{}: no tensor '{name}'",
                self.files[0].path().display()
            ))
        })
    }
}

impl Source for GgufSource {
    fn family(&self) -> &str {
        &self.family
    }

    fn config(&self) -> &serde_json::Value {
        &self.config
    }

    fn tokenizer(&self) -> &TokenizerInfo {
        &self.tokenizer
    }

    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let m = self.entry(name)?;
        let file = &self.files[m.part];
        let info = &file.tensors[m.index];
        let mut values = file.dequantize(info)?;
        if m.plus_one_norm {
            for v in &mut values {
                *v -= 1.0;
            }
        }
        match m.transform {
            Transform::None | Transform::Reshape => {}
            Transform::Softplus => {
                for v in &mut values {
                    *v = inverse_softplus(*v);
                }
            }
            Transform::PatchEmbed => {
                let shape = info.torch_shape();
                values = unpermute_patch_embed(&values, shape[0], shape[2]);
            }
        }
        Ok(values)
    }

    fn source_files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path().to_path_buf()).collect()
    }

    fn supports_row_reads(&self) -> bool {
        true
    }

    /// Rows of a plain tensor are whole ggml blocks: dequantize only those bytes.
    fn read_f32_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>, ConvertError> {
        let m = self.entry(name)?;
        let file = &self.files[m.part];
        let info = &file.tensors[m.index];
        let cols = info.ne.first().copied().unwrap_or(1) as usize;
        let n_rows = (info.n_elements() as usize).checked_div(cols).unwrap_or(0);
        let (block, block_bytes) = info.ty.block();
        if m.transform != Transform::None
            || m.plus_one_norm
            || !cols.is_multiple_of(block)
            || rows.start > rows.end
            || rows.end > n_rows
        {
            let all = self.read_f32(name)?;
            return all
                .get(rows.start * cols..rows.end * cols)
                .map(<[f32]>::to_vec)
                .ok_or_else(|| {
                    ConvertError::Invalid(format!("rows {rows:?} out of range for '{name}'"))
                });
        }
        let row_bytes = cols / block * block_bytes;
        let bytes = file.tensor_bytes(info)?;
        let slice = &bytes[rows.start * row_bytes..rows.end * row_bytes];
        let mut out = vec![0f32; rows.len() * cols];
        dequant::dequantize_into(info.ty, slice, &mut out).map_err(|what| {
            ConvertError::Invalid(format!(
                "{}: tensor '{}': {what}",
                file.path().display(),
                info.name
            ))
        })?;
        Ok(out)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}
