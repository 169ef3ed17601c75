#!/usr/bin/env python3
"""Make the committed tiny-model fixtures and their transformers reference outputs.

Writes testdata/tiny-gemma3/ and testdata/tiny-gemma4/ (HF folders + reference.safetensors,
reference.json, dtype_kl.json; tiny-gemma3 also tokenizer_cases.json; tiny-gemma4 also
tiny_image.png and tiny_audio.wav). See testdata/README.md for what each tensor is.
Deterministic: fixed seeds, one torch thread, float32, eager attention. Rerun with

    python3 testdata/make_fixtures.py            # both models
    python3 testdata/make_fixtures.py gemma3     # one of them

Needs torch, transformers (5.2x), tokenizers, safetensors, numpy, pillow. CI never runs this.
"""

import json
import math
import os
import sys
import wave

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 512

# ---------------------------------------------------------------------------------------------
# Tokenizer: a Gemma-style BPE (spaces -> "▁", byte fallback, no pre-tokenizer, <bos> prepended)
# squeezed into 512 ids. Fixed ids below; the 256 byte tokens follow the low specials and the
# trained tokens fill every remaining id (so the multimodal specials can sit at 300..306).
# ---------------------------------------------------------------------------------------------
LOW_SPECIALS = [
    "<pad>",  # 0
    "<eos>",  # 1
    "<bos>",  # 2
    "<unk>",  # 3
    "<mask>",  # 4
    "<start_of_turn>",  # 5  (Gemma 3 turn markers)
    "<end_of_turn>",  # 6
    "<start_of_image>",  # 7
    "<end_of_image>",  # 8
    "<|turn>",  # 9  (Gemma 4 turn markers)
    "<turn|>",  # 10
    "<|think|>",  # 11
    "<|channel>",  # 12
    "<channel|>",  # 13
    "<|tool>",  # 14
    "<tool|>",  # 15
    "<|tool_call>",  # 16
    "<tool_call|>",  # 17
    "<|tool_response>",  # 18
    "<tool_response|>",  # 19
    '<|"|>',  # 20
]
MM_SPECIALS = {  # Gemma 4 multimodal markers, remapped into the small vocab
    300: "<|image>",  # boi
    301: "<image|>",  # eoi
    302: "<|image|>",  # image placeholder
    303: "<|audio|>",  # audio placeholder
    304: "<|audio>",  # boa
    305: "<audio|>",  # eoa
    306: "<|video|>",  # video placeholder
}
SPECIAL_IDS = {tok: i for i, tok in enumerate(LOW_SPECIALS)}
SPECIAL_IDS.update({tok: i for i, tok in MM_SPECIALS.items()})

CORPUS = """\
The little robot woke up early and looked out of the window. The sun was shining over the hills,
and the river below was full of light. It wanted to learn how to speak, so it read every book in
the house. Some books were about the sea, some were about the stars, and one was about a cat who
could count to a hundred. The robot liked that one best.
Every morning it made a cup of tea for the old woman who lived there. She told it stories about
her life: about the city where she was born, about the war, about the time she saw a whale near
the coast. The robot listened and asked questions. What is a whale? Why is the sea so big? Where
do the birds go in the winter? She laughed and said that good questions are worth more than
answers.
In the afternoon they went for a walk in the garden. There were red and yellow flowers, tall
trees, and a small pond with green water. The robot counted the fish: one, two, three, four,
five, six, seven. It wrote the numbers in a notebook, 1 2 3 4 5 6 7 8 9 10, and drew a picture of
each fish.
When the evening came, the woman read to it from a book of poems. The words were strange and
beautiful, and the robot did not understand all of them. But it understood that language is a way
to share what we see and what we feel, and that there is always something new to learn.
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
def add(a, b):
    return a + b
print(add(2, 3))
User: Hello, how are you today?
Model: I am fine, thank you. How can I help you?
"""

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# ~40 tokens with this tokenizer: longer than the sliding window (8) on purpose.
TEXT_PROMPT = "The little robot read every book in the old house, and then it asked: where do the birds go in the winter?"


