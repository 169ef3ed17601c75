"""Reference chat-template renders from transformers (jinja2) for cellm's chat tests.

Renders (1) the real Gemma 3 template shipped in testdata/tiny-gemma3/tokenizer_config.json and
(2) cellm's built-in Gemma 3 / Gemma 4 templates (read from engine/src/chat.rs) through
`apply_chat_template`, so the Rust side can check minijinja renders byte-exactly what transformers
renders. Writes testdata/chat/chat_cases.json. Run: python3 testdata/chat/make_chat_cases.py
"""
import json
import os
import re

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "testdata", "tiny-gemma3"))
with open(os.path.join(ROOT, "testdata", "tiny-gemma3", "tokenizer_config.json")) as f:
    real_gemma3 = json.load(f)["chat_template"]
with open(os.path.join(ROOT, "engine", "src", "chat.rs")) as f:
    chat_rs = f.read()
builtin = {
    name: re.search(r"const %s: &str = r#\"(.*?)\"#;" % const, chat_rs, re.S).group(1)
    for name, const in [("builtin-gemma3", "GEMMA3_TEMPLATE"), ("builtin-gemma4", "GEMMA4_TEMPLATE")]
}


def msg(role, text, images=0, audios=0):
    return {"role": role, "content": text, "images": images, "audios": audios}


def hf_messages(messages):
    out = []
    for m in messages:
        if m["images"] == 0 and m["audios"] == 0:
            out.append({"role": m["role"], "content": m["content"]})
        else:
            parts = [{"type": "image"}] * m["images"] + [{"type": "audio"}] * m["audios"]
            out.append({"role": m["role"], "content": parts + [{"type": "text", "text": m["content"]}]})
    return out


conversations = {
    "single": [msg("user", "What is the capital of France?")],
    "multi_turn": [
        msg("user", "Hi!"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "  Tell me a joke.\n"),
    ],
    "system": [
        msg("system", "You are a terse assistant."),
        msg("user", "Name three colors."),
        msg("assistant", "Red, green, blue."),
        msg("user", "Two more?"),
    ],
    "image": [msg("user", "Describe this picture.", images=1)],
    "two_images_audio": [msg("user", "Compare them and transcribe.", images=2, audios=1)],
    "unicode": [msg("user", "日本語で答えて 🙂 «ok»\n\ttabs")],
    "thought_in_history": [
        msg("user", "2+2?"),
        msg("assistant", "<|channel>thought\nsimple sum<channel|>4"),
        msg("user", "and 3+3?"),
    ],
}

# Jinja features real HF templates use (Gemma 4's included): block set, namespace, macros with
# keyword arguments, Python string/dict methods, dictsort, map, range with a negative step,
# generation tags, tojson, whitespace control with trim_blocks/lstrip_blocks.
features = r"""{%- macro fmt(value, upper=false) -%}
    {%- if value is string -%}{{ value | upper if upper else value }}
    {%- elif value is mapping -%}{ {%- for k, v in value | dictsort -%}{{ k }}={{ fmt(v) }}{{ ',' if not loop.last }}{%- endfor -%} }
    {%- else -%}{{ value }}{%- endif -%}
{%- endmacro -%}
{{ bos_token }}
{% set ns = namespace(users=0, last='') %}
{% for m in messages %}
    {% if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}
    {% set body %}{% if m.content is string %}{{ m.content.strip() }}{% else %}{% for p in m.content %}[{{ p.get('type') }}]{{ p.get('text', '') | trim }}{% endfor %}{% endif %}{% endset %}
    {{ m['role'] | upper }}: {% generation %}{{ body.replace('\n', ' / ') }}{% endgeneration %}
    {% set ns.last = body.split(' ')[0] %}
{% endfor %}
users={{ ns.users }} first-word={{ ns.last }} starts={{ messages[0].content.startswith('What') if messages[0].content is string else 'n/a' }}
{% for i in range(messages | length - 1, -1, -1) %}{{ i }}{% endfor %}
{{ fmt({'b': 'x', 'a': {'c': 'y'}}) }} {{ fmt('shout', upper=true) }} {{ ['a', 'b'] | map('upper') | list | join('') }}
{{ {'k': [1, 2.5, none, true, 'é"\n']} | tojson }} {{ {'k': [1]} | tojson(indent=2) }}
{%- if add_generation_prompt %}

GEN{% endif %}
"""

cases = []
templates = {"tiny-gemma3": real_gemma3, **builtin, "features": features}
for tname, source in templates.items():
    for cname, messages in conversations.items():
        if tname != "builtin-gemma4" and cname == "thought_in_history":
            continue
        if tname == "features" and cname not in ("single", "system", "image", "two_images_audio"):
            continue
        for gen in (True, False):
            variable_sets = [{}]
            if tname == "builtin-gemma4":
                variable_sets.append({"enable_thinking": True})
            for variables in variable_sets:
                text = tok.apply_chat_template(
                    hf_messages(messages),
                    chat_template=source,
                    tokenize=False,
                    add_generation_prompt=gen,
                    **variables,
                )
                cases.append(
                    {
                        "template": tname,
                        "conversation": cname,
                        "messages": messages,
                        "add_generation_prompt": gen,
                        "variables": variables,
                        "expected": text,
                    }
                )

with open(os.path.join(HERE, "chat_cases.json"), "w") as f:
    json.dump({"features_template": features, "cases": cases}, f, ensure_ascii=False, indent=1)
print(len(cases), "cases")
