#!/usr/bin/env python3
"""Make the real-layout Gemma 4 fixtures: the layer layouts of real checkpoints at toy widths,
saved by transformers itself (`save_pretrained`, so config.json has the zero-padded
`per_layer_config` keys current transformers writes), with reference logits.

    testdata/e2b-layout/   the Gemma 4 E2B text layout from ../shared/models/gemma-4-e2b-config.json
                           (35 layers, the real layer_types and rope_parameters, 20 KV-shared layers,
                           double-wide MLPs on them) with only widths and the vocabulary shrunk;
                           both towers (tiny).
    testdata/mixed-layout/ 12 layers with another layer-type pattern (S F S S S F S F S S S F),
                           2 KV heads, 4 KV-shared layers, no double-wide MLP; both towers.

References come from the same pipeline as testdata/tiny-gemma4 (make_fixtures.make_gemma4, slim:
logits, ids, media inputs and soft tokens only). Rerun with

    python3 testdata/make_layout_fixtures.py            # both
    python3 testdata/make_layout_fixtures.py e2b-layout # one

Needs what make_fixtures.py needs. CI never runs this.
"""

import copy
import json
import os
import sys

import torch

import make_fixtures as mf

E2B_CONFIG = os.path.join(mf.HERE, "..", "..", "shared", "models", "gemma-4-e2b-config.json")
E2B_CONFIG_FALLBACK = "/work/shared/models/gemma-4-e2b-config.json"


def e2b_text_config():
    path = E2B_CONFIG if os.path.isfile(E2B_CONFIG) else E2B_CONFIG_FALLBACK
    with open(path) as f:
        return json.load(f)["text_config"]


def tiny_towers():
    base = mf.gemma4_config()
    return base.vision_config, base.audio_config


def build_config(text_kwargs):
    from transformers import Gemma4Config, Gemma4TextConfig

    ids = mf.SPECIAL_IDS
    text = Gemma4TextConfig(**text_kwargs)
    vision, audio = tiny_towers()
    cfg = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=audio,
        boi_token_id=ids["<|image>"],
        eoi_token_id=ids["<image|>"],
        image_token_id=ids["<|image|>"],
        audio_token_id=ids["<|audio|>"],
        boa_token_id=ids["<|audio>"],
        eoa_token_index=ids["<audio|>"],
        eoa_token_id=ids["<audio|>"],
        video_token_id=ids["<|video|>"],
        tie_word_embeddings=True,
    )
    cfg.pad_token_id = 0
    cfg.bos_token_id = 2
    cfg.eos_token_id = [1, ids["<turn|>"]]
    return cfg


def common_text(**kw):
    ids = mf.SPECIAL_IDS
    base = dict(
        vocab_size=mf.VOCAB,
        vocab_size_per_layer_input=mf.VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_attention_heads=2,
        head_dim=8,
        sliding_window=8,  # the text prompt is ~40 tokens: windows shorter than the sequence
        hidden_size_per_layer_input=4,
        final_logit_softcapping=30.0,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, ids["<turn|>"]],
        tie_word_embeddings=True,
    )
    base.update(kw)
    return base


def e2b_layout():
    real = e2b_text_config()
    kw = common_text(
        num_hidden_layers=real["num_hidden_layers"],
        num_key_value_heads=real["num_key_value_heads"],
        global_head_dim=16,  # real: head_dim 256, global 512 (the same 1:2 ratio)
        layer_types=list(real["layer_types"]),
        rope_parameters=copy.deepcopy(real["rope_parameters"]),
        num_kv_shared_layers=real["num_kv_shared_layers"],
        use_double_wide_mlp=real["use_double_wide_mlp"],
        attention_k_eq_v=real["attention_k_eq_v"],
    )
    return build_config(kw)


MIXED_TYPES = ["S", "F", "S", "S", "S", "F", "S", "F", "S", "S", "S", "F"]


def mixed_layout():
    types = ["full_attention" if t == "F" else "sliding_attention" for t in MIXED_TYPES]
    kw = common_text(
        num_hidden_layers=len(types),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        global_head_dim=16,
        layer_types=types,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 500000.0},
        },
        num_kv_shared_layers=4,
        use_double_wide_mlp=False,
    )
    return build_config(kw)


def calm_layer_scalars(model):
    """Deep stacks: layer scalars near 1 so that early layers still count after 35 rescalings."""
    quiet_placeholders(model)
    g = mf.gen()
    for name, t in model.state_dict().items():
        if name.endswith("layer_scalar"):
            mf.uniform_(t, 0.9, 1.0, g)


def quiet_placeholders(model):
    """The placeholder ids' embedding rows (replaced by soft tokens on input) shrunk, so that greedy
    decoding never emits a media placeholder (transformers then refuses the token count)."""
    ids = [mf.SPECIAL_IDS[t] for t in ("<|image|>", "<|audio|>", "<|video|>")]
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight[ids] *= 0.1


def calm_deep_stack(model):
    """35 layers of unit-gain residual branches make a chaotic random model (f16 rounding of the
    weights flips most argmaxes); smaller attention/MLP/PLE outputs keep it as tame as tiny-gemma4."""
    calm_layer_scalars(model)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.startswith("model.language_model.layers.") and name.endswith(
                ("o_proj.weight", "down_proj.weight", "per_layer_projection.weight")
            ):
                t.mul_(E2B_BRANCH_GAIN)


E2B_BRANCH_GAIN = 0.35

LAYOUTS = {"e2b-layout": (e2b_layout, calm_deep_stack), "mixed-layout": (mixed_layout, calm_layer_scalars)}

if __name__ == "__main__":
    which = sys.argv[1:] or list(LAYOUTS)
    tok = mf.build_tokenizer()
    for name in which:
        make_cfg, tweak = LAYOUTS[name]
        info, _ = mf.make_gemma4(tok, name=name, cfg=make_cfg(), tweak=tweak, slim=True)
        with open(os.path.join(mf.HERE, name, "config.json")) as f:
            plc = json.load(f)["text_config"].get("per_layer_config")
        print(name, "per_layer_config keys:", sorted(plc or {}), flush=True)