def build_tokenizer():
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    n_trained = VOCAB - len(LOW_SPECIALS) - len(MM_SPECIALS) - len(byte_tokens)

    # Train on the corpus; "▁word" pieces (split before each ▁) so merges never cross a word start.
    trainer_tok = Tokenizer(models.BPE(unk_token=None))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=n_trained, special_tokens=[], limit_alphabet=100, show_progress=False)
    trainer_tok.train_from_iterator([CORPUS], trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    trained_vocab = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    assert len(trained_vocab) == n_trained, (len(trained_vocab), n_trained)
    merges = trained["merges"]

    vocab = {}
    for i, tok in enumerate(LOW_SPECIALS):
        vocab[tok] = i
    for j, tok in enumerate(byte_tokens):
        vocab[tok] = len(LOW_SPECIALS) + j
    for i, tok in MM_SPECIALS.items():
        vocab[tok] = i
    free = [i for i in range(VOCAB) if i not in set(vocab.values())]
    assert len(free) == n_trained
    for (tok, _), i in zip(trained_vocab, free):
        assert tok not in vocab, tok
        vocab[tok] = i
    assert sorted(vocab.values()) == list(range(VOCAB))

    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LOW_SPECIALS])
    tok.add_special_tokens([AddedToken(MM_SPECIALS[i], special=True, normalized=False) for i in sorted(MM_SPECIALS)])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", SPECIAL_IDS["<bos>"])]
    )
    for t, i in SPECIAL_IDS.items():
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t), i)
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB
    return tok


def write_tokenizer(folder, tok, chat_template, extra):
    tok.save(os.path.join(folder, "tokenizer.json"))
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for t, i in sorted(SPECIAL_IDS.items(), key=lambda kv: kv[1])
    }
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
        "padding_side": "left",
        "added_tokens_decoder": added,
    }
    cfg.update(extra)
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def gen():
    return torch.Generator().manual_seed(0)


def normal_(t, std, g):
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32) * std)


def uniform_(t, lo, hi, g):
    with torch.no_grad():
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float32))


def entropy_stats(logits):
    lp = torch.log_softmax(logits.double(), dim=-1)
    ent = -(lp.exp() * lp).sum(-1)
    return float(ent.mean()), float(ent.min()), float(ent.max())


def kl_stats(ref_logits, logits):
    lp = torch.log_softmax(ref_logits.double(), dim=-1)
    lq = torch.log_softmax(logits.double(), dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    top1 = float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean())
    return {
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "top1_match": top1,
        "max_abs_logit_diff": float((ref_logits - logits).abs().max()),
    }


