//! llama.cpp tensor names of Gemma 4 (text GGUF, arch `gemma4`, and its mmproj GGUF, arch `clip`
//! with projectors `gemma4v` / `gemma4a`) mapped back onto the Hugging Face
//! `Gemma4ForConditionalGeneration` names, with the value transforms llama.cpp's
//! `convert_hf_to_gguf.py` (Gemma4Model, Gemma4VisionAudioModel) applied undone.
//!
//! Unlike Gemma 3, llama.cpp keeps Gemma 4 RMSNorm weights as they are (`norm_shift` is 0).

/// How a GGUF tensor's values and shape differ from the Hugging Face tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Same values, same PyTorch shape.
    None,
    /// Same values; the Hugging Face shape is a reshape of the GGUF one (scalars stored as [1],
    /// the depthwise conv [C, 1, K] stored as [C, K]).
    Reshape,
    /// llama.cpp stores softplus(w) for the audio attention's `per_dim_scale`.
    Softplus,
    /// The vision patch embedding: Hugging Face [n, p·p·3] (patch pixels row-major, channel last)
    /// stored as a conv kernel [n, 3, p, p].
    PatchEmbed,
}

/// The Hugging Face name of one GGUF tensor and the transform to undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub name: String,
    pub transform: Transform,
}

/// What a GGUF tensor name means for the import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gemma4Name {
    Mapped(Mapped),
    /// Derived by llama.cpp from the config (the proportional-RoPE frequency factors): not a
    /// weight of the Hugging Face model.
    Derived,
    /// A Gemma 4 variant cellm does not run (mixture of experts).
    Unsupported(&'static str),
}

fn mapped(name: String, transform: Transform) -> Option<Gemma4Name> {
    Some(Gemma4Name::Mapped(Mapped { name, transform }))
}

const TEXT: &str = "model.language_model";

/// Per-block llama.cpp suffix -> Hugging Face name under `model.language_model.layers.N.`.
const TEXT_BLOCK: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    (
        "post_attention_norm.weight",
        "post_attention_layernorm.weight",
    ),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("inp_gate.weight", "per_layer_input_gate.weight"),
    ("proj.weight", "per_layer_projection.weight"),
    ("post_norm.weight", "post_per_layer_input_norm.weight"),
    ("layer_output_scale.weight", "layer_scalar"),
];

/// Text-GGUF block tensors of the mixture-of-experts variant (gemma-4-26B-A4B).
const TEXT_MOE: &[&str] = &[
    "ffn_gate_inp",
    "ffn_gate_exps",
    "ffn_up_exps",
    "ffn_down_exps",
    "ffn_gate_up_exps",
    "pre_ffw_norm_2",
    "post_ffw_norm_1",
    "post_ffw_norm_2",
];

/// `blk.N.rest` -> (N, rest).
fn block(name: &str, prefix: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix(prefix)?;
    let (layer, rest) = rest.split_once('.')?;
    Some((layer.parse().ok()?, rest.to_string()))
}

/// Map a tensor of the text GGUF; None for names this mapping does not know.
pub fn gemma4_text_name(gguf: &str) -> Option<Gemma4Name> {
    let global = match gguf {
        "rope_freqs.weight" => return Some(Gemma4Name::Derived),
        "token_embd.weight" => Some("embed_tokens.weight"),
        "per_layer_token_embd.weight" => Some("embed_tokens_per_layer.weight"),
        "output_norm.weight" => Some("norm.weight"),
        "per_layer_model_proj.weight" => Some("per_layer_model_projection.weight"),
        "per_layer_proj_norm.weight" => Some("per_layer_projection_norm.weight"),
        "output.weight" => return mapped("lm_head.weight".into(), Transform::None),
        _ => None,
    };
    if let Some(g) = global {
        return mapped(format!("{TEXT}.{g}"), Transform::None);
    }
    let (layer, rest) = block(gguf, "blk.")?;
    let module = rest.split('.').next().unwrap_or_default();
    if TEXT_MOE.contains(&module) {
        return Some(Gemma4Name::Unsupported(
            "Gemma 4 mixture-of-experts models are not supported",
        ));
    }
    let hf = TEXT_BLOCK.iter().find(|(g, _)| *g == rest)?.1;
    mapped(format!("{TEXT}.layers.{layer}.{hf}"), Transform::None)
}

