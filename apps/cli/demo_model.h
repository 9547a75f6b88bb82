// The built-in models and the tokenizer files of generated checkpoints.
//
// `--model demo` is the small model `dsv4 train` made from the King James Bible, committed in the
// repository's models/demo (docs/train.md): it writes English. `--model synthetic` is the `tiny`
// synthetic preset (model/synthetic.h) with the real V4 tokenizer and a 65536-token context,
// created on first use in the cache and reused afterwards; its weights are random: it exists so
// that every command (chat markup, tool calls, long prompts) runs out of the box.
#pragma once

#include <string>
#include <vector>

#include "model/synthetic.h"

namespace dsv4::cli {

// dsv4's cache root: $DSV4_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/dsv4 (the same rule as
// scripts/fetch_tokenizer_base.sh).
std::string cache_root();

// The V3 base tokenizer.json that assemble_v4_tokenizer() needs: `explicit_path` if given, else
// $DSV4_TOKENIZER_BASE, else where scripts/fetch_tokenizer_base.sh installs it in the cache.
// Returns "" when none exists.
std::string find_tokenizer_base(const std::string& explicit_path = "");

// find_tokenizer_base(), or throws Error saying how to get the base tokenizer.
std::string require_tokenizer_base(const std::string& explicit_path = "");

// Writes tokenizer.json + tokenizer_config.json into `dir` (require_tokenizer_base() first).
void write_tokenizer_files(const std::string& dir, const std::string& explicit_base = "");

// The synthetic checkpoint directory, created first if absent (<cache_root>/demo-tiny-v<N>): written
// to a temporary directory and renamed into place, so a crash or a concurrent first use never
// leaves a half-written model behind. Progress goes to stderr.
std::string ensure_synthetic_model();

// Where the trained demo model may be: models/demo of the clone holding this binary
// (<clone>/build/bin/dsv4), then of the source tree it was built from.
std::vector<std::string> demo_model_candidates();

// The first candidate holding a checkpoint; else throws Error naming the places tried.
std::string find_demo_model();

// A progress printer for write_synthetic_checkpoint(): one updating line on stderr (only when
// stderr is a terminal; otherwise a line per 10%).
ProgressFn stderr_progress();

// `arg`, except "demo" → find_demo_model() and "synthetic" → ensure_synthetic_model().
std::string resolve_model_dir(const std::string& arg);

}  // namespace dsv4::cli
