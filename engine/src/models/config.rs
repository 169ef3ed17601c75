//! Text-stack configuration read from the `.cellm` header's `config` (the source `config.json`).
//!
//! Field names follow the Hugging Face configs (`Gemma3TextConfig`, `Gemma4TextConfig`). Both the
//! transformers 5 form (`rope_parameters` keyed by layer type, `per_layer_config`) and the older
//! one (`rope_theta` / `rope_local_base_freq` / `rope_scaling`, `global_head_dim`,
//! `sliding_window_pattern`) are accepted. [`TextConfig`] is the resolved, per-layer view the
//! models run from: behaviour comes from here, never from the family name.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("model config: {0}")]
    Invalid(String),
    #[error("model config: {0}")]
    Json(#[from] serde_json::Error),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// One entry of `rope_parameters` (or the legacy `rope_scaling`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Linear scaling factor (`rope_type = "linear"`).
    #[serde(default)]
    pub factor: Option<f64>,
}

/// Per-layer overrides (`per_layer_config` in transformers 5 Gemma 4 configs).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LayerOverride {
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
}

/// The raw text config as serialized by transformers (Gemma 3 text or Gemma 4 `text_config`).
#[derive(Clone, Debug, Deserialize)]
pub struct RawTextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default, alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: Option<usize>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    // Gemma 4 only.
    #[serde(default)]
    pub global_head_dim: Option<usize>,
    #[serde(default)]
    pub per_layer_config: Option<BTreeMap<String, LayerOverride>>,
    #[serde(default)]
    pub hidden_size_per_layer_input: Option<usize>,
    #[serde(default)]
    pub vocab_size_per_layer_input: Option<usize>,
    #[serde(default)]
    pub num_kv_shared_layers: Option<usize>,
    #[serde(default)]
    pub use_double_wide_mlp: Option<bool>,
    #[serde(default)]
    pub attention_k_eq_v: Option<bool>,
    #[serde(default)]
    pub enable_moe_block: Option<bool>,
    #[serde(default)]
    pub use_bidirectional_attention: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}

/// Attention kind of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerType {
    Sliding,
    Full,
}

impl LayerType {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "sliding_attention" => Ok(LayerType::Sliding),
            "full_attention" => Ok(LayerType::Full),
            other => Err(invalid(format!("unsupported layer type '{other}'"))),
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            LayerType::Sliding => "sliding_attention",
            LayerType::Full => "full_attention",
        }
    }
}

/// KV-sharing role of a layer (transformers' `kv_sharing_modes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvRole {
    /// Computes and caches its own K/V.
    Own,
    /// Attends over the K/V of the given (earlier) layer; computes no K/V itself.
    Reuse(usize),
}

/// RoPE of one layer, resolved to inverse frequencies (float32, as transformers builds them).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    /// `head_dim / 2` entries; zeros where a dimension pair is not rotated.
    pub inv_freq: Vec<f32>,
}

impl RopeSpec {
    /// `inv_freq[i] = 1 / theta^(2i / denom) / factor` for `i < n_rot`, zero for `n_rot <= i < half`.
    pub fn new(theta: f64, denom: usize, n_rot: usize, half: usize, factor: f64) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..half)
            .map(|i| {
                if i < n_rot {
                    // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in f32.
                    let e = (2 * i) as f32 / denom as f32;
                    (1.0f32 / theta.powf(e)) / factor as f32
                } else {
                    0.0
                }
            })
            .collect();
        Self { inv_freq }
    }
}

/// Resolved per-layer facts.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub layer_type: LayerType,
    pub head_dim: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    /// Sliding layers: the key window (current token plus `window - 1` previous ones).
    pub window: Option<usize>,
    pub rope: RopeSpec,
    pub kv: KvRole,
}

/// Everything the text stacks need, resolved from the raw config.
#[derive(Clone, Debug)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub vocab_size: usize,
    pub eps: f32,
    pub max_position: usize,
    /// Multiplies q·k before the softmax.
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Per-layer embedding width (Gemma 4 PLE); 0 when absent.
    pub per_layer_input: usize,
    pub layers: Vec<LayerSpec>,
}

impl TextConfig {
    /// Attention shape and behaviour of one layer, for the attention kernels.
    pub fn attn_params(&self, spec: &LayerSpec) -> crate::kernels::cpu::attention::AttnParams {
        crate::kernels::cpu::attention::AttnParams {
            n_heads: self.num_heads,
            n_kv_heads: spec.num_kv_heads,
            head_dim: spec.head_dim,
            window: spec.window,
            scale: self.attn_scale,
            softcap: self.attn_softcap,
        }
    }