def rounded_copy(model, dtype, matrices_only):
    """Copy of `model` whose float weights went through `dtype` and back (compute stays f32)."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if not t.is_floating_point():
                continue
            if matrices_only and t.dim() < 2:
                continue
            t.copy_(t.to(dtype).to(torch.float32))
    return m


def greedy_with_cache(model, input_ids, n_new, **extra):
    """Greedy decode with transformers' KV cache: one prefill, then one token per step."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=input_ids, cache=cache, use_cache=True, **extra)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    ids = [int(nxt)]
    for _ in range(n_new - 1):
        out = model(input_ids=nxt, cache=cache, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        ids.append(int(nxt))
    return ids


def greedy_recompute(model, input_ids, n_new, **extra):
    ids = input_ids
    new = []
    for _ in range(n_new):
        logits = model(input_ids=ids, use_cache=False, **extra).logits  # media rides along every time
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        new.append(int(nxt))
        ids = torch.cat([ids, nxt], dim=1)
    return new


class Recorder:
    """Forward hooks that copy module outputs into a dict under given names."""

    def __init__(self):
        self.out = {}
        self.handles = []

    def add(self, module, name, pick=lambda o: o):
        def hook(_m, _args, output):
            self.out[name] = pick(output).detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def clear(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def first(o):
    return o[0] if isinstance(o, (tuple, list)) else o


def bisect_scale(eval_entropy, target, lo, hi, iters=18):
    """Find s in [lo, hi] with eval_entropy(s) ~= target (entropy falls as s grows)."""
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if eval_entropy(mid) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def save_refs(path, tensors):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        if v.dtype == torch.bool:
            raise ValueError(k)
    save_file(tensors, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# tiny Gemma 3
# ---------------------------------------------------------------------------------------------
G3_LAYER_TYPES = [
    "sliding_attention",
    "sliding_attention",
    "full_attention",
    "sliding_attention",
    "sliding_attention",
    "full_attention",
]
TARGET_ENTROPY = 2.0
# Chosen by a small scan so that greedy decoding does not just repeat one token (a stronger KV-cache
# test): a small embedding and linear weights of std 2/sqrt(fan_in).
G3_EMBED_STD = 0.05
W_GAIN = 2.0


def make_gemma3(tok):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = os.path.join(HERE, "tiny-gemma3")
    os.makedirs(folder, exist_ok=True)
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=8,
        layer_types=G3_LAYER_TYPES,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, SPECIAL_IDS["<end_of_turn>"]],
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    g = gen()
    sd = model.state_dict()
    for name in sorted(sd):
        t = sd[name]
        if name.endswith("norm.weight"):  # Gemma 3 norms multiply by (1 + w)
            uniform_(t, -0.1, 0.1, g)
        elif name == "model.embed_tokens.weight":
            normal_(t, 1.0, g)  # rescaled below for peakedness
        elif t.dim() == 2:
            normal_(t, W_GAIN / math.sqrt(t.shape[1]), g)
        else:
            raise RuntimeError(f"unhandled tensor {name} {tuple(t.shape)}")
    # Peakedness: a large input embedding makes a random tied model echo its last token forever,
    # so the embedding stays moderate (std EMBED_STD) and the final norm's gain k is raised instead:
    # (1 + w) = k * (1 + u) with u in [-0.1, 0.1].
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(G3_EMBED_STD)
    u = model.model.norm.weight.detach().clone()

    ids = torch.tensor([tok.encode(TEXT_PROMPT).ids], dtype=torch.long)

    def ent_at(k):
        with torch.no_grad():
            model.model.norm.weight.copy_(k * (1.0 + u) - 1.0)
            return entropy_stats(model(input_ids=ids).logits[0])[0]

    scale = bisect_scale(ent_at, TARGET_ENTROPY, 0.5, 200.0)
    with torch.no_grad():
        model.model.norm.weight.copy_(scale * (1.0 + u) - 1.0)

    model.generation_config.bos_token_id = 2
    model.generation_config.eos_token_id = [1, SPECIAL_IDS["<end_of_turn>"]]
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder, tok, GEMMA3_CHAT_TEMPLATE, {})

    # Reload what was written and take every reference from the reloaded model.
    model = Gemma3ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    rec = Recorder()
    rec.add(model.model.embed_tokens, "embeddings")
    for i, layer in enumerate(model.model.layers):
        rec.add(layer, f"hidden_states.{i}", first)
    rec.add(model.model.norm, "final_norm_out")
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    rec.clear()
    refs = {"input_ids": ids[0].clone()}
    refs.update({k: v[0] for k, v in rec.out.items()})
    refs["logits"] = logits
    with torch.no_grad():
        greedy = greedy_with_cache(model, ids, 16)
        greedy_nc = greedy_recompute(model, ids, 16)
    assert greedy == greedy_nc, (greedy, greedy_nc)
    refs["greedy_ids"] = torch.tensor(greedy, dtype=torch.long)
    save_refs(os.path.join(folder, "reference.safetensors"), refs)

    ent = entropy_stats(logits)
    dkl = dtype_kls(model, lambda m: m(input_ids=ids).logits[0], logits)
    write_json(os.path.join(folder, "dtype_kl.json"), {"text": dkl})

    chat = chat_cases(folder)
    info = {
        "model": "tiny-gemma3 (Gemma3ForCausalLM, random weights, f32)",
        "prompt": TEXT_PROMPT,
        "input_ids": ids[0].tolist(),
        "greedy_ids": greedy,
        "greedy_text": tok.decode(greedy, skip_special_tokens=False),
        "embedding_std": G3_EMBED_STD,
        "final_norm_gain": scale,
        "entropy_nats": {"mean": ent[0], "min": ent[1], "max": ent[2], "uniform": math.log(VOCAB)},
        "max_abs_logit": float(logits.abs().max()),
        "chat_template_cases": chat,
    }
    write_json(os.path.join(folder, "reference.json"), info)
    print("tiny-gemma3:", json.dumps({k: info[k] for k in ("entropy_nats", "greedy_ids")}), flush=True)
    print("tiny-gemma3 dtype kl:", json.dumps(dkl), flush=True)
    return info, dkl


def dtype_kls(model, run, ref_logits):
    res = {}
    for dname, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        res[dname] = {}
        for variant, mo in (("all_float_tensors", False), ("matrices_only", True)):
            m = rounded_copy(model, dt, mo)
            with torch.no_grad():
                res[dname][variant] = kl_stats(ref_logits, run(m))
            del m
    return res


def chat_cases(folder):
    """Render the folder's chat template with transformers (None if it has none)."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(folder)
    if not getattr(t, "chat_template", None):
        return None
    convs = [
        [{"role": "user", "content": "Hello there!"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where do the birds go?"},
            {"role": "assistant", "content": "South."},
            {"role": "user", "content": "  Why?  "},
        ],
    ]
    out = []
    for c in convs:
        text = t.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        ids = t(text, add_special_tokens=False)["input_ids"]
        out.append({"messages": c, "add_generation_prompt": True, "text": text, "ids": ids})
    return out


def check_tokenizer_roundtrip(folder, tok):
    """transformers' AutoTokenizer must give the same ids as the raw tokenizers file."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(folder)
    cases = [TEXT_PROMPT, "héllo wörld 日本 🙂", "<start_of_turn>user\nhi<end_of_turn>\n", "a  b\tc\n\nd", "<|image|><|audio>x"]
    res = []
    for s in cases:
        for add in (True, False):
            a = t(s, add_special_tokens=add)["input_ids"]
            b = tok.encode(s, add_special_tokens=add).ids
            assert a == b, (s, add, a, b)
            res.append({"text": s, "add_special_tokens": add, "ids": b, "decoded": tok.decode(b, skip_special_tokens=False)})
    return res


# ---------------------------------------------------------------------------------------------
# tiny Gemma 4 (all towers)
# ---------------------------------------------------------------------------------------------
G4_LAYER_TYPES = G3_LAYER_TYPES  # S S F S S F
G4_EMBED_STD = 0.05
G4_W_GAIN = 1.0  # 2.0 (as in tiny-gemma3) makes this model chaotic under bf16 rounding
G4_TOP_LOGIT = 45.0
IMAGE_H, IMAGE_W, IMAGE_BUDGET = 288, 480, 70  # a fixed point of the resize rule: 18x30 patches, 60 tokens
AUDIO_SAMPLES = 16000  # 1 s at 16 kHz -> 99 frames -> 25 soft tokens
CLIP_QUANTILE = 0.01  # clip bounds at the 1% / 99% quantiles of the unclipped activations


def gemma4_config():
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4TextConfig, Gemma4VisionConfig

    text = Gemma4TextConfig(
        vocab_size=VOCAB,
        vocab_size_per_layer_input=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=32,
        layer_types=list(G4_LAYER_TYPES),
        sliding_window=8,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        hidden_size_per_layer_input=8,
        num_kv_shared_layers=3,
        use_double_wide_mlp=True,
        final_logit_softcapping=30.0,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, SPECIAL_IDS["<turn|>"]],
        tie_word_embeddings=True,
    )
    vision = Gemma4VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        patch_size=16,
        pooling_kernel_size=3,
        position_embedding_size=64,
        use_clipped_linears=True,
        standardize=False,
    )
    audio = Gemma4AudioConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        subsampling_conv_channels=[128, 8],
        conv_kernel_size=5,
        attention_chunk_size=12,
        attention_context_left=13,
        attention_context_right=0,
        output_proj_dims=48,
        use_clipped_linears=True,
    )
    cfg = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=audio,
        boi_token_id=SPECIAL_IDS["<|image>"],
        eoi_token_id=SPECIAL_IDS["<image|>"],
        image_token_id=SPECIAL_IDS["<|image|>"],
        audio_token_id=SPECIAL_IDS["<|audio|>"],
        boa_token_id=SPECIAL_IDS["<|audio>"],
        eoa_token_index=SPECIAL_IDS["<audio|>"],
        eoa_token_id=SPECIAL_IDS["<audio|>"],
        video_token_id=SPECIAL_IDS["<|video|>"],
        tie_word_embeddings=True,
    )
    cfg.pad_token_id = 0
    cfg.bos_token_id = 2
    cfg.eos_token_id = [1, SPECIAL_IDS["<turn|>"]]
    return cfg