/// Clipped linears (Gemma4ClippableLinear): the GGUF keeps `.weight` and the four clip scalars.
fn clipped(hf_module: &str, suffix: &str) -> Option<Gemma4Name> {
    match suffix {
        "weight" => mapped(format!("{hf_module}.linear.weight"), Transform::None),
        "input_max" | "input_min" | "output_max" | "output_min" => {
            mapped(format!("{hf_module}.{suffix}"), Transform::Reshape)
        }
        _ => None,
    }
}

const VISION_BLOCK_NORMS: &[(&str, &str)] = &[
    ("ln1", "input_layernorm"),
    ("ln2", "pre_feedforward_layernorm"),
    ("attn_post_norm", "post_attention_layernorm"),
    ("ffn_post_norm", "post_feedforward_layernorm"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
];

const VISION_BLOCK_LINEARS: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_out", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const AUDIO_BLOCK_NORMS: &[(&str, &str)] = &[
    ("ffn_norm", "feed_forward1.pre_layer_norm"),
    ("ffn_post_norm", "feed_forward1.post_layer_norm"),
    ("ffn_norm_1", "feed_forward2.pre_layer_norm"),
    ("ffn_post_norm_1", "feed_forward2.post_layer_norm"),
    ("norm_conv", "lconv1d.conv_norm"),
    ("conv_norm", "lconv1d.pre_layer_norm"),
    ("ln2", "norm_out"),
    ("attn_pre_norm", "norm_pre_attn"),
    ("attn_post_norm", "norm_post_attn"),
];

