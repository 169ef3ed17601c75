#!/usr/bin/env python3
"""Gemma 4 GGUF fixtures for cellm-convert's GGUF source, made by llama.cpp's own converter from
the tiny Hugging Face fixture testdata/tiny-gemma4 (random weights saved by transformers).

Writes testdata/gguf-gemma4/:
  tiny-gemma4-f32.gguf         text model, arch gemma4, every tensor F32   (--outtype f32)
  tiny-gemma4-q8_0.gguf        text model as llama.cpp's --outtype q8_0 makes it (Q8_0 + F32)
  tiny-gemma4-mixed.gguf       the F32 file with its 2-D weights re-encoded by gguf-py round-robin
                               as F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (tiny rows are too short
                               for the K-quants, whose 256-element blocks the dequant fixtures in
                               testdata/gguf/dequant cover)
  mmproj-tiny-gemma4-f32.gguf  vision + audio towers, arch clip, projectors gemma4v / gemma4a
  e2b-layout/                  the same pair (F32 text + F32 mmproj) of testdata/e2b-layout: the
                               real E2B layer layout (35 layers) at toy widths

llama.cpp's mmproj converter needs the image processor's mean/std: the source folder is a copy of
tiny-gemma4 plus the preprocessor_config.json that transformers' Gemma4ImageProcessor writes.

Needs torch, transformers, numpy and llama.cpp's converter as vendored in llama-cpp-python 0.3.36
(see ../shared/tools/llamacpp-anchor/prepare.sh; extract lcpp.tar.xz to /var/tmp).
Run: python3 testdata/make_gguf4_fixtures.py [LLAMA_CPP_DIR]   (default /var/tmp/lcpp)
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "tiny-gemma4")
OUT = os.path.join(HERE, "gguf-gemma4")
OUT_E2B = os.path.join(HERE, "gguf-gemma4", "e2b-layout")
LCPP = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/lcpp"
COPY = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]


def convert(src, outfile, outtype, mmproj=False):
    cmd = [sys.executable, os.path.join(LCPP, "convert_hf_to_gguf.py"), src,
           "--outtype", outtype, "--outfile", outfile]
    if mmproj:
        cmd.append("--mmproj")
    env = dict(os.environ, PYTHONPATH=os.path.join(LCPP, "gguf-py"))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def requantize(src, dst):
    """Copy a GGUF, re-encoding 2-D F32 weights round-robin in the types gguf-py can write."""
    sys.path.insert(0, os.path.join(LCPP, "gguf-py"))
    import gguf
    from gguf import GGMLQuantizationType as T

    cycle = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, value, vtype)
    i = 0
    for t in r.tensors:
        data = np.asarray(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
        qtype = T.F32
        if data.ndim == 2 and t.name != "token_embd.weight":
            candidate = cycle[i % len(cycle)]
            block = gguf.GGML_QUANT_SIZES[candidate][0]
            if data.shape[-1] % block == 0:
                qtype = candidate
                i += 1
        q = gguf.quants.quantize(data, qtype) if qtype != T.F32 else data
        w.add_tensor(t.name, q, raw_shape=data.shape if qtype == T.F32 else None, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def pair(name, src_dir, tmp, extra):
    """llama.cpp's GGUF pair (F32 text + F32 mmproj) of one Hugging Face fixture folder."""
    src = os.path.join(tmp, name)
    os.makedirs(src)
    for f in COPY:
        shutil.copy(os.path.join(src_dir, f), src)
    from transformers import Gemma4ImageProcessor

    Gemma4ImageProcessor().save_pretrained(src)
    f32 = os.path.join(OUT, f"{name}-f32.gguf")
    convert(src, f32, "f32")
    convert(src, os.path.join(OUT, f"mmproj-{name}-f32.gguf"), "f32", mmproj=True)
    if extra:
        convert(src, os.path.join(OUT, f"{name}-q8_0.gguf"), "q8_0")
        requantize(f32, os.path.join(OUT, f"{name}-mixed.gguf"))


def main():
    global OUT
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(OUT_E2B, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pair("tiny-gemma4", SRC, tmp, extra=True)
    # The real E2B layer layout (35 layers, zero-padded per_layer_config keys, KV sharing,
    # double-wide MLP) at toy widths: its own folder, since the mmproj is found next to the model.
    out, OUT = OUT, OUT_E2B
    with tempfile.TemporaryDirectory() as tmp:
        pair("e2b-layout", os.path.join(HERE, "e2b-layout"), tmp, extra=False)
    OUT = out
    for d in (OUT, OUT_E2B):
        for f in sorted(os.listdir(d)):
            print(os.path.join(os.path.basename(d), f), os.path.getsize(os.path.join(d, f)))


if __name__ == "__main__":
    main()
