// Synthetic DeepSeek-V4 checkpoints: random weights in the official Hugging Face layout.
//
// `dsv4 make-model` and `--model synthetic` are built on this. A checkpoint written here is a
// directory with config.json (official HF key names), sharded `model-0000i-of-0000n.safetensors`
// files holding exactly the tensors `expected_tensors(config)` lists (FP8 E4M3 with 128×128
// UE8M0 scales, FP4 E2M1 pairs with 1×32 scales, BF16, F32, I64), and
// model.safetensors.index.json. The tokenizer files are added by the CLI layer (the model
// library does not depend on the tokenizer).
//
// Weights are random but shaped like the golden models' (golden README §7) so activations stay
// healthy through every layer: embeddings N(0,1) plus a common mean vector, linears
// N(0, gain²/fan_in) quantised with the real encoders, RMSNorm weights U(0.8,1.2), sinks N(3,1),
// hc comb biases favouring the diagonal, tid2eid rows of distinct experts, small gate biases.
//
// Everything is a pure function of (config, seed): each tensor is generated in fixed chunks
// from its own seeded stream, so the bytes do not depend on the thread count. Shards are
// streamed to disk; memory use stays at a few hundred MB even for real-width presets.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "model/config.h"

namespace dsv4 {

// Called from the writing thread after each written piece: bytes written so far, total bytes
// of tensor data, and the tensor being written.
using ProgressFn = std::function<void(int64_t done, int64_t total, const std::string& tensor)>;

// Names accepted by preset_config(), for help texts.
inline constexpr const char* kSyntheticPresets = "tiny, flash, pro";

// The configuration of a preset:
//  * "tiny": dim 256, 6 layers covering compress ratios 0, 4 and 128, 2 hash layers, 16 experts
//    top-6, MTP, the real 129,280-token vocabulary, a 65,536-token context (its YaRN
//    original_seq_len) — seconds to create and to run.
//  * "flash" / "pro": the official V4-Flash / V4-Pro widths (spec §1.2).
// layers_override > 0 keeps the first N layers of the preset's layer pattern (the official
// compress_ratios prefix for flash/pro, at most the official layer count); experts_override > 0
// sets the routed expert count (>= the 6 activated). Throws Error on an unknown name or a bad
// override.
ModelConfig preset_config(const std::string& name, int layers_override = 0, int experts_override = 0);

// config.json text for `c` with the official HF key names and layout (golden config.json);
// parse_config() reads it back to `c`.
std::string config_json(const ModelConfig& c);

struct SyntheticOptions {
  int64_t shard_bytes = 0;  // target shard size; 0 = 64 MB for vocab-dominated tiny models, else 1.5 GB
  int threads = 0;          // generator threads; 0 = hardware concurrency (the output is the same)
};

// Total bytes of tensor data the checkpoint for `c` holds.
int64_t synthetic_checkpoint_bytes(const ModelConfig& c);

// Writes config.json, the shards and the index into out_dir (created if missing; existing files
// of the same names are overwritten). Throws Error naming the file on I/O failure.
void write_synthetic_checkpoint(const ModelConfig& c, const std::string& out_dir, uint64_t seed,
                                const ProgressFn& progress = {}, const SyntheticOptions& options = {});

namespace detail {
// f32_to_e2m1 for |q| <= 6, without branches (the generator's hot loop); equal to it bit for
// bit, which synthetic_test checks.
uint8_t e2m1_branchless(float q);
}  // namespace detail

}  // namespace dsv4