def make_image():
    """A deterministic 288x480 RGB test image: gradients, a disc, a box, stripes and some noise."""
    y, x = np.mgrid[0:IMAGE_H, 0:IMAGE_W].astype(np.float64)
    r = 255 * x / (IMAGE_W - 1)
    gch = 255 * y / (IMAGE_H - 1)
    b = 127.5 + 127.5 * np.sin(x / 17.0) * np.cos(y / 23.0)
    img = np.stack([r, gch, b], axis=-1)
    disc = (x - 330) ** 2 + (y - 120) ** 2 < 70**2
    img[disc] = [250, 230, 40]
    box = (x > 40) & (x < 160) & (y > 170) & (y < 260)
    img[box] = [20, 40, 200]
    stripes = ((x // 6) % 2 == 0) & (y > 20) & (y < 60) & (x > 30) & (x < 250)
    img[stripes] = [255, 255, 255]
    rng = np.random.default_rng(7)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_audio():
    """1 s of 16-bit PCM at 16 kHz: two tones, a chirp and a little noise; returns int16 samples."""
    t = np.arange(AUDIO_SAMPLES) / 16000.0
    sig = 0.30 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 1250 * t + 0.3)
    sig += 0.20 * np.sin(2 * np.pi * (200 * t + 1400 * t * t)) * (t > 0.3)
    rng = np.random.default_rng(11)
    sig += rng.normal(0, 0.01, sig.shape)
    sig *= np.minimum(1.0, np.minimum(t / 0.05, (1.0 - t) / 0.05))  # short fades
    return np.clip(np.rint(sig * 32767), -32768, 32767).astype(np.int16)


def write_wav(path, pcm):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())


