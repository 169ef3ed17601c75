#!/usr/bin/env bash
# Screenshots of the real desktop app under a virtual display (Xvfb), driven with xdotool.
#
#   scripts/screenshots.sh OUT_DIR [MODEL.cellm] [PROMPT]
#
# Saves, in both themes: main-<theme>.png (first-run screen, or a conversation when MODEL is
# given: the model is loaded and PROMPT sent; then also generating-<theme>.png, taken while the
# reply streams), wizard-<theme>.png (with WIZARD_SOURCE=folder-or-gguf it shows what the wizard
# found there), settings-<theme>.png. Waits: LOAD_WAIT, STREAM_WAIT, GEN_WAIT, WIZARD_WAIT (s).
# BACKEND=Cpu|Gpu|Auto picks the compute backend (default Auto). SIZE=WxH sets the window
# (default 1280x800; the file names get "-WxH" unless it is the default); THEMES="Dark Light".
# MIXED=1 seeds a chat of mixed scripts (Chinese, Korean, Arabic, emoji, arrows) first and
# saves mixed-<theme>.png of it, so missing fonts show as boxes.
# Needs: xvfb, xdotool, imagemagick (import), and a release build (built here if missing).
# The app runs with a throw-away data directory, so your own chats and settings are untouched.
set -euo pipefail

out=${1:?usage: scripts/screenshots.sh OUT_DIR [MODEL.cellm] [PROMPT]}
model=${2:-}
prompt=${3:-Write a haiku about the sea, then show it as a Markdown list.}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CELLM_BIN:-$root/target/release/cellm}
gen_wait=${GEN_WAIT:-40}

for tool in Xvfb xdotool import; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y xvfb xdotool imagemagick)" >&2; exit 1; }
done
[ -x "$bin" ] || (cd "$root" && cargo build --release -p cellm-app)
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -n "$model" ]; then model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model"); fi

# A free display number.
disp=99
while [ -e "/tmp/.X11-unix/X$disp" ] || [ -e "/tmp/.X$disp-lock" ]; do disp=$((disp + 1)); done
export DISPLAY=:$disp
size=${SIZE:-1280x800}
w=${size%x*}; h=${size#*x}
suffix=""; [ "$size" = 1280x800 ] || suffix="-$size"
Xvfb "$DISPLAY" -screen 0 "${w}x${h}x24" >/dev/null 2>&1 &
xvfb_pid=$!
app_pid=
work=$(mktemp -d)
cleanup() {
    [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
    kill "$xvfb_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
sleep 1

# Settings are eframe's app.ron under the data dir; seed the theme and the model to load.
seed_settings() { # theme
    mkdir -p "$work/data/cellm"
    local last=None
    [ -n "$model" ] && last="Some(\\\"$model\\\")"
    printf '{"cellm.settings":"(theme:%s,last_model:%s,max_new_tokens:%s,compute:(backend:%s))"}\n' \
        "$1" "$last" "${MAX_NEW:-96}" "${BACKEND:-Auto}" > "$work/data/cellm/app.ron"
}

start_app() {
    XDG_DATA_HOME="$work/data" XDG_RUNTIME_DIR="$work" "$bin" >"$work/app.log" 2>&1 &
    app_pid=$!
    win=$(timeout 60 xdotool search --sync --name '^cellm$' | head -1)
    xdotool windowmove "$win" 0 0 windowsize "$win" "$w" "$h"
    xdotool mousemove $((w / 2)) $((h / 2))
    sleep 1
    # Without a window manager the keyboard follows the pointer; a click makes winit see focus.
    xdotool windowfocus --sync "$win" 2>/dev/null || xdotool click 1
    sleep 2
}

stop_app() {
    kill "$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
    app_pid=
}

shot() {
    sleep 1.5
    local f="${1%.png}$suffix.png"
    import -window root "$out/$f"
    echo "saved $out/$f"
}

# A saved chat of mixed scripts, in the app's chat format (model.rs: Chat).
seed_mixed_chat() {
    mkdir -p "$work/data/cellm/chats"
    cat > "$work/data/cellm/chats/0-mixed.json" <<'JSON'
{"id":"0-mixed","title":"Scripts 中文 한국어 العربية","system_prompt":"","updated":4102444800,
 "messages":[
  {"author":"user","text":"Translate → 中文, 日本語, 한국어 and العربية, with emoji 😀👍🎉 and arrows ← → ↑ ↓ ⇒"},
  {"author":"assistant","text":"- 中文: 你好，世界\n- 日本語: こんにちは世界\n- 한국어: 안녕하세요 세계\n- العربية: مرحبا بالعالم\n- Emoji: 😀 👍 🎉 ❤️ 🚀\n- Arrows: ← → ↑ ↓ ⇒ ⇐ ↔"}
 ]}
JSON
}

for theme in ${THEMES:-Dark Light}; do
    t=$(echo "$theme" | tr '[:upper:]' '[:lower:]')
    seed_settings "$theme"
    if [ -n "${MIXED:-}" ]; then
        seed_mixed_chat
        start_app
        shot "mixed-$t.png"
        stop_app
        rm -rf "$work/data/cellm/chats"
    fi
    start_app
    if [ -n "$model" ]; then
        sleep "${LOAD_WAIT:-8}"
        xdotool key ctrl+n            # new chat; focuses the composer
        sleep 0.5
        xdotool type --delay 15 "$prompt"
        xdotool key Return
        sleep "${STREAM_WAIT:-2}"
        shot "generating-$t.png"     # mid-stream: live tokens/s and memory
        sleep "$gen_wait"
    fi
    shot "main-$t.png"
    xdotool key ctrl+shift+o          # conversion wizard (focus in the source field)
    sleep 0.5
    if [ -n "${WIZARD_SOURCE:-}" ]; then
        xdotool type --delay 10 "$WIZARD_SOURCE"
        xdotool key Return
        sleep "${WIZARD_WAIT:-12}"
    fi
    shot "wizard-$t.png"
    xdotool key ctrl+shift+o          # close it again
    xdotool key ctrl+comma            # settings
    shot "settings-$t.png"
    stop_app
    rm -rf "$work/data/cellm/chats"
done
echo "app log: (last lines)"
tail -n 5 "$work/app.log" 2>/dev/null || true
