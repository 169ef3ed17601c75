//! Synthetic models: the real shapes and configs of Gemma 3 270M and the Gemma 4 E2B text stack
//! with deterministic random weights, for benchmarks and CI where no real weights exist.
//! Nothing is held in memory: every row is generated on demand from (tensor name, row index).

use super::{Source, SourceTensor};
use crate::error::ConvertError;
use cellm_engine::format::TokenizerInfo;
use cellm_engine::tensor::rows_cols;
use rayon::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

const E2B_CONFIG: &str = include_str!("gemma-4-e2b-config.json");

/// Names accepted after `synthetic:`.
pub const SHAPES: &[&str] = &["gemma3-270m", "gemma4-e2b"];

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// Uniform with the standard deviation of N(0, 0.02).
    Weight,
    /// `center` plus small noise (norm weights).
    Norm { center: f32 },
    /// Exactly this value.
    Const(f32),
}

pub struct SyntheticSource {
    shape_name: String,
    family: String,
    config: Value,
    tokenizer: TokenizerInfo,
    tensors: Vec<SourceTensor>,
    inits: BTreeMap<String, Init>,
}

impl SyntheticSource {
    /// `spec` is what follows `synthetic:`, e.g. "gemma3-270m".
    pub fn open(spec: &str) -> Result<Self, ConvertError> {
        let mut s = match spec {
            "gemma3-270m" => Self::gemma3_270m(),
            "gemma4-e2b" => Self::gemma4_e2b()?,
            other => {
                return Err(ConvertError::Invalid(format!(
                    "unknown synthetic model '{other}'; available: {}",
                    SHAPES
                        .iter()
                        .map(|s| format!("synthetic:{s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        s.shape_name = spec.to_owned();
        Ok(s)
    }

    fn new(family: &str, config: Value, tokenizer: TokenizerInfo) -> Self {
        Self {
            shape_name: String::new(),
            family: family.to_owned(),
            config,
            tokenizer,
            tensors: Vec::new(),
            inits: BTreeMap::new(),
        }
    }

    fn add(&mut self, name: String, shape: &[usize], init: Init) {
        self.inits.insert(name.clone(), init);
        self.tensors.push(SourceTensor {
            name,
            shape: shape.to_vec(),
        });
    }

    /// Gemma 3 270M (gemma-spec §9/§10). Gemma 3 norms multiply by (1 + w), so w ~ 0.
    fn gemma3_270m() -> Self {
        let (h, layers, heads, kv, hd, ffn, vocab) = (640, 18, 4, 1, 256, 2048, 262144);
        let layer_types: Vec<&str> = (0..layers)
            .map(|l| {
                if (l + 1usize).is_multiple_of(6) {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            })
            .collect();
        let config = json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_size": h,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": hd,
            "intermediate_size": ffn,
            "vocab_size": vocab,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "sliding_window": 512,
            "sliding_window_pattern": 6,
            "layer_types": layer_types,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "rope_scaling": null,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}
            },
            "query_pre_attn_scalar": 256,
            "attn_logit_softcapping": null,
            "final_logit_softcapping": null,
            "attention_bias": false,
            "tie_word_embeddings": true,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2
        });
        let mut s = Self::new("gemma3", config, synthetic_tokenizer(vocab, vec![1, 106]));
        let norm = Init::Norm { center: 0.0 };
        s.add(
            "model.embed_tokens.weight".into(),
            &[vocab, h],
            Init::Weight,
        );
        for l in 0..layers {
            let p = format!("model.layers.{l}.");
            s.add(format!("{p}input_layernorm.weight"), &[h], norm);
            s.add(
                format!("{p}self_attn.q_proj.weight"),
                &[heads * hd, h],
                Init::Weight,
            );
            s.add(
                format!("{p}self_attn.k_proj.weight"),
                &[kv * hd, h],
                Init::Weight,
            );
            s.add(
                format!("{p}self_attn.v_proj.weight"),
                &[kv * hd, h],
                Init::Weight,
            );
            s.add(
                format!("{p}self_attn.o_proj.weight"),
                &[h, heads * hd],
                Init::Weight,
            );
            s.add(format!("{p}self_attn.q_norm.weight"), &[hd], norm);
            s.add(format!("{p}self_attn.k_norm.weight"), &[hd], norm);
            s.add(format!("{p}post_attention_layernorm.weight"), &[h], norm);
            s.add(format!("{p}pre_feedforward_layernorm.weight"), &[h], norm);
            s.add(format!("{p}post_feedforward_layernorm.weight"), &[h], norm);
            s.add(format!("{p}mlp.gate_proj.weight"), &[ffn, h], Init::Weight);
            s.add(format!("{p}mlp.up_proj.weight"), &[ffn, h], Init::Weight);
            s.add(format!("{p}mlp.down_proj.weight"), &[h, ffn], Init::Weight);
        }
        s.add("model.norm.weight".into(), &[h], norm);
        s
    }

    /// Gemma 4 E2B text stack (gemma-spec §2.1, §3, §8): names under `model.language_model.`,
    /// no vision/audio towers. Gemma 4 norms multiply by w, so w ~ 1.
    fn gemma4_e2b() -> Result<Self, ConvertError> {
        let mut config: Value = serde_json::from_str(E2B_CONFIG)
            .map_err(|e| ConvertError::Invalid(format!("embedded E2B config: {e}")))?;
        if let Some(obj) = config.as_object_mut() {
            // Text only: the engine must not look for towers that are not there.
            obj.remove("vision_config");
            obj.remove("audio_config");
        }
        let text = config.get("text_config").cloned().ok_or_else(|| {
            ConvertError::Invalid("embedded E2B config has no text_config".into())
        })?;
        let get = |k: &str| -> Result<usize, ConvertError> {
            text.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| ConvertError::Invalid(format!("embedded E2B config lacks {k}")))
        };
        let h = get("hidden_size")?;
        let layers = get("num_hidden_layers")?;
        let heads = get("num_attention_heads")?;
        let kv = get("num_key_value_heads")?;
        let hd = get("head_dim")?;
        let ghd = get("global_head_dim")?;
        let ffn = get("intermediate_size")?;
        let vocab = get("vocab_size")?;
        let ple_vocab = get("vocab_size_per_layer_input")?;
        let p = get("hidden_size_per_layer_input")?;
        let shared = get("num_kv_shared_layers")?;
        let double = text
            .get("use_double_wide_mlp")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let types: Vec<String> = text
            .get("layer_types")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if types.len() != layers {
            return Err(ConvertError::Invalid(
                "embedded E2B config: layer_types length".into(),
            ));
        }
        let first_shared = layers - shared;

        let mut s = Self::new("gemma4", config, synthetic_tokenizer(vocab, vec![1, 106]));
        s.tokenizer.special_tokens = [
            ("boi", 255999),
            ("eoi", 258882),
            ("image", 258880),
            ("video", 258884),
            ("audio", 258881),
            ("boa", 256000),
            ("eoa", 258883),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let norm = Init::Norm { center: 1.0 };
        let m = "model.language_model.";
        s.add(format!("{m}embed_tokens.weight"), &[vocab, h], Init::Weight);
        for (l, layer_type) in types.iter().enumerate() {
            let d = if layer_type == "full_attention" {
                ghd
            } else {
                hd
            };
            let w = if double && l >= first_shared {
                2 * ffn
            } else {
                ffn
            };
            let q = format!("{m}layers.{l}.");
            s.add(format!("{q}layer_scalar"), &[1], Init::Const(1.0));
            s.add(
                format!("{q}self_attn.q_proj.weight"),
                &[heads * d, h],
                Init::Weight,
            );
            s.add(format!("{q}self_attn.q_norm.weight"), &[d], norm);
            if l < first_shared {
                s.add(format!("{q}self_attn.k_norm.weight"), &[d], norm);
                s.add(
                    format!("{q}self_attn.k_proj.weight"),
                    &[kv * d, h],
                    Init::Weight,
                );
                s.add(
                    format!("{q}self_attn.v_proj.weight"),
                    &[kv * d, h],
                    Init::Weight,
                );
            }
            s.add(
                format!("{q}self_attn.o_proj.weight"),
                &[h, heads * d],
                Init::Weight,
            );
            s.add(format!("{q}mlp.gate_proj.weight"), &[w, h], Init::Weight);
            s.add(format!("{q}mlp.up_proj.weight"), &[w, h], Init::Weight);
            s.add(format!("{q}mlp.down_proj.weight"), &[h, w], Init::Weight);
            for n in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                s.add(format!("{q}{n}.weight"), &[h], norm);
            }
            s.add(
                format!("{q}per_layer_input_gate.weight"),
                &[p, h],
                Init::Weight,
            );
            s.add(
                format!("{q}per_layer_projection.weight"),
                &[h, p],
                Init::Weight,
            );
            s.add(format!("{q}post_per_layer_input_norm.weight"), &[h], norm);
        }
        s.add(format!("{m}norm.weight"), &[h], norm);
        s.add(
            format!("{m}embed_tokens_per_layer.weight"),
            &[ple_vocab, layers * p],
            Init::Weight,
        );
        s.add(
            format!("{m}per_layer_model_projection.weight"),
            &[layers * p, h],
            Init::Weight,
        );
        s.add(format!("{m}per_layer_projection_norm.weight"), &[p], norm);
        Ok(s)
    }

    fn shape(&self, name: &str) -> Result<&[usize], ConvertError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| ConvertError::Invalid(format!("tensor '{name}' is not in the source")))
    }
}

impl Source for SyntheticSource {
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
        let rows = rows_cols(self.shape(name)?).0;
        self.read_f32_rows(name, 0..rows)
    }
    fn source_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn supports_row_reads(&self) -> bool {
        true
    }
    fn read_f32_rows(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>, ConvertError> {
        let (nrows, cols) = rows_cols(self.shape(name)?);
        if rows.start > rows.end || rows.end > nrows {
            return Err(ConvertError::Invalid(format!(
                "rows {rows:?} out of range for '{name}' ({nrows} rows)"
            )));
        }
        let init = self.inits.get(name).copied().unwrap_or(Init::Weight);
        let seed = fnv1a(name.as_bytes());
        let mut out = vec![0f32; (rows.end - rows.start) * cols];
        out.par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(i, row)| fill_row(row, seed, (rows.start + i) as u64, init));
        Ok(out)
    }
    fn notes(&self) -> Vec<String> {
        vec![format!(
            "synthetic:{}: real shapes, random weights (for benchmarks only; the output is noise)",
            self.shape_name
        )]
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64: decorrelates the (tensor, row) seed before the xorshift stream.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill_row(row: &mut [f32], seed: u64, r: u64, init: Init) {
    let mut x = splitmix(seed ^ r.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1;
    let mut uniform = move || {
        // xorshift64*: fast, good enough for weights nobody trains.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let bits = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    // Uniform on [-a, a] has std a/sqrt(3): a = 0.02 * sqrt(3) matches N(0, 0.02).
    const A: f32 = 0.034_641;
    match init {
        Init::Weight => row.iter_mut().for_each(|v| *v = uniform() * A),
        Init::Norm { center } => row.iter_mut().for_each(|v| *v = center + uniform() * 0.05),
        Init::Const(c) => row.fill(c),
    }
}

/// A WordLevel tokenizer.json with `vocab` entries: `<pad>`, `<eos>`, `<bos>`, `<unk>` at ids
/// 0..3 and `<tN>` for every other id N.
pub fn synthetic_tokenizer_json(vocab: usize) -> String {
    let specials = ["<pad>", "<eos>", "<bos>", "<unk>"];
    let mut s = String::with_capacity(vocab * 16 + 1024);
    s.push_str(r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":["#);
    for (i, t) in specials.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"content":"{t}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#
        ));
    }
    s.push_str(r#"],"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"#);
    for i in 0..vocab {
        if i > 0 {
            s.push(',');
        }
        match specials.get(i) {
            Some(t) => s.push_str(&format!(r#""{t}":{i}"#)),
            None => s.push_str(&format!(r#""<t{i}>":{i}"#)),
        }
    }
    s.push_str(r#"},"unk_token":"<unk>"}}"#);
    s
}

fn synthetic_tokenizer(vocab: usize, eos: Vec<u32>) -> TokenizerInfo {
    TokenizerInfo {
        tokenizer_json: synthetic_tokenizer_json(vocab),
        chat_template: None,
        bos_token_id: Some(2),
        eos_token_ids: eos,
        pad_token_id: Some(0),
        add_bos: true,
        special_tokens: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_270m_param_count() {
        let s = SyntheticSource::open("gemma3-270m").unwrap();
        let n: usize = s
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        // 268 098 176 parameters (google/gemma-3-270m; tied head).
        assert_eq!(n, 268_098_176);
        assert_eq!(s.tensors().len(), 1 + 18 * 13 + 1);
    }

    #[test]
    fn gemma4_e2b_language_model_count() {
        let s = SyntheticSource::open("gemma4-e2b").unwrap();
        let n: usize = s
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        // Spec §2.4: language model 4 628 569 379 parameters.
        assert_eq!(n, 4_628_569_379);
        assert_eq!(s.family(), "gemma4");
        assert!(s.config().get("vision_config").is_none());
    }

    #[test]
    fn rows_are_deterministic_and_consistent() {
        let s = SyntheticSource::open("gemma3-270m").unwrap();
        let name = "model.layers.3.mlp.up_proj.weight";
        let all = s.read_f32(name).unwrap();
        let part = s.read_f32_rows(name, 100..110).unwrap();
        assert_eq!(&all[100 * 640..110 * 640], part.as_slice());
        let mean = all.iter().sum::<f32>() / all.len() as f32;
        let var = all.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / all.len() as f32;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 1e-3,
            "{mean} {var}"
        );
        assert!(SyntheticSource::open("llama").is_err());
    }

    #[test]
    fn tokenizer_json_is_valid() {
        let j: Value = serde_json::from_str(&synthetic_tokenizer_json(300)).unwrap();
        let vocab = j["model"]["vocab"].as_object().unwrap();
        assert_eq!(vocab.len(), 300);
        assert_eq!(vocab["<bos>"], 2);
        assert_eq!(vocab["<t299>"], 299);
    }
}