def randomise_gemma4(model):
    from transformers.models.gemma4.modeling_gemma4 import Gemma4RMSNorm

    g = gen()
    norm_weights = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, (Gemma4RMSNorm, torch.nn.LayerNorm)) and getattr(mod, "weight", None) is not None:
            norm_weights.add(f"{mname}.weight")
    sd = model.state_dict()
    for name in sorted(sd):
        t = sd[name]
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            # Gemma 4 attention has scaling 1.0 (the q/k norms replace 1/sqrt(d)). With weights near 1
            # the random model's attention is so sharp that it turns chaotic (bf16 rounding of any
            # weight flips the argmax); weights near 0.5 give scores of about unit spread.
            uniform_(t, 0.45, 0.55, g)
        elif name in norm_weights:  # Gemma 4 norms multiply by w directly
            uniform_(t, 0.9, 1.1, g)
        elif name.endswith("layer_scalar"):
            uniform_(t, 0.5, 1.0, g)
        elif name.endswith(("input_min", "output_min")):
            t.fill_(-float("inf"))  # calibrated later
        elif name.endswith(("input_max", "output_max")):
            t.fill_(float("inf"))
        elif name.endswith("per_dim_scale"):
            normal_(t, 0.5, g)
        elif name.endswith("position_embedding_table"):
            normal_(t, 0.5, g)
        elif name == "model.language_model.embed_tokens.weight":
            normal_(t, G4_EMBED_STD, g)
        elif name == "model.language_model.embed_tokens_per_layer.weight":
            normal_(t, 0.3, g)
        elif name.endswith(".bias"):
            normal_(t, 0.1, g)
        elif t.dim() >= 2:
            fan_in = t[0].numel()
            normal_(t, G4_W_GAIN / math.sqrt(fan_in), g)
        else:
            raise RuntimeError(f"unhandled tensor {name} {tuple(t.shape)}")


def calibrate_clips(model, run):
    """Set every clippable linear's bounds to quantiles of its unclipped in/out activations."""
    from transformers.models.gemma4.modeling_gemma4 import Gemma4ClippableLinear

    seen = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, Gemma4ClippableLinear):

            def hook(m, args, out, name=name):
                seen[name] = (args[0].detach().flatten(), out.detach().flatten())

            handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        run(model)
    for h in handles:
        h.remove()
    mods = dict(model.named_modules())

    def q(x, p):
        v = torch.quantile(x.double()[: 1 << 24], p).float()
        return v.to(torch.bfloat16).to(torch.float32)  # bounds exact in bf16 and f16-representable

    with torch.no_grad():
        for name, (xin, xout) in seen.items():
            m = mods[name]
            m.input_min.copy_(q(xin, CLIP_QUANTILE))
            m.input_max.copy_(q(xin, 1 - CLIP_QUANTILE))
            m.output_min.copy_(q(xout, CLIP_QUANTILE))
            m.output_max.copy_(q(xout, 1 - CLIP_QUANTILE))
    return sorted(seen)


