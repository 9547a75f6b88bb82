#!/bin/sh
# Long-context benchmark (issue 15): builds a real-width 4-layer V4-Flash stack (layers 0-1
# window, 2 CSA ratio 4 with the indexer, 3 HCA ratio 128; 16 routed experts, ~4 GB), runs
# longctx_bench at 4K / 64K / 256K / 1M on synthetic KV state, then deletes the checkpoint.
#   bench/longctx.sh [BUILD_DIR] [longctx_bench options...]
set -eu
BUILD=${1:-build}
[ $# -gt 0 ] && shift
DIR=$(mktemp -d /tmp/dsv4-longctx.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
"$BUILD/bin/dsv4" make-model --preset flash --layers 4 --experts 16 --no-tokenizer --out "$DIR/model"
"$BUILD/bench/longctx_bench" --model "$DIR/model" --contexts 4096,65536,262144,1048576 --gen 8 --reps 3 \
  --chunk 128 "$@"
