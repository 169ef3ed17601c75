#!/usr/bin/env bash
# Memory and start-up of cellm against llama.cpp (through llama-cpp-python) on the same model and
# machine, run back to back, one fresh process per run. Prints one table: peak RSS, anonymous and
# file-backed RSS after generating, load time and load-to-first-token, and cellm/llama.cpp ratios.
#
# usage: scripts/mem_vs_llamacpp.sh [--cellm BIN] [--threads N] [--runs N] [--prompt N] [--gen N]
#                                   MODEL.cellm GGUF [GGUF ...]
#   The first GGUF is the reference of the ratios. llama.cpp's figures leave out the Python
#   interpreter with llama_cpp imported (measured in the same process before the load).
#   Needs: python3 with llama-cpp-python (pip install llama-cpp-python), Linux /proc.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cellm="$here/target/release/cellm"; threads=2; runs=3; prompt=6; gen=16
while [ $# -gt 0 ]; do
  case "$1" in
    --cellm) cellm=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --gen) gen=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "usage: $0 [options] MODEL.cellm GGUF [GGUF ...]" >&2; exit 2; }
[ -x "$cellm" ] || { echo "no cellm binary at $cellm (cargo build --release -p cellm-app, or --cellm)" >&2; exit 2; }
model=$1; shift
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# One llama.cpp run: load, a prompt of N tokens, M generated tokens; prints a JSON line.
cat > "$work/llama_run.py" <<'PY'
import json, os, sys, time
def status():
    f = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
            f[k] = int(v.split()[0]) * 1024
    return f
import llama_cpp
path, threads, prompt, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = status()
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_ctx=512, verbose=False)
load = time.perf_counter() - t0
# Ordinary vocabulary ids past Gemma's control tokens, fixed.
ids = [llm.token_bos()] + [1000 + 37 * i for i in range(prompt - 1)]
first = None
n = 0
for tok in llm.generate(ids, temp=0.0, reset=True):
    if first is None:
        first = time.perf_counter() - t0
    n += 1
    if n >= gen:
        break
end = status()
print(json.dumps({
    "load_secs": load, "first_token_secs": first,
    "peak_rss": end["VmHWM"] - base["VmRSS"],
    "rss_anon": end["RssAnon"] - base["RssAnon"],
    "rss_file": end["RssFile"] - base["RssFile"],
    "file_bytes": os.path.getsize(path),
}))
PY

cellm_run() {
  "$cellm" bench -m "$model" --threads "$threads" \
    --prompt-tokens "$prompt" --gen-tokens "$gen" --json 2>/dev/null
}

# Back to back: each run of each engine in turn, so machine load drifts hit all alike.
: > "$work/rows"
for r in $(seq "$runs"); do
  cellm_run | python3 -c '
import json, sys
j = json.loads(sys.stdin.read()); m = j["memory"]; p = m["process"] or {}
print(json.dumps({"engine": "cellm " + j["profile"], "load_secs": j["load_secs"],
  "first_token_secs": j["first_token_secs"], "peak_rss": p.get("peak_rss_bytes", 0),
  "rss_anon": p.get("rss_anon_bytes", 0), "rss_file": p.get("rss_file_bytes", 0),
  "file_bytes": m["file_bytes"], "tokenizer": m["tokenizer_bytes"], "kv": m["kv_cache_bytes"]}))' >> "$work/rows"
  for g in "$@"; do
    python3 "$work/llama_run.py" "$g" "$threads" "$prompt" "$gen" 2>>"$work/llama.log" | python3 -c '
import json, os, sys
j = json.loads(sys.stdin.read()); j["engine"] = "llama.cpp " + os.path.basename(sys.argv[1]); print(json.dumps(j))' "$g" >> "$work/rows"
  done
done

python3 - "$work/rows" "$runs" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in rows:  # fastest run per engine; memory of that run
    b = best.get(r["engine"])
    if b is None or r["first_token_secs"] < b["first_token_secs"]:
        best[r["engine"]] = r
mb = lambda b: b / 1e6
print(f"threads as given; best of {sys.argv[2]} runs; load average {os.getloadavg()[0]:.2f}")
print(f"{'engine':<44} {'file MB':>8} {'peak MB':>8} {'peak/file':>9} {'anon MB':>8} {'file-backed MB':>14} {'load s':>7} {'1st token s':>11}")
for e, r in best.items():
    print(f"{e:<44} {mb(r['file_bytes']):8.1f} {mb(r['peak_rss']):8.1f} {r['peak_rss'] / r['file_bytes']:9.2f} "
          f"{mb(r['rss_anon']):8.1f} {mb(r['rss_file']):14.1f} {r['load_secs']:7.3f} {r['first_token_secs']:11.3f}")
names = list(best)
c, ref = best[names[0]], best[names[1]]
print(f"cellm / {names[1]}: peak RSS {c['peak_rss'] / ref['peak_rss']:.2f}x, "
      f"peak/file {(c['peak_rss'] / c['file_bytes']) / (ref['peak_rss'] / ref['file_bytes']):.2f}x, "
      f"load {c['load_secs'] / ref['load_secs']:.2f}x, first token {c['first_token_secs'] / ref['first_token_secs']:.2f}x")
if "tokenizer" in c:
    print(f"cellm breakdown: tokenizer {mb(c['tokenizer']):.1f} MB, KV cache {mb(c['kv']):.1f} MB")
PY
