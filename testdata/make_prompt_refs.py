#!/usr/bin/env python3
"""Prompt set for `cellm compare --prompts` on the real Gemma 3 270M (Q4_K_M GGUF from PyPI).

For each prompt, transformers (GGUF dequantized to float32, eager attention, one thread) greedily
continues it by N_GREEDY tokens; the reference file holds the prompt followed by that continuation
as `input_ids`, the compact top-K logits of every position (`topk_ids`, `topk_logits`,
`logsumexp`), `prompt_len` [1] and `greedy_ids` [N]. Teacher-forced comparison uses all
positions; free-running comparison greedily decodes from the first `prompt_len` ids and checks
the engine's tokens against `greedy_ids`. Writes testdata/prompts/p<i>.safetensors and
testdata/prompts/prompts.jsonl. Run:

    python3 testdata/make_prompt_refs.py

CI never runs this (the outputs are committed).
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_real_refs import greedy, load  # noqa: E402

OUT = os.path.join(HERE, "prompts")
TOPK = 32
N_GREEDY = 32

# Varied on purpose: factual Q&A, narrative prose, code, a list, arithmetic, non-English text,
# a chat-formatted turn and formal/technical prose.
PROMPTS = [
    ("qa_capital", "Question: What is the capital of Japan?\nAnswer:"),
    (
        "story",
        "Once upon a time, in a small village at the edge of a dark forest, there lived a girl "
        "who could talk to birds. One morning",
    ),
    (
        "code_python",
        "def is_prime(n):\n    \"\"\"Return True if n is a prime number.\"\"\"\n    if n < 2:\n"
        "        return False\n",
    ),
    ("list", "Here are five tips for staying healthy:\n1."),
    ("arithmetic", "Q: What is 12 plus 30?\nA: 42\nQ: What is 7 times 8?\nA:"),
    (
        "french",
        "La tour Eiffel est un monument situé à Paris. Elle a été construite pour "
        "l'Exposition universelle de",
    ),
    (
        "chat",
        "<start_of_turn>user\nWrite a short haiku about the sea.<end_of_turn>\n"
        "<start_of_turn>model\n",
    ),
    (
        "science",
        "Photosynthesis is the process by which green plants convert light energy into chemical "
        "energy. During this process,",
    ),
    (
        "json",
        '{"name": "Alice", "age": 30, "languages": ["English", "German"], "address": {"city":',
    ),
    (
        "history",
        "The Industrial Revolution began in Britain in the late eighteenth century and changed",
    ),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    model, tok, path = load()
    print("loaded", path, flush=True)
    lines = []
    for i, (pid, text) in enumerate(PROMPTS):
        p_ids = tok(text, return_tensors="pt")["input_ids"]
        g_ids = greedy(model, p_ids, N_GREEDY)
        ids = torch.cat([p_ids, torch.tensor([g_ids])], dim=1)
        with torch.no_grad():
            lg = model(input_ids=ids).logits[0].float()
        top = torch.topk(lg, TOPK, dim=-1)
        lse = torch.logsumexp(lg.double(), dim=-1).float()
        name = f"p{i}_{pid}.safetensors"
        save_file(
            {
                "input_ids": ids[0].to(torch.int64).contiguous(),
                "topk_ids": top.indices.to(torch.int64).contiguous(),
                "topk_logits": top.values.float().contiguous(),
                "logsumexp": lse.contiguous(),
                "prompt_len": torch.tensor([p_ids.shape[1]], dtype=torch.int64),
                "greedy_ids": torch.tensor(g_ids, dtype=torch.int64),
            },
            os.path.join(OUT, name),
        )
        lines.append(
            {
                "id": pid,
                "reference": name,
                "text": text,
                "prompt_tokens": int(p_ids.shape[1]),
                "greedy_text": tok.decode(g_ids),
            }
        )
        print(f"{name}: {p_ids.shape[1]} + {N_GREEDY} positions: {tok.decode(g_ids)!r}", flush=True)
    with open(os.path.join(OUT, "prompts.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print("done", flush=True)


if __name__ == "__main__":
    main()
