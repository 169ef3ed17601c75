//! [`GgufSource`]: a llama.cpp Gemma 3 GGUF presented as a Hugging Face `Gemma3ForCausalLM`
//! checkpoint (names, PyTorch shapes, norm weights without the +1, config.json, tokenizer.json).

use super::config::gemma3_config;
use super::dequant;
use super::names::gemma3_hf_name;
use super::parse::{GgufFile, GgufValue, TensorInfo};
use super::vocab::tokenizer_info;
use crate::error::ConvertError;
use crate::source::{Source, SourceTensor};
use cellm_engine::format::TokenizerInfo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Mapping {
    /// Index into the file's tensor list.
    index: usize,
    plus_one_norm: bool,
}

pub struct GgufSource {
    file: GgufFile,
    family: String,
    config: serde_json::Value,
    tokenizer: TokenizerInfo,
    tensors: Vec<SourceTensor>,
    by_hf_name: HashMap<String, Mapping>,
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("file", &self.file)
            .field("family", &self.family)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<GgufSource, ConvertError> {
        let file = GgufFile::open(path)?;
        let arch = file
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| {
                ConvertError::Invalid(format!(
                    "{}: no general.architecture in the GGUF metadata",
                    path.display()
                ))
            })?
            .to_string();
        match arch.as_str() {
            "gemma3" => {}
            "gemma4" => {
                return Err(ConvertError::Invalid(format!(
                    "{}: Gemma 4 GGUF files are not supported yet (per-layer embeddings, shared KV \
                     and mixed head sizes have no settled llama.cpp layout); convert the Hugging Face \
                     checkpoint instead",
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
            if !dequant::is_supported(t.ty) {
                return Err(ConvertError::Invalid(format!(
                    "{}: tensor '{}' is stored as {}, which cellm cannot dequantize (supported: F32, \
                     F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K)",
                    path.display(),
                    t.name,
                    t.ty
                )));
            }
            tensors.push(SourceTensor {
                name: hf.name.clone(),
                shape: t.torch_shape(),
            });
            by_hf_name.insert(
                hf.name,
                Mapping {
                    index,
                    plus_one_norm: hf.plus_one_norm,
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
            file,
            family: "gemma3".to_string(),
            config,
            tokenizer,
            tensors,
            by_hf_name,
        })
    }

    /// The parsed file (metadata, ggml tensor infos).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The GGUF tensor behind a Hugging Face name.
    pub fn gguf_tensor(&self, hf_name: &str) -> Option<&TensorInfo> {
        self.by_hf_name
            .get(hf_name)
            .map(|m| &self.file.tensors[m.index])
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
        let m = self.by_hf_name.get(name).ok_or_else(|| {
            ConvertError::Invalid(format!(
                "{}: no tensor '{name}'",
                self.file.path().display()
            ))
        })?;
        let mut values = self.file.dequantize(&self.file.tensors[m.index])?;
        if m.plus_one_norm {
            // llama.cpp stores Gemma RMSNorm weights as 1 + w; Hugging Face keeps w.
            for v in &mut values {
                *v -= 1.0;
            }
        }
        Ok(values)
    }

    fn source_files(&self) -> Vec<PathBuf> {
        vec![self.file.path().to_path_buf()]
    }
}