def clip_fractions(model, run):
    from transformers.models.gemma4.modeling_gemma4 import Gemma4ClippableLinear

    res = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, Gemma4ClippableLinear):

            def pre(m, args, name=name):
                x = args[0]
                res[name] = {"in_clipped": float(((x < m.input_min) | (x > m.input_max)).double().mean())}

            def post(m, args, out, name=name):
                y = m.linear(torch.clamp(args[0], m.input_min, m.input_max))
                res[name]["out_clipped"] = float(((y < m.output_min) | (y > m.output_max)).double().mean())

            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post))
    with torch.no_grad():
        run(model)
    for h in handles:
        h.remove()
    return res


def make_gemma4(tok, name="tiny-gemma4", cfg=None, tweak=None, slim=False):
    """Writes testdata/<name>/. `cfg` defaults to gemma4_config(); `tweak(model)` adjusts the
    random weights before calibration; other folders read the media files of tiny-gemma4; `slim`
    keeps only the logits, ids, media inputs and soft tokens (no per-layer states) in
    reference.safetensors."""
    from PIL import Image
    from transformers import Gemma4ForConditionalGeneration
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    media_dir = os.path.join(HERE, "tiny-gemma4")

    # Media inputs, written first so the references come from the committed files.
    if name == "tiny-gemma4":
        Image.fromarray(make_image(), "RGB").save(os.path.join(folder, "tiny_image.png"), optimize=True)
        write_wav(os.path.join(folder, "tiny_audio.wav"), make_audio())
    img = Image.open(os.path.join(media_dir, "tiny_image.png")).convert("RGB")
    with wave.open(os.path.join(media_dir, "tiny_audio.wav"), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    waveform = (pcm.astype(np.float32) / 32768.0).astype(np.float32)  # what a WAV reader gives

    ip = Gemma4ImageProcessorPil(max_soft_tokens=IMAGE_BUDGET)
    iv = ip(images=[img], return_tensors="pt")
    fe = Gemma4AudioFeatureExtractor()
    av = fe([waveform], return_tensors="pt")
    n_img = int(iv["num_soft_tokens_per_image"][0])

    ids_text = torch.tensor([tok.encode(TEXT_PROMPT).ids], dtype=torch.long)

    torch.manual_seed(0)
    cfg = cfg if cfg is not None else gemma4_config()
    model = Gemma4ForConditionalGeneration(cfg).eval()
    model.config._attn_implementation = "eager"
    for sub in (model.config.text_config, model.config.vision_config, model.config.audio_config):
        sub._attn_implementation = "eager"
    randomise_gemma4(model)
    if tweak is not None:
        tweak(model)

    # Number of audio soft tokens the tower produces for this clip.
    with torch.no_grad():
        a_out = model.model.get_audio_features(av["input_features"], av["input_features_mask"])
    n_aud = int(a_out.attention_mask.sum())
    mm_prompt = (
        "<|turn>user\nLook at this:"
        + "<|image>" + "<|image|>" * n_img + "<image|>"
        + " and listen:"
        + "<|audio>" + "<|audio|>" * n_aud + "<audio|>"
        + "<turn|>\n<|turn>model\n"
    )
    ids_mm = torch.tensor([tok.encode(mm_prompt).ids], dtype=torch.long)
    mm_kwargs = dict(
        pixel_values=iv["pixel_values"],
        image_position_ids=iv["image_position_ids"],
        input_features=av["input_features"],
        input_features_mask=av["input_features_mask"],
    )

    def run_mm(m):
        return m(input_ids=ids_mm, **mm_kwargs).logits[0]

    def run_text(m):
        return m(input_ids=ids_text).logits[0]

    clipped = calibrate_clips(model, run_mm)

    # Peakedness and a soft-cap that bends: the final norm's weights become k * u (u in [0.9, 1.1]),
    # with k chosen so that the mean top pre-cap logit of the text prompt is G4_TOP_LOGIT (1.5x the
    # cap of 30). Pre-cap logits are linear in k; greedy ids do not depend on k.
    lm0 = model.model.language_model
    h = {}
    hook = lm0.norm.register_forward_hook(lambda m, a, o: h.__setitem__("x", o.detach()))
    with torch.no_grad():
        run_text(model)
    hook.remove()
    top1 = float((h["x"][0] @ lm0.embed_tokens.weight.T).max(-1).values.mean())
    gain = G4_TOP_LOGIT / top1
    with torch.no_grad():
        lm0.norm.weight.mul_(gain)

    model.generation_config.bos_token_id = 2
    model.generation_config.eos_token_id = [1, SPECIAL_IDS["<turn|>"]]
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    extra = {
        "boi_token": "<|image>",
        "eoi_token": "<image|>",
        "image_token": "<|image|>",
        "boa_token": "<|audio>",
        "eoa_token": "<audio|>",
        "audio_token": "<|audio|>",
        "video_token": "<|video|>",
    }
    write_tokenizer(folder, tok, None, extra)  # no chat_template: the engine's built-in one is used

    # Reload and take all references from the reloaded model.
    model = Gemma4ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    lm = model.model.language_model

    def capture(run, prefix, media):
        rec = Recorder()
        rec.add(lm.embed_tokens, "embeddings")
        for i, layer in enumerate(lm.layers):
            rec.add(layer, f"hidden_states.{i}", first)
        rec.add(lm.norm, "final_norm_out")
        if media:
            vt, at = model.model.vision_tower, model.model.audio_tower
            rec.add(vt.patch_embedder, "vision_patch_embeddings")
            for i, layer in enumerate(vt.encoder.layers):
                rec.add(layer, f"vision_layer_out.{i}", first)
            rec.add(vt, "vision_soft_tokens", lambda o: o.last_hidden_state)
            rec.add(model.model.embed_vision, "vision_embedded")
            rec.add(at.subsample_conv_projection, "audio_subsample_out", lambda o: o[0])
            rec.add(at.subsample_conv_projection, "audio_subsample_mask", lambda o: o[1].to(torch.uint8))
            for i, layer in enumerate(at.layers):
                rec.add(layer, f"audio_layer_out.{i}", first)
            rec.add(at, "audio_tower_out", lambda o: o.last_hidden_state)
            rec.add(at, "audio_tower_mask", lambda o: o.attention_mask.to(torch.uint8))
            rec.add(model.model.embed_audio, "audio_embedded")
        got = {}

        def lm_pre(_m, _args, kwargs):
            got["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()
            got["ple_token_part"] = kwargs["per_layer_inputs"].detach().clone()

        h = lm.register_forward_pre_hook(lm_pre, with_kwargs=True)
        orig = lm.project_per_layer_inputs

        def proj(*a, **k):
            out = orig(*a, **k)
            got["ple_final"] = out.detach().clone()
            return out

        lm.project_per_layer_inputs = proj
        with torch.no_grad():
            logits = run(model)
        lm.project_per_layer_inputs = orig
        h.remove()
        rec.clear()
        out = {}
        for k, v in rec.out.items():
            out[k] = v[0] if v.dim() >= 2 and v.shape[0] == 1 and not k.startswith("vision_soft") else v
        for k, v in got.items():
            out[k] = v[0]
        with torch.no_grad():
            out["logits_precap"] = out["final_norm_out"] @ lm.embed_tokens.weight.T
        out["logits"] = logits
        return {prefix + k: v for k, v in out.items()}

    refs = {"input_ids": ids_text[0].clone()}
    refs.update(capture(run_text, "", False))
    mm = capture(run_mm, "mm_", True)
    # media names without the mm_ prefix (there is one multimodal prompt)
    for k, v in mm.items():
        key = k[3:] if k[3:].startswith(("vision_", "audio_")) else k
        refs[key] = v
    refs["mm_input_ids"] = ids_mm[0].clone()
    refs["pixel_values"] = iv["pixel_values"][0].float()
    refs["image_position_ids"] = iv["image_position_ids"][0].long()
    refs["num_soft_tokens"] = torch.tensor([n_img], dtype=torch.long)
    refs["audio_waveform"] = torch.from_numpy(waveform)
    refs["input_features"] = av["input_features"][0].float()
    refs["input_features_mask"] = av["input_features_mask"][0].to(torch.uint8)
    refs["num_audio_tokens"] = torch.tensor([n_aud], dtype=torch.long)

    with torch.no_grad():
        greedy = greedy_with_cache(model, ids_text, 16)
        greedy_nc = greedy_recompute(model, ids_text, 16)
        mm_greedy = greedy_with_cache(model, ids_mm, 16, **mm_kwargs)
        mm_greedy_nc = greedy_recompute(model, ids_mm, 16, **mm_kwargs)
    assert greedy == greedy_nc, (greedy, greedy_nc)
    assert mm_greedy == mm_greedy_nc, (mm_greedy, mm_greedy_nc)
    refs["greedy_ids"] = torch.tensor(greedy, dtype=torch.long)
    refs["mm_greedy_ids"] = torch.tensor(mm_greedy, dtype=torch.long)
    kept = refs
    if slim:
        keep = ("input_ids", "mm_input_ids", "logits", "mm_logits", "greedy_ids", "mm_greedy_ids",
                "vision_embedded", "audio_embedded", "num_soft_tokens", "num_audio_tokens")
        kept = {k: v for k, v in refs.items() if k in keep}
    save_refs(os.path.join(folder, "reference.safetensors"), kept)

    ent_t = entropy_stats(refs["logits"])
    ent_m = entropy_stats(refs["mm_logits"])
    pre = refs["logits_precap"]
    bend = (pre - refs["logits"]).abs()
    dkl = {
        "text": dtype_kls(model, run_text, refs["logits"]),
        "multimodal": dtype_kls(model, run_mm, refs["mm_logits"]),
    }
    write_json(os.path.join(folder, "dtype_kl.json"), dkl)
    fr = clip_fractions(model, run_mm)
    info = {
        "model": f"{name} (Gemma4ForConditionalGeneration, random weights, f32, all towers)",
        "prompt": TEXT_PROMPT,
        "input_ids": ids_text[0].tolist(),
        "greedy_ids": greedy,
        "mm_prompt": mm_prompt,
        "mm_input_ids": ids_mm[0].tolist(),
        "mm_greedy_ids": mm_greedy,
        "num_image_soft_tokens": n_img,
        "num_audio_soft_tokens": n_aud,
        "image": {"file": "tiny_image.png" if name == "tiny-gemma4" else "../tiny-gemma4/tiny_image.png", "height": IMAGE_H, "width": IMAGE_W, "max_soft_tokens": IMAGE_BUDGET,
                  "processor": "Gemma4ImageProcessorPil (no resize needed: fixed point)"},
        "audio": {"file": "tiny_audio.wav" if name == "tiny-gemma4" else "../tiny-gemma4/tiny_audio.wav", "samples": AUDIO_SAMPLES, "rate": 16000,
                  "waveform": "int16 / 32768 (audio_waveform in reference.safetensors)"},
        "embedding_std": G4_EMBED_STD,
        "final_norm_gain": gain,
        "entropy_nats": {
            "text": {"mean": ent_t[0], "min": ent_t[1], "max": ent_t[2]},
            "multimodal": {"mean": ent_m[0], "min": ent_m[1], "max": ent_m[2]},
            "uniform": math.log(VOCAB),
        },
        "softcap": {
            "cap": 30.0,
            "max_abs_logit_precap": float(pre.abs().max()),
            "max_abs_logit_precap_mm": float(refs["mm_logits_precap"].abs().max()),
            "max_abs_bend": float(bend.max()),
            "frac_logits_bent_over_1": float((bend > 1.0).double().mean()),
        },
        "kv_sharing_modes": model.config.text_config.kv_sharing_modes,
        "clip_fraction": fr,
        "clipped_linears": len(clipped),
    }
    write_json(os.path.join(folder, "reference.json"), info)
    print(f"{name}:", json.dumps({k: info[k] for k in ("entropy_nats", "softcap", "greedy_ids", "mm_greedy_ids")}), flush=True)
    print(f"{name} dtype kl:", json.dumps(dkl), flush=True)
    return info, dkl


if __name__ == "__main__":
    which = sys.argv[1:] or ["gemma3", "gemma4"]
    tok = build_tokenizer()
    if "gemma3" in which:
        make_gemma3(tok)
        cases = check_tokenizer_roundtrip(os.path.join(HERE, "tiny-gemma3"), tok)
        write_json(os.path.join(HERE, "tiny-gemma3", "tokenizer_cases.json"), cases)
    if "gemma4" in which:
        make_gemma4(tok)
        check_tokenizer_roundtrip(os.path.join(HERE, "tiny-gemma4"), tok)  # same tokenizer.json