    /// Widest query, key/value and MLP rows over all layers: the sizes of the scratch buffers.
    pub fn max_widths(&self) -> (usize, usize, usize) {
        let max = |f: &dyn Fn(&LayerSpec) -> usize| self.layers.iter().map(f).max().unwrap_or(0);
        (
            max(&|l| self.num_heads * l.head_dim),
            max(&|l| l.num_kv_heads * l.head_dim),
            max(&|l| l.intermediate_size),
        )
    }

    /// Largest sliding window over the sliding layers (0 if none).
    pub fn max_window(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|l| l.window)
            .max()
            .unwrap_or(0)
    }
}

/// Picks the text part of a header config (`text_config` when present).
pub fn text_part(config: &serde_json::Value) -> &serde_json::Value {
    config.get("text_config").unwrap_or(config)
}

fn rope_param_for(raw: &RawTextConfig, lt: LayerType) -> Result<RopeParameters, ConfigError> {
    if let Some(v) = &raw.rope_parameters {
        // Keyed by layer type (transformers 5), or a single flat entry.
        if let Some(entry) = v.get(lt.key()) {
            return Ok(serde_json::from_value(entry.clone())?);
        }
        if v.get("rope_theta").is_some() || v.get("rope_type").is_some() {
            let mut p: RopeParameters = serde_json::from_value(v.clone())?;
            if lt == LayerType::Sliding {
                // A flat entry describes the global RoPE; local layers use the local base.
                p.rope_theta = raw.rope_local_base_freq.or(Some(10_000.0));
                p.rope_type = Some("default".into());
                p.factor = None;
            }
            return Ok(p);
        }
    }
    // Legacy Gemma 3 fields.
    Ok(match lt {
        LayerType::Sliding => RopeParameters {
            rope_type: Some("default".into()),
            rope_theta: Some(raw.rope_local_base_freq.unwrap_or(10_000.0)),
            ..Default::default()
        },
        LayerType::Full => {
            let mut p = raw.rope_scaling.clone().unwrap_or_default();
            p.rope_theta = Some(raw.rope_theta.unwrap_or(1_000_000.0));
            if p.rope_type.is_none() {
                p.rope_type = Some("default".into());
            }
            p
        }
    })
}

fn resolve_rope(p: &RopeParameters, head_dim: usize) -> Result<RopeSpec, ConfigError> {
    check_rope(p)?;
    let theta = p
        .rope_theta
        .ok_or_else(|| invalid("rope_parameters entry without rope_theta"))?;
    let half = head_dim / 2;
    match p.rope_type.as_deref().unwrap_or("default") {
        "default" => Ok(RopeSpec::new(theta, head_dim, half, half, 1.0)),
        "linear" => Ok(RopeSpec::new(
            theta,
            head_dim,
            half,
            half,
            p.factor.unwrap_or(1.0),
        )),
        "proportional" => {
            // Exponent over the full head_dim; only the first n_rot pairs rotate.
            let factor = p.partial_rotary_factor.unwrap_or(1.0);
            let n_rot = ((factor * head_dim as f64) as usize) / 2;
            Ok(RopeSpec::new(theta, head_dim, n_rot.min(half), half, 1.0))
        }
        other => Err(invalid(format!("unsupported rope_type '{other}'"))),
    }
}

fn layer_types(
    raw: &RawTextConfig,
    default_pattern: usize,
    force_last_full: bool,
) -> Result<Vec<LayerType>, ConfigError> {
    let n = raw.num_hidden_layers;
    let mut types = match &raw.layer_types {
        Some(v) => {
            if v.len() != n {
                return Err(invalid(format!(
                    "layer_types has {} entries for {n} layers",
                    v.len()
                )));
            }
            v.iter()
                .map(|s| LayerType::parse(s))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let p = raw.sliding_window_pattern.unwrap_or(default_pattern).max(1);
            (0..n)
                .map(|i| {
                    if (i + 1) % p == 0 {
                        LayerType::Full
                    } else {
                        LayerType::Sliding
                    }
                })
                .collect()
        }
    };
    if force_last_full && let Some(last) = types.last_mut() {
        *last = LayerType::Full;
    }
    Ok(types)
}

