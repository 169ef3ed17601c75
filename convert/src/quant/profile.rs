//! Quantization profiles and the per-tensor dtype rules.
//!
//! Rules, in order:
//! 1. fewer than 2 dims or fewer than 4096 elements (norms, scalars, clip bounds,
//!    per_dim_scale): f32 in every profile (negligible bytes, exact);
//! 2. more than 2 dims (conv kernels) and position embedding tables: f16 (f32 in profile f32);
//! 3. text-stack layers named by `--exclude-layers`: f16 (the profile's dtype for float profiles);
//! 4. 2-D weights: the profile's dtype; `mixed-int4` quantizes only the text MLP (gate/up/down)
//!    to q4 and keeps the rest at f16;
//! 5. quantized tensors whose last dim is not a multiple of the group size fall back to q8 with
//!    group 32 when possible, else f16.
//!
//! `lut4` / `lut6` follow the same rules with palettized weights (one k-means palette per
//! `--lut-group` rows, 0 = per tensor); the token embeddings / LM head (`embed_tokens*`,
//! `lm_head`) take `--head-lut` instead (lut4, lut6, int8 or f16; default [`DEFAULT_HEAD`]).

use crate::error::ConvertError;
use crate::source::hf::text_layer_index;
use cellm_engine::tensor::DType;
use std::collections::BTreeSet;

/// Tensors below this many elements stay f32.
pub const SMALL_TENSOR: usize = 4096;

/// Rows per palette of the lut profiles when `--lut-group` is not given. Measured on the Gemma 3
/// 270M (KL mean over testdata/prompts, int8 head): lut4 0.67 / 0.54 / 0.74 / 1.31 and lut6
/// 0.067 / 0.074 / 0.070 / 0.111 for groups 1 / 8 / 64 / per tensor: 8 is best or within noise
/// of the best, with 1/8 of the palette bytes of group 1.
pub const DEFAULT_LUT_GROUP: usize = 8;

/// Storage of the embeddings / LM head in the lut profiles when `--head-lut` is not given. On
/// the 270M (lut6, group 8) the head as int8 / f16 / lut6 / lut4 gave KL 0.074 / 0.073 / 0.157
/// / 0.352: int8 keeps the fidelity of f16 at half its bytes.
pub const DEFAULT_HEAD: &str = "int8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    F32,
    F16,
    BF16,
    Int8,
    Int4,
    MixedInt4,
    /// int4 with activation-aware scales folded into the norms (see `quant::awq`).
    AwqInt4,
    Lut4,
    Lut6,
    /// Per-tensor f16 / int8 / int4 chosen by a sensitivity scan to meet a KL target
    /// (`--target-kl`, see `quant::auto`); not in [`Profile::ALL`], which lists fixed profiles.
    Auto,
}

impl Profile {
    pub const ALL: [Profile; 9] = [
        Profile::F32,
        Profile::F16,
        Profile::BF16,
        Profile::Int8,
        Profile::Int4,
        Profile::MixedInt4,
        Profile::AwqInt4,
        Profile::Lut4,
        Profile::Lut6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::F32 => "f32",
            Profile::F16 => "f16",
            Profile::BF16 => "bf16",
            Profile::Int8 => "int8",
            Profile::Int4 => "int4",
            Profile::MixedInt4 => "mixed-int4",
            Profile::AwqInt4 => "awq-int4",
            Profile::Lut4 => "lut4",
            Profile::Lut6 => "lut6",
            Profile::Auto => "auto",
        }
    }

    /// Group size used when `--group-size` is not given (0 for float profiles). 32 matches
    /// llama.cpp's Q8_0/Q4_0 blocks and divides every Gemma width.
    pub fn default_group_size(self) -> usize {
        match self {
            // lut profiles: the group of their q8 head / fallback tensors
            Profile::Int8
            | Profile::Int4
            | Profile::MixedInt4
            | Profile::AwqInt4
            | Profile::Lut4
            | Profile::Lut6
            | Profile::Auto => 32,
            _ => 0,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.default_group_size() > 0
    }

    /// The palettized dtype of a lut profile.
    pub fn lut_dtype(self) -> Option<DType> {
        match self {
            Profile::Lut4 => Some(DType::Lut4),
            Profile::Lut6 => Some(DType::Lut6),
            _ => None,
        }
    }

    /// The dtype of the profile for float profiles.
    fn float_dtype(self) -> Option<DType> {
        match self {
            Profile::F32 => Some(DType::F32),
            Profile::F16 => Some(DType::F16),
            Profile::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = Profile::ALL.iter().find(|p| p.name() == s) {
            return Ok(*p);
        }
        if s == Profile::Auto.name() {
            return Ok(Profile::Auto);
        }
        let valid: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        Err(ConvertError::Invalid(format!(
            "unknown profile '{s}'; valid profiles: {}",
            valid.join(", ")
        )))
    }
}

/// A profile with its options, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantSpec {
    pub profile: Profile,
    /// Group size of q8/q4 tensors (0 for float profiles).
    pub group_size: usize,
    /// Text-stack layers kept at f16.
    pub exclude_layers: BTreeSet<usize>,
    /// lut profiles: rows per palette (0 = one palette per tensor).
    pub lut_group: usize,
    /// lut profiles: dtype of the embeddings / LM head (`Q8` with `group_size`, `F16`, or a lut).
    pub head: DType,
}

