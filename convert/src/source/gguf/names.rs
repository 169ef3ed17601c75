//! llama.cpp tensor names of Gemma 3 mapped onto Hugging Face `Gemma3ForCausalLM` names
//! (the inverse of gguf-py's tensor_mapping.py for MODEL_ARCH.GEMMA3, as transformers' GGUF loader
//! resolves it).

/// The Hugging Face name of a llama.cpp Gemma 3 tensor, and whether it is an RMSNorm weight that
/// llama.cpp stores as `1 + w` (transformers' Gemma2/3 GGUF tensor processor subtracts 1 from every
/// tensor whose name contains "norm.weight"; we do the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfName {
    pub name: String,
    pub plus_one_norm: bool,
}

/// Per-block llama.cpp suffix -> Hugging Face module path under `model.layers.N.`.
const BLOCK_MAP: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Map a Gemma 3 GGUF tensor name; None for names this mapping does not know.
pub fn gemma3_hf_name(gguf_name: &str) -> Option<HfName> {
    let plus_one_norm = gguf_name.contains("norm.weight");
    let name = match gguf_name {
        "token_embd.weight" => "model.embed_tokens.weight".to_string(),
        "output_norm.weight" => "model.norm.weight".to_string(),
        "output.weight" => "lm_head.weight".to_string(),
        _ => {
            let rest = gguf_name.strip_prefix("blk.")?;
            let (layer, rest) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let module = rest.strip_suffix(".weight")?;
            let hf = BLOCK_MAP.iter().find(|(g, _)| *g == module)?.1;
            format!("model.layers.{layer}.{hf}.weight")
        }
    };
    Some(HfName {
        name,
        plus_one_norm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight", false),
            ("output_norm.weight", "model.norm.weight", true),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
                true,
            ),
            (
                "blk.3.attn_q.weight",
                "model.layers.3.self_attn.q_proj.weight",
                false,
            ),
            (
                "blk.3.attn_k.weight",
                "model.layers.3.self_attn.k_proj.weight",
                false,
            ),
            (
                "blk.3.attn_v.weight",
                "model.layers.3.self_attn.v_proj.weight",
                false,
            ),
            (
                "blk.3.attn_output.weight",
                "model.layers.3.self_attn.o_proj.weight",
                false,
            ),
            (
                "blk.17.attn_q_norm.weight",
                "model.layers.17.self_attn.q_norm.weight",
                true,
            ),
            (
                "blk.17.attn_k_norm.weight",
                "model.layers.17.self_attn.k_norm.weight",
                true,
            ),
            (
                "blk.1.post_attention_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
                true,
            ),
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.pre_feedforward_layernorm.weight",
                true,
            ),
            (
                "blk.1.post_ffw_norm.weight",
                "model.layers.1.post_feedforward_layernorm.weight",
                true,
            ),
            (
                "blk.2.ffn_gate.weight",
                "model.layers.2.mlp.gate_proj.weight",
                false,
            ),
            (
                "blk.2.ffn_up.weight",
                "model.layers.2.mlp.up_proj.weight",
                false,
            ),
            (
                "blk.2.ffn_down.weight",
                "model.layers.2.mlp.down_proj.weight",
                false,
            ),
        ];
        for (g, hf, norm) in cases {
            let m = gemma3_hf_name(g).unwrap_or_else(|| panic!("{g} unmapped"));
            assert_eq!((m.name.as_str(), m.plus_one_norm), (hf, norm), "{g}");
        }
        for bad in [
            "blk.x.attn_q.weight",
            "blk.0.attn_q.bias",
            "blk.0.nope.weight",
            "rope_freqs.weight",
        ] {
            assert_eq!(gemma3_hf_name(bad), None, "{bad}");
        }
    }
}