/// Upper bounds on the numbers a config may declare (FORMAT.md, "Config bounds"). They sit far
/// above every released Gemma (E2B: 35 layers, hidden 1536, head_dim 512, vocab 262144) and far
/// below what would make the first allocation sized from them abort the process. The tensors
/// present are checked against the resolved config when the model loads.
pub mod bounds {
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_HIDDEN: usize = 1 << 16;
    pub const MAX_INTERMEDIATE: usize = 1 << 20;
    pub const MAX_HEADS: usize = 1024;
    pub const MAX_HEAD_DIM: usize = 4096;
    pub const MAX_VOCAB: usize = 1 << 22;
    pub const MAX_POSITIONS: usize = 1 << 24;
    pub const MAX_WINDOW: usize = 1 << 24;
}

/// Checks every number of a raw text config against [`bounds`] and for sanity (finite, positive
/// where a zero or negative value would silently give garbage). Called by the model loaders
/// and by the converter before a header is written.
pub fn check_bounds(raw: &RawTextConfig) -> Result<(), ConfigError> {
    use bounds::*;
    let range = |name: &str, v: usize, lo: usize, hi: usize| {
        if v < lo || v > hi {
            Err(invalid(format!("{name} = {v} is outside {lo}..={hi}")))
        } else {
            Ok(())
        }
    };
    let head_dim = |name: &str, v: usize| {
        range(name, v, 2, MAX_HEAD_DIM)?;
        if !v.is_multiple_of(2) {
            return Err(invalid(format!("{name} = {v} is odd (RoPE needs pairs)")));
        }
        Ok(())
    };
    let positive = |name: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(invalid(format!("{name} = {x} must be finite and positive")))
        }
        _ => Ok(()),
    };
    range("num_hidden_layers", raw.num_hidden_layers, 1, MAX_LAYERS)?;
    range("hidden_size", raw.hidden_size, 1, MAX_HIDDEN)?;
    range(
        "intermediate_size",
        raw.intermediate_size,
        1,
        MAX_INTERMEDIATE,
    )?;
    range("num_attention_heads", raw.num_attention_heads, 1, MAX_HEADS)?;
    range("num_key_value_heads", raw.num_key_value_heads, 1, MAX_HEADS)?;
    range("vocab_size", raw.vocab_size, 1, MAX_VOCAB)?;
    if let Some(d) = raw.head_dim {
        head_dim("head_dim", d)?;
    }
    if let Some(d) = raw.global_head_dim {
        head_dim("global_head_dim", d)?;
    }
    for (layer, o) in raw.per_layer_config.iter().flatten() {
        if let Some(d) = o.head_dim {
            head_dim(&format!("per_layer_config[{layer}].head_dim"), d)?;
        }
        if let Some(h) = o.num_key_value_heads {
            range(
                &format!("per_layer_config[{layer}].num_key_value_heads"),
                h,
                1,
                MAX_HEADS,
            )?;
        }
    }
    if let Some(w) = raw.sliding_window {
        range("sliding_window", w, 1, MAX_WINDOW)?;
    }
    if let Some(p) = raw.max_position_embeddings {
        range("max_position_embeddings", p, 1, MAX_POSITIONS)?;
    }
    if let Some(p) = raw.sliding_window_pattern {
        range("sliding_window_pattern", p, 0, MAX_LAYERS)?;
    }
    if let Some(n) = raw.hidden_size_per_layer_input {
        range("hidden_size_per_layer_input", n, 0, MAX_HIDDEN)?;
    }
    if let Some(n) = raw.vocab_size_per_layer_input {
        range("vocab_size_per_layer_input", n, 0, MAX_VOCAB)?;
    }
    if let Some(n) = raw.num_kv_shared_layers {
        range("num_kv_shared_layers", n, 0, raw.num_hidden_layers)?;
    }
    // eps is added to a mean of squares: zero divides by zero on a zero row, negative gives NaN.
    if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps > 0.0 && raw.rms_norm_eps < 1.0) {
        return Err(invalid(format!(
            "rms_norm_eps = {} must be in (0, 1)",
            raw.rms_norm_eps
        )));
    }
    positive("rope_theta", raw.rope_theta)?;
    positive("rope_local_base_freq", raw.rope_local_base_freq)?;
    positive("query_pre_attn_scalar", raw.query_pre_attn_scalar)?;
    positive("final_logit_softcapping", raw.final_logit_softcapping)?;
    positive("attn_logit_softcapping", raw.attn_logit_softcapping)?;
    Ok(())
}

/// Checks a RoPE entry's numbers (theta and factor finite and positive, the rotary fraction in
/// [0, 1]).
fn check_rope(p: &RopeParameters) -> Result<(), ConfigError> {
    let bad = |name: &str, x: f64| invalid(format!("rope {name} = {x} is out of range"));
    if let Some(t) = p.rope_theta
        && !(t.is_finite() && t > 0.0)
    {
        return Err(bad("rope_theta", t));
    }
    if let Some(f) = p.factor
        && !(f.is_finite() && f > 0.0)
    {
        return Err(bad("factor", f));
    }
    if let Some(f) = p.partial_rotary_factor
        && !(0.0..=1.0).contains(&f)
    {
        return Err(bad("partial_rotary_factor", f));
    }
    Ok(())
}

