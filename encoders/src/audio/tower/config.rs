//! `audio_config` of a Gemma 4 model (`Gemma4AudioConfig`); absent fields take the class
//! defaults, which equal the E2B values (spec §2.3).

use crate::EncoderError;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct AudioConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub subsampling_channels: [usize; 2],
    pub conv_kernel: usize,
    pub chunk: usize,
    pub context_left: usize,
    pub context_right: usize,
    pub logit_cap: f32,
    pub invalid_logit: f32,
    pub residual_weight: f32,
    pub eps: f32,
    pub gradient_clipping: f32,
    pub output_dims: usize,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            hidden: 1024,
            layers: 12,
            heads: 8,
            subsampling_channels: [128, 32],
            conv_kernel: 5,
            chunk: 12,
            context_left: 13,
            context_right: 0,
            logit_cap: 50.0,
            invalid_logit: -1.0e9,
            residual_weight: 0.5,
            eps: 1e-6,
            gradient_clipping: 1e10,
            output_dims: 1536,
        }
    }
}

fn bad(field: &str, v: &Value) -> EncoderError {
    EncoderError::Config(format!("audio_config.{field} has an unusable value {v}"))
}

fn uint(cfg: &Value, field: &str, default: usize) -> Result<usize, EncoderError> {
    match cfg.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| bad(field, v)),
    }
}

fn float(cfg: &Value, field: &str, default: f32) -> Result<f32, EncoderError> {
    match cfg.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| bad(field, v)),
    }
}

impl AudioConfig {
    /// Parses `audio_config`; checks the values the tower's arithmetic relies on.
    pub fn from_json(cfg: &Value) -> Result<Self, EncoderError> {
        let d = Self::default();
        let subsampling_channels = match cfg.get("subsampling_conv_channels") {
            None | Some(Value::Null) => d.subsampling_channels,
            Some(v) => {
                let list: Option<Vec<usize>> = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().and_then(|x| usize::try_from(x).ok()))
                        .collect()
                });
                match list.as_deref() {
                    Some([a, b]) => [*a, *b],
                    _ => return Err(bad("subsampling_conv_channels", v)),
                }
            }
        };
        let c = Self {
            hidden: uint(cfg, "hidden_size", d.hidden)?,
            layers: uint(cfg, "num_hidden_layers", d.layers)?,
            heads: uint(cfg, "num_attention_heads", d.heads)?,
            subsampling_channels,
            conv_kernel: uint(cfg, "conv_kernel_size", d.conv_kernel)?,
            chunk: uint(cfg, "attention_chunk_size", d.chunk)?,
            context_left: uint(cfg, "attention_context_left", d.context_left)?,
            context_right: uint(cfg, "attention_context_right", d.context_right)?,
            logit_cap: float(cfg, "attention_logit_cap", d.logit_cap)?,
            invalid_logit: float(cfg, "attention_invalid_logits_value", d.invalid_logit)?,
            residual_weight: float(cfg, "residual_weight", d.residual_weight)?,
            eps: float(cfg, "rms_norm_eps", d.eps)?,
            gradient_clipping: float(cfg, "gradient_clipping", d.gradient_clipping)?,
            output_dims: uint(cfg, "output_proj_dims", d.output_dims)?,
        };
        if let Some(act) = cfg.get("hidden_act").and_then(|v| v.as_str())
            && act != "silu"
        {
            return Err(EncoderError::Config(format!(
                "audio_config.hidden_act is '{act}'; the audio tower supports only silu"
            )));
        }
        if c.hidden == 0
            || c.heads == 0
            || !c.hidden.is_multiple_of(c.heads)
            || !c.hidden.is_multiple_of(2)
        {
            return Err(EncoderError::Config(format!(
                "audio hidden size {} does not split into {} heads",
                c.hidden, c.heads
            )));
        }
        if c.chunk == 0 || c.context_left < 2 || c.conv_kernel == 0 {
            return Err(EncoderError::Config(format!(
                "audio attention chunk {} / left context {} / conv kernel {} are unusable",
                c.chunk, c.context_left, c.conv_kernel
            )));
        }
        // Future context changes the relative-shift arithmetic; no Gemma 4 checkpoint uses it.
        if c.context_right != 0 {
            return Err(EncoderError::Config(format!(
                "audio_config.attention_context_right = {} is not supported (only 0)",
                c.context_right
            )));
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Keys a query sees in the reference's blocked layout: chunk + past horizon + future.
    pub fn context_size(&self) -> usize {
        self.chunk + self.context_left - 1 + self.context_right
    }

    /// Rows of the relative position table (positions context/2 down to 0).
    pub fn rel_positions(&self) -> usize {
        self.context_size() / 2 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn e2b_config_fills_class_defaults() {
        // The E2B hub config lists only some fields; the rest are class defaults.
        let c = AudioConfig::from_json(&json!({"model_type": "gemma4_audio", "hidden_size": 1024,
            "num_hidden_layers": 12, "num_attention_heads": 8,
            "subsampling_conv_channels": [128, 32], "output_proj_dims": 1536}))
        .unwrap();
        assert_eq!(c, AudioConfig::default());
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.context_size(), 24);
        assert_eq!(c.rel_positions(), 13);
    }

    #[test]
    fn unusable_configs_are_errors() {
        for bad in [
            json!({"attention_context_right": 2}),
            json!({"hidden_size": 30, "num_attention_heads": 4}),
            json!({"subsampling_conv_channels": [128]}),
            json!({"hidden_act": "gelu"}),
            json!({"hidden_size": "big"}),
        ] {
            assert!(AudioConfig::from_json(&bad).is_err(), "{bad}");
        }
    }
}
