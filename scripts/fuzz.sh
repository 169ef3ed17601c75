#!/usr/bin/env bash
# Coverage-guided fuzzing of the four parsers of hostile files (issue 15) with cargo-fuzz.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Each target starts from the matching fixtures in testdata/ and runs for the given time;
# crashes land in fuzz/artifacts/<target>/. Prints executions per target at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
root="$PWD"
declare -A seeds=(
  [cellm_header]=""
  [gguf]="testdata/gguf/tiny-gemma3.gguf"
  [safetensors_header]="testdata/tiny-gemma3/model.safetensors testdata/tiny-gemma4/model.safetensors"
  [wav]="testdata/tiny-gemma4/tiny_audio.wav"
)
summary=()
for target in cellm_header gguf safetensors_header wav; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  for s in ${seeds[$target]}; do cp -f "$s" "$corpus/"; done
  if [ "$target" = cellm_header ] && [ -z "$(ls -A "$corpus")" ]; then
    # A small .cellm seed: the tiny Gemma 3 converted to int8.
    cargo run --release -q -p cellm-app --bin cellm -- convert testdata/tiny-gemma3 \
      -o "$corpus/tiny.cellm" --profile int8 >/dev/null 2>&1
  fi
  log="fuzz/$target.log"
  (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=4096 -print_final_stats=1) >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(ls "fuzz/artifacts/$target" 2>/dev/null | wc -l)
  summary+=("$target: ${execs:-?} executions, $crashes crash artifacts")
done
printf '%s\n' "${summary[@]}"