impl QuantSpec {
    pub fn new(
        profile: Profile,
        group_size: Option<usize>,
        exclude_layers: &[usize],
    ) -> Result<Self, ConvertError> {
        let group_size = match group_size {
            None => profile.default_group_size(),
            Some(g) if !profile.is_quantized() => {
                return Err(ConvertError::Invalid(format!(
                    "--group-size {g} has no effect with profile {profile}; it applies to int8, \
                     int4 and mixed-int4"
                )));
            }
            Some(g) if g == 0 || !g.is_multiple_of(32) => {
                return Err(ConvertError::Invalid(format!(
                    "--group-size must be a positive multiple of 32 (e.g. 32, 64, 128), got {g}"
                )));
            }
            Some(g) => g,
        };
        Ok(Self {
            profile,
            group_size,
            exclude_layers: exclude_layers.iter().copied().collect(),
            lut_group: DEFAULT_LUT_GROUP,
            head: DType::Q8,
        })
    }

    /// Sets the lut options (`--lut-group`, `--head-lut`); an error for other profiles.
    pub fn with_lut(
        mut self,
        lut_group: Option<usize>,
        head: Option<&str>,
    ) -> Result<Self, ConvertError> {
        if self.profile.lut_dtype().is_none() {
            if lut_group.is_some() || head.is_some() {
                return Err(ConvertError::Invalid(format!(
                    "--lut-group / --head-lut apply to the lut4 and lut6 profiles, not {}",
                    self.profile
                )));
            }
            return Ok(self);
        }
        self.lut_group = lut_group.unwrap_or(DEFAULT_LUT_GROUP);
        self.head = match head.unwrap_or(DEFAULT_HEAD) {
            "lut4" => DType::Lut4,
            "lut6" => DType::Lut6,
            "int8" => DType::Q8,
            "f16" => DType::F16,
            other => {
                return Err(ConvertError::Invalid(format!(
                    "--head-lut must be lut4, lut6, int8 or f16, got '{other}'"
                )));
            }
        };
        Ok(self)
    }
}

/// What one tensor is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorDecision {
    pub dtype: DType,
    /// 0 for float dtypes.
    pub group_size: usize,
}

impl TensorDecision {
    fn float(dtype: DType) -> Self {
        Self {
            dtype,
            group_size: 0,
        }
    }
}

/// MLP weights of the text stack (mixed-int4 quantizes these).
fn is_text_mlp(name: &str) -> bool {
    !(name.contains("vision_tower") || name.contains("audio_tower"))
        && name.contains(".mlp.")
        && ["gate_proj", "up_proj", "down_proj"]
            .iter()
            .any(|p| name.contains(p))
}

/// Token embeddings and the LM head (the lut profiles' `--head-lut` tensors).
fn is_head(name: &str) -> bool {
    name.contains("embed_tokens") || name.contains("lm_head")
}

/// A lut tensor of `shape`, or the fallbacks when its last dim does not fit 32-column blocks.
fn lut_decision(dtype: DType, shape: &[usize], spec: &QuantSpec) -> TensorDecision {
    let cols = shape[shape.len() - 1];
    if !cols.is_multiple_of(32) {
        return TensorDecision::float(DType::F16);
    }
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let group = if spec.lut_group == 0 {
        rows.max(1)
    } else {
        spec.lut_group
    };
    TensorDecision {
        dtype,
        group_size: group,
    }
}

