#!/usr/bin/env python3
"""The unigram baseline of docs/train.md's demo table: token frequencies of the training text
(add-one smoothed over the tokenizer's vocabulary), scored on the validation text exactly where
`dsv4 train` scores the model — the targets of consecutive windows of SEQ tokens, each window
predicting tokens 1..SEQ of its SEQ+1 — per token and per byte.

Usage: scripts/unigram_baseline.py DSV4 MODEL_DIR TRAIN.txt VAL.txt [SEQ]
(DSV4 = the dsv4 binary; token ids come from `dsv4 tokenize`, the same encoder the trainer uses.)"""
import json
import math
import subprocess
import sys


def ids(dsv4, model, path):
    out = subprocess.run([dsv4, "tokenize", "--model", model, "--file", path], check=True, capture_output=True).stdout
    return json.loads(out)


def main():
    dsv4, model, train_path, val_path = sys.argv[1:5]
    seq = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    vocab = json.load(open(f"{model}/config.json"))["vocab_size"]
    eos = json.load(open(f"{model}/config.json"))["eos_token_id"]
    train = ids(dsv4, model, train_path) + [eos]  # the trainer packs each text with a final EOS
    val = ids(dsv4, model, val_path) + [eos]
    counts = [1] * vocab
    for t in train:
        counts[t] += 1
    total = sum(counts)
    windows = min(64, (len(val) - 1) // seq)
    targets = [val[w * seq + i] for w in range(windows) for i in range(1, seq + 1)]
    nats = -sum(math.log(counts[t] / total) for t in targets) / len(targets)
    val_bytes = len(open(val_path, "rb").read())
    tokens_per_byte = len(val) / val_bytes
    print(json.dumps({"val_tokens": len(val), "val_bytes": val_bytes, "scored_tokens": len(targets),
                      "nats_per_token": round(nats, 4), "ppl_per_token": round(math.exp(nats), 2),
                      "bits_per_byte": round(nats * tokens_per_byte / math.log(2), 4),
                      "tokens_per_byte": round(tokens_per_byte, 5)}))


if __name__ == "__main__":
    main()
