#!/usr/bin/env bash
# cellm's GPU backend against llama.cpp on the same card, same weights, one call (issue 13).
#
# On the GPU machine, from the checkout root, with the llama.cpp anchor bundle (see
# ../shared/tools/llamacpp-anchor/README.md: prepare.sh makes it) and a release `cellm` binary:
#   bash scripts/gpu_vs_llamacpp.sh ANCHOR_DIR CELLM_BIN E2B_CONFIG.json [OUT_DIR] [cuda|vulkan]
# e.g. bash scripts/gpu_vs_llamacpp.sh .anchor target/release/cellm gemma-4-e2b-config.json $OUT
#
# 1. ANCHOR_DIR/device.sh builds llama.cpp (CUDA or Vulkan), makes random-weight Hugging Face
#    checkpoints of Gemma 4 E2B (the config given) and Gemma 3 270M (the bundle's config), quantizes
#    them with llama.cpp's own tools and runs llama-bench (pp128, tg128); this adds pp2048 for E2B.
# 2. cellm converts the very same checkpoints (E2B int4, 270M int4 and int8) and runs
#    `cellm bench --backend gpu` at 128 and 2048 prompt tokens (128 generated, best of 3).
# 3. Prints one table: tok/s of both and the ratio cellm / llama.cpp.
# Everything (logs, JSON rows, the table) goes to OUT_DIR (default /tmp/gpu_vs_llamacpp).
# Ratios hold only within one run of this script: both engines on the same card, back to back.
set -u
A=$(cd "$1" && pwd); CELLM=$(realpath "$2"); E2B_CFG=$(realpath "$3")
OUT=${4:-/tmp/gpu_vs_llamacpp}; BK=${5:-cuda}
mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

# cellm links libasound (audio input); a bare machine may lack it: the bundle carries the .deb.
if ldd "$CELLM" | grep -q 'libasound.so.2 => not found'; then
  for f in "$A"/libasound2*.deb; do dpkg -x "$f" /tmp/asound; done
  export LD_LIBRARY_PATH=/tmp/asound/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
fi

G3_CFG="$A/tok/g3-270m-config.json"
e2b=$(basename "$E2B_CFG" .json); g3=$(basename "$G3_CFG" .json)
el "llama.cpp ($BK): build, checkpoints, llama-bench"
bash "$A/device.sh" "$A" "$BK" "$E2B_CFG" "$G3_CFG" 2>&1 | tee "$OUT/llamacpp.log"
LB=/tmp/anchor/build/bin/llama-bench
if [ -x "$LB" ] && [ -f "/tmp/anchor/$e2b-Q4_0.gguf" ]; then
  el "llama-bench pp2048 (E2B Q4_0)"
  "$LB" -m "/tmp/anchor/$e2b-Q4_0.gguf" -p 2048 -n 0 -ngl 99 -fa 1 -r 3 -o md 2>&1 | grep -E '^\|' \
    | tee "$OUT/llamacpp-pp2048.log"
fi

# cellm on the same weights
conv() { # HF dir, profile, output
  if [ ! -f "$3" ]; then
    "$CELLM" convert "$1" -o "$3" --profile "$2" > "$OUT/convert-$(basename "$3").log" 2>&1 \
      || { echo "cellm convert $1 ($2) failed:"; tail -3 "$OUT/convert-$(basename "$3").log"; }
  fi
}
bench() { # model file, prompt tokens, tag
  [ -f "$1" ] || return
  "$CELLM" bench -m "$1" --backend gpu --prompt-tokens "$2" --gen-tokens 128 --repeat 3 --json \
    2> "$OUT/bench-$3.err" > "$OUT/bench-$3.json" || { echo "cellm bench $3 failed:"; tail -3 "$OUT/bench-$3.err"; }
  grep -E '^(backend|run)' "$OUT/bench-$3.err"
}
M=/tmp/cellm-models; mkdir -p "$M"
el "cellm convert"
conv "/tmp/anchor/$e2b-hf" int4 "$M/e2b-int4.cellm"
conv "/tmp/anchor/$g3-hf" int4 "$M/g3-int4.cellm"
conv "/tmp/anchor/$g3-hf" int8 "$M/g3-int8.cellm"
el "cellm bench (gpu)"
bench "$M/e2b-int4.cellm" 128 e2b-int4-p128
bench "$M/e2b-int4.cellm" 2048 e2b-int4-p2048
bench "$M/g3-int4.cellm" 128 g3-int4-p128
bench "$M/g3-int8.cellm" 128 g3-int8-p128
el "table"

python3 - "$OUT" "$BK" <<'PY' | tee "$OUT/table.md"
import json, os, re, sys
out, bk = sys.argv[1], sys.argv[2]

def llama_rows(path):
    """llama-bench markdown rows as (model column, params column, test, tok/s)."""
    rows = []
    if not os.path.exists(path):
        return rows
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 8 or not re.match(r"^(pp|tg)\d+", cells[-2]):
            continue
        rows.append((cells[0], cells[2], cells[-2], float(cells[-1].split()[0])))
    return rows

# device.sh benches E2B's Q4_0, Q4_K_M, Q8_0, then 270M's: the bigger params count is E2B.
ll = {}
rows = llama_rows(f"{out}/llamacpp.log")
params = sorted({r[1] for r in rows}, key=lambda p: float(re.sub(r"[^0-9.]", "", p) or 0)
                * (1e9 if p.endswith("B") else 1e6))
for model, prm, test, ts in rows:
    size = "270M" if len(params) > 1 and prm == params[0] else "E2B"
    quant = "Q4_K_M" if "Q4_K" in model else model.split()[-1]
    ll[(size, quant, test)] = ts
for model, prm, test, ts in llama_rows(f"{out}/llamacpp-pp2048.log"):
    ll[("E2B", model.split()[-1], test)] = ts

def cellm(tag):
    try:
        return json.load(open(f"{out}/bench-{tag}.json"))
    except (OSError, ValueError):
        return None

def cell(a, b):
    if a is None or b is None:
        return "-", "-", "-"
    return f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}x"

print(f"| model | llama.cpp ({bk}) vs cellm (gpu) | llama tg128 | cellm decode | ratio "
      "| llama pp128 | cellm prefill 128 | ratio | llama pp2048 | cellm prefill 2048 | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for label, size, quant, tag in [("Gemma 4 E2B", "E2B", "Q4_0", "e2b-int4"),
                                ("Gemma 3 270M", "270M", "Q4_0", "g3-int4"),
                                ("Gemma 3 270M", "270M", "Q8_0", "g3-int8")]:
    c128, c2048 = cellm(f"{tag}-p128"), cellm(f"{tag}-p2048")
    dec = cell(ll.get((size, quant, "tg128")), c128 and c128["decode_tok_s"])
    p128 = cell(ll.get((size, quant, "pp128")), c128 and c128["prefill_tok_s"])
    p2048 = cell(ll.get((size, quant, "pp2048")), c2048 and c2048["prefill_tok_s"])
    prof = tag.split("-")[1]
    print(f"| {label} | {quant} vs {prof} | " + " | ".join(dec + p128 + p2048) + " |")
c = cellm("e2b-int4-p2048")
if c:
    print(f"\nE2B int4 with a 2048-token prompt: cellm decode {c['decode_tok_s']:.1f} tok/s.")
for q in ("Q4_K_M", "Q8_0"):
    v = ll.get(("E2B", q, "tg128"))
    if v:
        print(f"llama.cpp E2B {q}: tg128 {v:.0f} tok/s, pp128 {ll.get(('E2B', q, 'pp128'), 0):.0f}")
PY
el done