/// Parses and bounds-checks the text part of a header or source config (see [`check_bounds`]).
pub fn check_config(config: &serde_json::Value) -> Result<(), ConfigError> {
    let raw: RawTextConfig = serde_json::from_value(text_part(config).clone())?;
    check_bounds(&raw)
}

fn check_common(raw: &RawTextConfig) -> Result<(), ConfigError> {
    check_bounds(raw)?;
    if raw.num_attention_heads == 0 || raw.num_key_value_heads == 0 || raw.num_hidden_layers == 0 {
        return Err(invalid("zero heads or layers"));
    }
    if !raw
        .num_attention_heads
        .is_multiple_of(raw.num_key_value_heads)
    {
        return Err(invalid(
            "num_attention_heads is not a multiple of num_key_value_heads",
        ));
    }
    if let Some(act) = &raw.hidden_activation
        && act != "gelu_pytorch_tanh"
        && act != "gelu_tanh"
    {
        return Err(invalid(format!("unsupported hidden_activation '{act}'")));
    }
    Ok(())
}

/// Gemma 3 text (`Gemma3TextConfig`).
pub fn gemma3(config: &serde_json::Value) -> Result<TextConfig, ConfigError> {
    let raw: RawTextConfig = serde_json::from_value(text_part(config).clone())?;
    check_common(&raw)?;
    let head_dim = raw.head_dim.unwrap_or(256);
    let types = layer_types(&raw, 6, false)?;
    let window = raw.sliding_window.unwrap_or(4096);
    let layers = types
        .iter()
        .map(|&lt| {
            Ok(LayerSpec {
                layer_type: lt,
                head_dim,
                num_kv_heads: raw.num_key_value_heads,
                intermediate_size: raw.intermediate_size,
                window: (lt == LayerType::Sliding).then_some(window),
                rope: resolve_rope(&rope_param_for(&raw, lt)?, head_dim)?,
                kv: KvRole::Own,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let qpas = raw.query_pre_attn_scalar.unwrap_or(head_dim as f64);
    Ok(TextConfig {
        hidden_size: raw.hidden_size,
        num_layers: raw.num_hidden_layers,
        num_heads: raw.num_attention_heads,
        vocab_size: raw.vocab_size,
        eps: raw.rms_norm_eps as f32,
        max_position: raw.max_position_embeddings.unwrap_or(131_072),
        attn_scale: qpas.powf(-0.5) as f32,
        // transformers 5 accepts attn_logit_softcapping for Gemma 3 but does not apply it.
        attn_softcap: None,
        final_softcap: raw.final_logit_softcapping.map(|v| v as f32),
        per_layer_input: 0,
        layers,
    })
}

/// Gemma 4 text (`Gemma4TextConfig`, the `text_config` of `Gemma4Config`).
pub fn gemma4(config: &serde_json::Value) -> Result<TextConfig, ConfigError> {
    let raw: RawTextConfig = serde_json::from_value(text_part(config).clone())?;
    check_common(&raw)?;
    if raw.enable_moe_block.unwrap_or(false) {
        return Err(invalid("Gemma 4 MoE blocks are not supported"));
    }
    if raw.attention_k_eq_v.unwrap_or(false) {
        return Err(invalid("attention_k_eq_v is not supported"));
    }
    if let Some(v) = &raw.use_bidirectional_attention
        && !v.is_null()
        && v != &serde_json::Value::Bool(false)
    {
        return Err(invalid(format!(
            "use_bidirectional_attention = {v} is not supported"
        )));
    }
    let n = raw.num_hidden_layers;
    let head_dim = raw.head_dim.unwrap_or(256);
    let global_head_dim = raw.global_head_dim.unwrap_or(512);
    let types = layer_types(&raw, 6, true)?;
    let window = raw.sliding_window.unwrap_or(512);

    // KV sharing: the last `num_kv_shared_layers` reuse the last earlier non-shared layer of
    // their own type.
    let shared = raw.num_kv_shared_layers.unwrap_or(0);
    if shared >= n && shared > 0 {
        return Err(invalid("num_kv_shared_layers covers every layer"));
    }
    let first_shared = n - shared;
    let double_wide = raw.use_double_wide_mlp.unwrap_or(false);

    let mut layers = Vec::with_capacity(n);
    for (i, &lt) in types.iter().enumerate() {
        let over = raw
            .per_layer_config
            .as_ref()
            .and_then(|m| m.get(&i.to_string()));
        let hd = match (over.and_then(|o| o.head_dim), lt) {
            (Some(d), _) => d,
            (None, LayerType::Full) if raw.per_layer_config.is_none() => global_head_dim,
            (None, _) => head_dim,
        };
        let kvh = over
            .and_then(|o| o.num_key_value_heads)
            .unwrap_or(raw.num_key_value_heads);
        let kv = if i >= first_shared {
            let producer = (0..first_shared)
                .rev()
                .find(|&j| types[j] == lt)
                .ok_or_else(|| invalid(format!("no KV producer for shared layer {i}")))?;
            KvRole::Reuse(producer)
        } else {
            KvRole::Own
        };
        let wide = double_wide && i >= first_shared;
        layers.push(LayerSpec {
            layer_type: lt,
            head_dim: hd,
            num_kv_heads: kvh,
            intermediate_size: raw.intermediate_size * if wide { 2 } else { 1 },
            window: (lt == LayerType::Sliding).then_some(window),
            rope: resolve_rope(&rope_param_for(&raw, lt)?, hd)?,
            kv,
        });
    }
    // A consumer must see K/V shaped like its own queries.
    for (i, l) in layers.iter().enumerate() {
        if let KvRole::Reuse(p) = l.kv
            && (layers[p].head_dim != l.head_dim || layers[p].num_kv_heads != l.num_kv_heads)
        {
            return Err(invalid(format!(
                "layer {i} reuses layer {p}'s K/V but their head shapes differ"
            )));
        }
    }
    Ok(TextConfig {
        hidden_size: raw.hidden_size,
        num_layers: n,
        num_heads: raw.num_attention_heads,
        vocab_size: raw.vocab_size,
        eps: raw.rms_norm_eps as f32,
        max_position: raw.max_position_embeddings.unwrap_or(131_072),
        attn_scale: 1.0,
        attn_softcap: None,
        final_softcap: raw.final_logit_softcapping.map(|v| v as f32),
        per_layer_input: raw.hidden_size_per_layer_input.unwrap_or(0),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_config_resolves() {
        let json = serde_json::json!({
            "text_config": {
                "hidden_size": 1536, "num_hidden_layers": 10, "intermediate_size": 6144,
                "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
                "global_head_dim": 512, "vocab_size": 262144, "sliding_window": 512,
                "num_kv_shared_layers": 4, "use_double_wide_mlp": true,
                "hidden_size_per_layer_input": 256, "final_logit_softcapping": 30.0,
                "layer_types": ["sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention",
                                "sliding_attention","sliding_attention","sliding_attention","sliding_attention","full_attention"],
                "rope_parameters": {
                    "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
                    "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
                }
            }
        });
        let c = gemma4(&json).unwrap();
        assert_eq!(c.layers[4].head_dim, 512);
        assert_eq!(c.layers[0].head_dim, 256);
        assert_eq!(c.layers[6].kv, KvRole::Reuse(5));
        assert_eq!(c.layers[9].kv, KvRole::Reuse(4));
        assert_eq!(c.layers[5].kv, KvRole::Own);
        assert_eq!(c.layers[9].intermediate_size, 12288);
        assert_eq!(c.layers[5].intermediate_size, 6144);
        let f = &c.layers[4].rope.inv_freq;
        assert_eq!(f.len(), 256);
        assert!(f[63] > 0.0 && f[64] == 0.0);
        assert!((f[1] - 1e6f32.powf(-2.0 / 512.0)).abs() < 1e-9);
        assert_eq!(c.layers[4].window, None);
        assert_eq!(c.layers[0].window, Some(512));
    }

    #[test]
    fn gemma3_legacy_and_new_forms() {
        let legacy = serde_json::json!({
            "hidden_size": 640, "num_hidden_layers": 18, "intermediate_size": 2048,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "vocab_size": 262144, "sliding_window": 512, "sliding_window_pattern": 6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256
        });
        let c = gemma3(&legacy).unwrap();
        assert_eq!(c.layers[5].layer_type, LayerType::Full);
        assert_eq!(c.layers[4].layer_type, LayerType::Sliding);
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert!((c.layers[5].rope.inv_freq[1] - 1e6f32.powf(-2.0 / 256.0)).abs() < 1e-9);
        assert!((c.layers[0].rope.inv_freq[1] - 1e4f32.powf(-2.0 / 256.0)).abs() < 1e-9);
    }
}