const AUDIO_BLOCK_LINEARS: &[(&str, &str)] = &[
    ("ffn_up", "feed_forward1.ffw_layer_1"),
    ("ffn_down", "feed_forward1.ffw_layer_2"),
    ("ffn_up_1", "feed_forward2.ffw_layer_1"),
    ("ffn_down_1", "feed_forward2.ffw_layer_2"),
    ("conv_pw1", "lconv1d.linear_start"),
    ("conv_pw2", "lconv1d.linear_end"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_out", "self_attn.post"),
];

fn tower_block(
    prefix: &str,
    rest: &str,
    norms: &[(&str, &str)],
    linears: &[(&str, &str)],
) -> Option<Gemma4Name> {
    let (module, suffix) = rest.split_once('.')?;
    if let Some((_, hf)) = norms.iter().find(|(g, _)| *g == module) {
        return (suffix == "weight")
            .then(|| mapped(format!("{prefix}.{hf}.weight"), Transform::None))?;
    }
    let (_, hf) = linears.iter().find(|(g, _)| *g == module)?;
    clipped(&format!("{prefix}.{hf}"), suffix)
}

/// Map a tensor of the mmproj GGUF (vision and audio towers); None for unknown names.
pub fn gemma4_mmproj_name(gguf: &str) -> Option<Gemma4Name> {
    const V: &str = "model.vision_tower";
    const A: &str = "model.audio_tower";
    match gguf {
        "v.patch_embd.weight" => {
            return mapped(
                format!("{V}.patch_embedder.input_proj.weight"),
                Transform::PatchEmbed,
            );
        }
        "v.position_embd.weight" => {
            return mapped(
                format!("{V}.patch_embedder.position_embedding_table"),
                Transform::None,
            );
        }
        "v.std_bias" => return mapped(format!("{V}.std_bias"), Transform::None),
        "v.std_scale" => return mapped(format!("{V}.std_scale"), Transform::None),
        "mm.input_projection.weight" => {
            return mapped(
                "model.embed_vision.embedding_projection.weight".into(),
                Transform::None,
            );
        }
        "mm.a.input_projection.weight" => {
            return mapped(
                "model.embed_audio.embedding_projection.weight".into(),
                Transform::None,
            );
        }
        "a.pre_encode.out.weight" => {
            return mapped(format!("{A}.output_proj.weight"), Transform::None);
        }
        "a.pre_encode.out.bias" => return mapped(format!("{A}.output_proj.bias"), Transform::None),
        "a.input_projection.weight" => {
            return mapped(
                format!("{A}.subsample_conv_projection.input_proj_linear.weight"),
                Transform::None,
            );
        }
        _ => {}
    }
    if let Some((i, rest)) = block(gguf, "a.conv1d.") {
        let hf = match rest.as_str() {
            "weight" => "conv.weight",
            "norm.weight" => "norm.weight",
            _ => return None,
        };
        return mapped(
            format!("{A}.subsample_conv_projection.layer{i}.{hf}"),
            Transform::None,
        );
    }
    if let Some((i, rest)) = block(gguf, "v.blk.") {
        let prefix = format!("{V}.encoder.layers.{i}");
        if rest == "out_scale.weight" {
            return mapped(format!("{prefix}.layer_scalar"), Transform::Reshape);
        }
        return tower_block(&prefix, &rest, VISION_BLOCK_NORMS, VISION_BLOCK_LINEARS);
    }
    if let Some((i, rest)) = block(gguf, "a.blk.") {
        let prefix = format!("{A}.layers.{i}");
        return match rest.as_str() {
            "per_dim_scale.weight" => mapped(
                format!("{prefix}.self_attn.per_dim_scale"),
                Transform::Softplus,
            ),
            "attn_k_rel.weight" => mapped(
                format!("{prefix}.self_attn.relative_k_proj.weight"),
                Transform::None,
            ),
            "conv_dw.weight" => mapped(
                format!("{prefix}.lconv1d.depthwise_conv1d.weight"),
                Transform::Reshape,
            ),
            _ => tower_block(&prefix, &rest, AUDIO_BLOCK_NORMS, AUDIO_BLOCK_LINEARS),
        };
    }
    None
}

/// The Hugging Face shape of a mapped tensor, from the GGUF tensor's PyTorch-order shape.
pub fn hf_shape(m: &Mapped, gguf_shape: &[usize]) -> Option<Vec<usize>> {
    match m.transform {
        Transform::None | Transform::Softplus => Some(gguf_shape.to_vec()),
        Transform::Reshape => {
            if m.name.ends_with("depthwise_conv1d.weight") {
                // [C, K] -> [C, 1, K]
                match gguf_shape {
                    [c, k] => Some(vec![*c, 1, *k]),
                    _ => None,
                }
            } else if m.name.ends_with("layer_scalar") {
                (gguf_shape.iter().product::<usize>() == 1).then(|| vec![1])
            } else {
                // clip scalars: [1] -> []
                (gguf_shape.iter().product::<usize>() == 1).then(Vec::new)
            }
        }
        Transform::PatchEmbed => match gguf_shape {
            [n, 3, p, q] if p == q => Some(vec![*n, p * q * 3]),
            _ => None,
        },
    }
}

/// Inverse of torch's softplus (linear above 20, as torch's threshold).
pub fn inverse_softplus(y: f32) -> f32 {
    if y > 20.0 {
        return y;
    }
    let y = y as f64;
    // log(exp(y) - 1) = y + log(1 - exp(-y)), stable for small and large y.
    (y + (-(-y).exp_m1()).ln()) as f32
}

/// Undo the patch embedding permutation: GGUF [n, 3, p, p] -> Hugging Face [n, p, p, 3].
pub fn unpermute_patch_embed(values: &[f32], n: usize, p: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for o in 0..n {
        for c in 0..3 {
            for y in 0..p {
                for x in 0..p {
                    out[((o * p + y) * p + x) * 3 + c] = values[((o * 3 + c) * p + y) * p + x];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(g: Option<Gemma4Name>) -> (String, Transform) {
        match g {
            Some(Gemma4Name::Mapped(m)) => (m.name, m.transform),
            other => panic!("not mapped: {other:?}"),
        }
    }

    #[test]
    fn gguf4_text_names() {
        let cases = [
            (
                "token_embd.weight",
                "model.language_model.embed_tokens.weight",
            ),
            (
                "per_layer_token_embd.weight",
                "model.language_model.embed_tokens_per_layer.weight",
            ),
            (
                "blk.12.layer_output_scale.weight",
                "model.language_model.layers.12.layer_scalar",
            ),
            (
                "blk.3.inp_gate.weight",
                "model.language_model.layers.3.per_layer_input_gate.weight",
            ),
            (
                "blk.3.proj.weight",
                "model.language_model.layers.3.per_layer_projection.weight",
            ),
            (
                "blk.3.post_norm.weight",
                "model.language_model.layers.3.post_per_layer_input_norm.weight",
            ),
            (
                "per_layer_proj_norm.weight",
                "model.language_model.per_layer_projection_norm.weight",
            ),
        ];
        for (g, hf) in cases {
            assert_eq!(name(gemma4_text_name(g)), (hf.to_string(), Transform::None));
        }
        assert_eq!(
            gemma4_text_name("rope_freqs.weight"),
            Some(Gemma4Name::Derived)
        );
        assert!(matches!(
            gemma4_text_name("blk.0.ffn_gate_exps.weight"),
            Some(Gemma4Name::Unsupported(_))
        ));
        assert_eq!(gemma4_text_name("blk.0.nope.weight"), None);
    }

    #[test]
    fn gguf4_mmproj_names() {
        let cases = [
            (
                "v.blk.1.attn_out.weight",
                "model.vision_tower.encoder.layers.1.self_attn.o_proj.linear.weight",
                Transform::None,
            ),
            (
                "v.blk.0.ffn_gate.input_max",
                "model.vision_tower.encoder.layers.0.mlp.gate_proj.input_max",
                Transform::Reshape,
            ),
            (
                "v.blk.0.ln2.weight",
                "model.vision_tower.encoder.layers.0.pre_feedforward_layernorm.weight",
                Transform::None,
            ),
            (
                "a.blk.1.ffn_down_1.weight",
                "model.audio_tower.layers.1.feed_forward2.ffw_layer_2.linear.weight",
                Transform::None,
            ),
            (
                "a.blk.0.per_dim_scale.weight",
                "model.audio_tower.layers.0.self_attn.per_dim_scale",
                Transform::Softplus,
            ),
            (
                "a.blk.0.conv_dw.weight",
                "model.audio_tower.layers.0.lconv1d.depthwise_conv1d.weight",
                Transform::Reshape,
            ),
            (
                "a.blk.0.attn_out.output_min",
                "model.audio_tower.layers.0.self_attn.post.output_min",
                Transform::Reshape,
            ),
            (
                "a.conv1d.1.norm.weight",
                "model.audio_tower.subsample_conv_projection.layer1.norm.weight",
                Transform::None,
            ),
            (
                "v.patch_embd.weight",
                "model.vision_tower.patch_embedder.input_proj.weight",
                Transform::PatchEmbed,
            ),
            (
                "mm.a.input_projection.weight",
                "model.embed_audio.embedding_projection.weight",
                Transform::None,
            ),
        ];
        for (g, hf, t) in cases {
            assert_eq!(name(gemma4_mmproj_name(g)), (hf.to_string(), t), "{g}");
        }
        assert_eq!(gemma4_mmproj_name("v.blk.0.ln1.bias"), None);
        assert_eq!(gemma4_mmproj_name("a.conv1d.0.bias"), None);
    }

    #[test]
    fn gguf4_transforms_invert() {
        for x in [-3.0f32, -0.5, 0.0, 0.3, 1.7, 5.0, 25.0] {
            let y = if x > 20.0 { x } else { (1.0 + x.exp()).ln() };
            assert!((inverse_softplus(y) - x).abs() < 1e-5, "{x}");
        }
        // [1, 3, 2, 2] conv kernel back to [1, 2*2*3] with channel last.
        let conv: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let hf = unpermute_patch_embed(&conv, 1, 2);
        assert_eq!(hf, vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
    }
}