/// Decides the stored dtype and group size of one tensor.
pub fn decide(name: &str, shape: &[usize], spec: &QuantSpec) -> TensorDecision {
    let numel: usize = shape.iter().product();
    if shape.len() < 2 || numel < SMALL_TENSOR {
        return TensorDecision::float(DType::F32);
    }
    let keep_float = if spec.profile == Profile::F32 {
        DType::F32
    } else {
        DType::F16
    };
    if shape.len() > 2 || name.contains("position_embedding") {
        return TensorDecision::float(keep_float);
    }
    if text_layer_index(name).is_some_and(|l| spec.exclude_layers.contains(&l)) {
        return TensorDecision::float(spec.profile.float_dtype().unwrap_or(DType::F16));
    }
    let wanted = match spec.profile {
        Profile::F32 => return TensorDecision::float(DType::F32),
        Profile::F16 => return TensorDecision::float(DType::F16),
        Profile::BF16 => return TensorDecision::float(DType::BF16),
        // The scan's per-tensor plan overrides this f16 baseline (ConvertOptions::tensor_dtypes).
        Profile::Auto => return TensorDecision::float(DType::F16),
        Profile::Int8 => DType::Q8,
        // awq-int4 stores exactly what int4 stores (same size); only the values differ.
        Profile::Int4 | Profile::AwqInt4 => DType::Q4,
        Profile::MixedInt4 if is_text_mlp(name) => DType::Q4,
        Profile::MixedInt4 => return TensorDecision::float(DType::F16),
        Profile::Lut4 | Profile::Lut6 => {
            let dtype = if is_head(name) {
                spec.head
            } else {
                spec.profile.lut_dtype().unwrap_or(DType::Lut4)
            };
            match dtype {
                DType::F16 => return TensorDecision::float(DType::F16),
                DType::Lut4 | DType::Lut6 => return lut_decision(dtype, shape, spec),
                _ => DType::Q8,
            }
        }
    };
    let cols = shape[shape.len() - 1];
    if cols.is_multiple_of(spec.group_size) {
        TensorDecision {
            dtype: wanted,
            group_size: spec.group_size,
        }
    } else if cols.is_multiple_of(32) {
        TensorDecision {
            dtype: DType::Q8,
            group_size: 32,
        }
    } else {
        TensorDecision::float(DType::F16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(p: Profile) -> QuantSpec {
        QuantSpec::new(p, None, &[]).unwrap()
    }

    fn d(name: &str, shape: &[usize], s: &QuantSpec) -> (DType, usize) {
        let t = decide(name, shape, s);
        (t.dtype, t.group_size)
    }

    const Q: &str = "model.layers.3.self_attn.q_proj.weight";
    const UP: &str = "model.layers.3.mlp.up_proj.weight";
    const EMB: &str = "model.embed_tokens.weight";

    #[test]
    fn parse_profiles() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
        }
        let e = "int3".parse::<Profile>().unwrap_err().to_string();
        assert!(
            e.contains("int3") && e.contains("mixed-int4") && e.contains("bf16"),
            "{e}"
        );
        assert_eq!("lut6".parse::<Profile>().unwrap(), Profile::Lut6);
        assert_eq!("awq-int4".parse::<Profile>().unwrap(), Profile::AwqInt4);
    }

    #[test]
    fn group_size_validation() {
        assert_eq!(spec(Profile::Int4).group_size, 32);
        assert_eq!(spec(Profile::Int8).group_size, 32);
        assert_eq!(spec(Profile::F16).group_size, 0);
        assert!(QuantSpec::new(Profile::Int4, Some(48), &[]).is_err());
        assert!(QuantSpec::new(Profile::Int4, Some(0), &[]).is_err());
        assert!(QuantSpec::new(Profile::F16, Some(32), &[]).is_err());
        assert_eq!(
            QuantSpec::new(Profile::Int4, Some(128), &[])
                .unwrap()
                .group_size,
            128
        );
    }

    #[test]
    fn small_and_1d_stay_f32() {
        for p in Profile::ALL {
            let s = spec(p);
            assert_eq!(d("model.norm.weight", &[1536], &s), (DType::F32, 0));
            assert_eq!(d("model.layers.0.layer_scalar", &[1], &s), (DType::F32, 0));
            assert_eq!(d("x.input_min", &[], &s), (DType::F32, 0));
            assert_eq!(d("a.per_dim_scale", &[128], &s), (DType::F32, 0));
            // 2-D but tiny.
            assert_eq!(d(Q, &[32, 64], &s), (DType::F32, 0));
        }
    }

    #[test]
    fn conv_and_position_tables_stay_f16() {
        let conv = "model.audio_tower.subsample_conv_projection.layer0.conv.weight";
        let dw = "model.audio_tower.layers.0.lconv1d.depthwise_conv1d.weight";
        let pos = "model.vision_tower.patch_embedder.position_embedding_table";
        for p in Profile::ALL {
            let want = if p == Profile::F32 {
                DType::F32
            } else {
                DType::F16
            };
            let s = spec(p);
            assert_eq!(d(conv, &[32, 128, 3, 3], &s), (want, 0));
            assert_eq!(d(dw, &[1024, 1, 5], &s), (want, 0));
            assert_eq!(d(pos, &[2, 10240, 768], &s), (want, 0));
        }
        // 2-D position table too.
        assert_eq!(d(pos, &[10240, 768], &spec(Profile::Int4)), (DType::F16, 0));
    }

    #[test]
    fn float_profiles() {
        for (p, t) in [
            (Profile::F32, DType::F32),
            (Profile::F16, DType::F16),
            (Profile::BF16, DType::BF16),
        ] {
            assert_eq!(d(Q, &[1024, 640], &spec(p)), (t, 0));
            assert_eq!(d(EMB, &[262144, 640], &spec(p)), (t, 0));
        }
    }

    #[test]
    fn int8_and_int4_everything_2d() {
        let s8 = spec(Profile::Int8);
        let s4 = spec(Profile::Int4);
        for name in [
            Q,
            UP,
            EMB,
            "model.language_model.embed_tokens_per_layer.weight",
            "model.vision_tower.encoder.layers.0.mlp.up_proj.linear.weight",
            "model.audio_tower.layers.0.self_attn.q_proj.linear.weight",
            "model.embed_vision.embedding_projection.weight",
        ] {
            assert_eq!(d(name, &[1536, 1024], &s8), (DType::Q8, 32), "{name}");
            assert_eq!(d(name, &[1536, 1024], &s4), (DType::Q4, 32), "{name}");
        }
    }

    #[test]
    fn mixed_int4_only_text_mlp() {
        let s = spec(Profile::MixedInt4);
        for m in ["gate_proj", "up_proj", "down_proj"] {
            let n = format!("model.language_model.layers.7.mlp.{m}.weight");
            assert_eq!(d(&n, &[6144, 1536], &s), (DType::Q4, 32));
        }
        assert_eq!(d(Q, &[1024, 640], &s), (DType::F16, 0));
        assert_eq!(d(EMB, &[262144, 640], &s), (DType::F16, 0));
        let vis = "model.vision_tower.encoder.layers.0.mlp.up_proj.linear.weight";
        assert_eq!(d(vis, &[3072, 768], &s), (DType::F16, 0));
    }

    #[test]
    fn excluded_layers() {
        let s = QuantSpec::new(Profile::Int4, None, &[3]).unwrap();
        assert_eq!(d(Q, &[1024, 640], &s), (DType::F16, 0));
        assert_eq!(d(UP, &[2048, 640], &s), (DType::F16, 0));
        let other = "model.layers.4.mlp.up_proj.weight";
        assert_eq!(d(other, &[2048, 640], &s), (DType::Q4, 32));
        // layers.30 is not layers.3; vision layers are not decoder layers.
        assert_eq!(
            d("model.layers.30.mlp.up_proj.weight", &[2048, 640], &s),
            (DType::Q4, 32)
        );
        let vis = "model.vision_tower.encoder.layers.3.mlp.up_proj.linear.weight";
        assert_eq!(d(vis, &[3072, 768], &s), (DType::Q4, 32));
        let s32 = QuantSpec::new(Profile::F32, None, &[3]).unwrap();
        assert_eq!(d(Q, &[1024, 640], &s32), (DType::F32, 0));
    }

    #[test]
    fn lut_profiles() {
        let s = spec(Profile::Lut4);
        assert_eq!(d(Q, &[1024, 640], &s), (DType::Lut4, DEFAULT_LUT_GROUP));
        assert_eq!(d(EMB, &[262144, 640], &s), (DType::Q8, 32));
        assert_eq!(d("model.norm.weight", &[640], &s), (DType::F32, 0));
        assert_eq!(d(Q, &[1024, 1000], &s), (DType::F16, 0));
        let s6 = spec(Profile::Lut6).with_lut(Some(0), Some("lut6")).unwrap();
        assert_eq!(d(Q, &[1024, 640], &s6), (DType::Lut6, 1024));
        assert_eq!(d(EMB, &[262144, 640], &s6), (DType::Lut6, 262144));
        let sf = spec(Profile::Lut6).with_lut(Some(1), Some("f16")).unwrap();
        assert_eq!(d(EMB, &[262144, 640], &sf), (DType::F16, 0));
        assert_eq!(d(UP, &[2048, 640], &sf), (DType::Lut6, 1));
        assert!(spec(Profile::Lut4).with_lut(None, Some("q3")).is_err());
        assert!(spec(Profile::Int4).with_lut(Some(8), None).is_err());
        assert!(spec(Profile::Int4).with_lut(None, None).is_ok());
    }

    #[test]
    fn group_fallbacks() {
        let s = QuantSpec::new(Profile::Int4, Some(128), &[]).unwrap();
        assert_eq!(d(Q, &[1024, 640], &s), (DType::Q4, 128));
        // 1536 % 128 == 0, 1056 % 128 != 0 but % 32 == 0 -> q8/32.
        assert_eq!(d(Q, &[1024, 1056], &s), (DType::Q8, 32));
        // Not a multiple of 32 -> f16.
        assert_eq!(d(Q, &[1024, 1000], &s), (DType::F16, 0));
        let s8 = QuantSpec::new(Profile::Int8, Some(64), &[]).unwrap();
        assert_eq!(d(Q, &[1024, 1056], &s8), (DType::Q8, 32));
    }
}
