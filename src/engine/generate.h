// The generation loop: prefill a prompt, then sample token after token until a stop condition,
// optionally with exact MTP speculative decoding (spec §6).
//
// Speculation drafts one token with the MTP block and verifies [token, draft] in one forward.
// Greedy: the draft is kept iff it equals the main model's argmax, so the output is identical
// to plain decoding. Sampling: the standard speculative-sampling rule (accept with probability
// min(1, p/q), else resample from max(0, p − q)), so the output distribution is unchanged.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"

namespace dsv4 {

enum class FinishReason { kStop, kLength, kContext, kCancelled };
const char* finish_reason_name(FinishReason r);

struct GenerateOptions {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  bool speculative = false;
  std::optional<uint64_t> rng_state;  // continue an earlier result's RNG stream instead of seeding
  std::vector<int32_t> stop_tokens;  // e.g. EOS; the stop token itself is not returned
  // Called for each generated token; return false to stop (stop strings, cancellation).
  std::function<bool(int32_t)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t drafted = 0, accepted = 0;  // speculative decoding statistics
  uint64_t rng_state = 0;             // the sampler's RNG after the last draw (GenerateOptions::rng_state)
};

// Appends `prompt` to the session (which may already hold history) and generates.
GenerateResult generate(Session* session, std::span<const int32_t> prompt, const GenerateOptions& options,
                        const PrefillProgressFn& progress = {});

}  // namespace dsv4
