//! Synthetic models: the real shapes and configs of Gemma 3 270M and Gemma 4 E2B (the text stack
//! alone, or with its vision and audio towers) with deterministic random weights, for benchmarks
//! and CI where no real weights exist.
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
pub const SHAPES: &[&str] = &["gemma3-270m", "gemma4-e2b", "gemma4-e2b-media"];

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
            "gemma4-e2b" => Self::gemma4_e2b(false)?,
            "gemma4-e2b-media" => Self::gemma4_e2b(true)?,
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

    /// Gemma 4 E2B text stack (gemma-spec §2.1, §3, §8): names under `model.language_model.`;
    /// with `media`, also the vision and audio towers and their embedders (§4, §5), else no
    /// tower config either. Gemma 4 norms multiply by w, so w ~ 1.
    fn gemma4_e2b(media: bool) -> Result<Self, ConvertError> {
        let mut config: Value = serde_json::from_str(E2B_CONFIG)
            .map_err(|e| ConvertError::Invalid(format!("embedded E2B config: {e}")))?;
        if let Some(obj) = config.as_object_mut()
            && !media
        {
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
        if media {
            let cfg = |k: &str| {
                s.config
                    .get(k)
                    .cloned()
                    .ok_or_else(|| ConvertError::Invalid(format!("embedded E2B config lacks {k}")))
            };
            let (vision, audio) = (cfg("vision_config")?, cfg("audio_config")?);
            s.add_vision(&vision, h)?;
            s.add_audio(&audio, h)?;
        }
        Ok(s)
    }

    /// A `Gemma4ClippableLinear`: `{prefix}.linear.weight [out, inp]` and its four scalar bounds.
    /// The real checkpoints store finite bounds (calibrated activation ranges); ±8 is wide for
    /// these normed, N(0, 0.02)-weighted activations, so it clips only outliers, as there.
    fn add_clipped(&mut self, prefix: &str, out: usize, inp: usize) {
        self.add(format!("{prefix}.linear.weight"), &[out, inp], Init::Weight);
        for (b, v) in [
            ("input_min", -8.0),
            ("input_max", 8.0),
            ("output_min", -8.0),
            ("output_max", 8.0),
        ] {
            self.add(format!("{prefix}.{b}"), &[], Init::Const(v));
        }
    }

    /// The E2B vision tower and `embed_vision` (gemma-spec §4).
    fn add_vision(&mut self, v: &Value, text_hidden: usize) -> Result<(), ConvertError> {
        let get = |k: &str| config_usize(v, "vision_config", k);
        let (h, ffn, layers) = (
            get("hidden_size")?,
            get("intermediate_size")?,
            get("num_hidden_layers")?,
        );
        let (heads, kv, hd) = (
            get("num_attention_heads")?,
            get("num_key_value_heads")?,
            get("head_dim")?,
        );
        let (patch, table) = (get("patch_size")?, get("position_embedding_size")?);
        let norm = Init::Norm { center: 1.0 };
        // The tower scores attention without 1/sqrt(hd): unit q/k norms would give logits of
        // std sqrt(64) = 8, a near-argmax softmax where rounding noise flips whole outputs
        // (1e-4 of pixel noise moved the soft tokens by 77%). ~0.35 gives logits of std ~1.
        let qk_norm = Init::Norm { center: 0.35 };
        let t = "model.vision_tower.";
        self.add(
            format!("{t}patch_embedder.position_embedding_table"),
            &[2, table, h],
            Init::Weight,
        );
        self.add(
            format!("{t}patch_embedder.input_proj.weight"),
            &[h, patch * patch * 3],
            Init::Weight,
        );
        for l in 0..layers {
            let p = format!("{t}encoder.layers.{l}.");
            self.add_clipped(&format!("{p}self_attn.q_proj"), heads * hd, h);
            self.add_clipped(&format!("{p}self_attn.k_proj"), kv * hd, h);
            self.add_clipped(&format!("{p}self_attn.v_proj"), kv * hd, h);
            self.add_clipped(&format!("{p}self_attn.o_proj"), h, heads * hd);
            self.add(format!("{p}self_attn.q_norm.weight"), &[hd], qk_norm);
            self.add(format!("{p}self_attn.k_norm.weight"), &[hd], qk_norm);
            self.add_clipped(&format!("{p}mlp.gate_proj"), ffn, h);
            self.add_clipped(&format!("{p}mlp.up_proj"), ffn, h);
            self.add_clipped(&format!("{p}mlp.down_proj"), h, ffn);
            for n in [
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            ] {
                self.add(format!("{p}{n}.weight"), &[h], norm);
            }
        }
        self.add(
            "model.embed_vision.embedding_projection.weight".into(),
            &[text_hidden, h],
            Init::Weight,
        );
        Ok(())
    }

    /// The E2B audio tower (USM conformer) and `embed_audio` (gemma-spec §5).
    fn add_audio(&mut self, a: &Value, text_hidden: usize) -> Result<(), ConvertError> {
        let get = |k: &str| config_usize(a, "audio_config", k);
        let (h, layers, heads) = (
            get("hidden_size")?,
            get("num_hidden_layers")?,
            get("num_attention_heads")?,
        );
        let (kernel, out_dims) = (get("conv_kernel_size")?, get("output_proj_dims")?);
        let channels: Vec<usize> = a
            .get("subsampling_conv_channels")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default();
        let [c0, c1] = channels[..] else {
            return Err(ConvertError::Invalid(
                "embedded E2B config: subsampling_conv_channels".into(),
            ));
        };
        // 128 mel bins, halved by each of the two stride-2 convolutions
        let sub_out = c1 * (MEL_BINS / 4);
        let norm = Init::Norm { center: 1.0 };
        let t = "model.audio_tower.";
        let sub = format!("{t}subsample_conv_projection.");
        self.add(
            format!("{sub}layer0.conv.weight"),
            &[c0, 1, 3, 3],
            Init::Weight,
        );
        self.add(format!("{sub}layer0.norm.weight"), &[c0], norm);
        self.add(
            format!("{sub}layer1.conv.weight"),
            &[c1, c0, 3, 3],
            Init::Weight,
        );
        self.add(format!("{sub}layer1.norm.weight"), &[c1], norm);
        self.add(
            format!("{sub}input_proj_linear.weight"),
            &[h, sub_out],
            Init::Weight,
        );
        for l in 0..layers {
            let p = format!("{t}layers.{l}.");
            for f in ["feed_forward1", "feed_forward2"] {
                self.add_clipped(&format!("{p}{f}.ffw_layer_1"), 4 * h, h);
                self.add_clipped(&format!("{p}{f}.ffw_layer_2"), h, 4 * h);
                self.add(format!("{p}{f}.pre_layer_norm.weight"), &[h], norm);
                self.add(format!("{p}{f}.post_layer_norm.weight"), &[h], norm);
            }
            // softplus(~0) = ln 2: the per-dimension query scale stays near its init
            self.add(
                format!("{p}self_attn.per_dim_scale"),
                &[h / heads],
                Init::Weight,
            );
            for n in ["q_proj", "k_proj", "v_proj", "post"] {
                self.add_clipped(&format!("{p}self_attn.{n}"), h, h);
            }
            self.add(
                format!("{p}self_attn.relative_k_proj.weight"),
                &[h, h],
                Init::Weight,
            );
            self.add_clipped(&format!("{p}lconv1d.linear_start"), 2 * h, h);
            self.add_clipped(&format!("{p}lconv1d.linear_end"), h, h);
            self.add(
                format!("{p}lconv1d.depthwise_conv1d.weight"),
                &[h, 1, kernel],
                Init::Weight,
            );
            for n in ["lconv1d.pre_layer_norm", "lconv1d.conv_norm"] {
                self.add(format!("{p}{n}.weight"), &[h], norm);
            }
            for n in ["norm_pre_attn", "norm_post_attn", "norm_out"] {
                self.add(format!("{p}{n}.weight"), &[h], norm);
            }
        }
        self.add(
            format!("{t}output_proj.weight"),
            &[out_dims, h],
            Init::Weight,
        );
        self.add(format!("{t}output_proj.bias"), &[out_dims], Init::Weight);
        self.add(
            "model.embed_audio.embedding_projection.weight".into(),
            &[text_hidden, out_dims],
            Init::Weight,
        );
        Ok(())
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

/// Mel bins of the audio feature extractor (the subsampler's input height).
const MEL_BINS: usize = 128;

/// `section[k]` of a config section, as usize.
fn config_usize(section: &Value, name: &str, k: &str) -> Result<usize, ConvertError> {
    section
        .get(k)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| ConvertError::Invalid(format!("embedded E2B {name} lacks {k}")))
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
    fn gemma4_e2b_media_adds_both_towers() {
        let s = SyntheticSource::open("gemma4-e2b-media").unwrap();
        let count = |prefix: &str| -> usize {
            s.tensors()
                .iter()
                .filter(|t| t.name.starts_with(prefix))
                .map(|t| t.shape.iter().product::<usize>())
                .sum()
        };
        // Element counts of the real checkpoint (gemma-4-e2b-tensors.txt; scalars count 1).
        assert_eq!(count("model.vision_tower."), 167_365_056);
        assert_eq!(count("model.audio_tower."), 304_825_088);
        assert_eq!(count("model.embed_vision."), 1_179_648);
        assert_eq!(count("model.embed_audio."), 2_359_296);
        assert_eq!(count("model."), 5_104_298_467);
        assert!(s.config().get("vision_config").is_some());
        assert!(s.config().get("audio_config").is_some());
        let shape = |n: &str| s.shape(n).unwrap().to_vec();
        assert_eq!(
            shape("model.vision_tower.patch_embedder.position_embedding_table"),
            [2, 10240, 768]
        );
        assert_eq!(
            shape("model.audio_tower.subsample_conv_projection.input_proj_linear.weight"),
            [1024, 1024]
        );
        assert_eq!(
            shape("model.audio_tower.layers.11.lconv1d.depthwise_conv1d.weight"),
            [1024, 1, 5]
        );
        // finite clip bounds, norm weights near 1
        let lo = "model.vision_tower.encoder.layers.15.mlp.down_proj.input_min";
        assert_eq!(shape(lo), Vec::<usize>::new());
        assert_eq!(s.read_f32(lo).unwrap(), [-8.0]);
        let w = s
            .read_f32("model.audio_tower.layers.0.norm_out.weight")
            .unwrap();
        assert!(w.iter().all(|v| (v - 1.0).abs() <= 0.05));
        assert_eq!(SHAPES.len(), 3);
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
