#!/bin/sh
# The demo model's corpus (docs/train.md): the King James Bible from Debian's bible-kjv, one verse
# per line without its reference, split by whole books: Ruth and Philippians are held out for
# validation, the other 64 books are the training text.
# Usage: scripts/kjv_corpus.sh OUT_DIR   → OUT_DIR/kjv-train.txt, OUT_DIR/kjv-val.txt
set -eu
out=${1:?usage: scripts/kjv_corpus.sh OUT_DIR}
command -v bible >/dev/null || { echo "kjv_corpus.sh: the 'bible' command is missing: apt-get install bible-kjv" >&2; exit 1; }
mkdir -p "$out"
raw="$out/kjv-raw.txt"
bible -f "Gen1:1-Rev22:21" > "$raw"
strip='s/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //'  # "1Sm3:4 And ..." → "And ..."
held='^(Ruth|Phi)[0-9]'                       # the book abbreviations bible(1) prints
grep -vE "$held" "$raw" | sed -E "$strip" > "$out/kjv-train.txt"
grep -E "$held" "$raw" | sed -E "$strip" > "$out/kjv-val.txt"
rm "$raw"
wc -l -c "$out/kjv-train.txt" "$out/kjv-val.txt"
