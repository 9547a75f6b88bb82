// Token sampling: greedy, temperature, top-k, top-p, min-p, OpenAI presence/frequency and
// HF/llama.cpp repetition penalties, with a seeded, platform-independent RNG.
//
// Order of the transforms (that of Hugging Face's logits processors):
//   penalties (on the raw logits) → argmax if temperature == 0, else
//   softmax(logits / T) → top-k → top-p → min-p → renormalise → draw.
// probabilities() returns exactly the distribution sample() draws from, so speculative sampling
// can compare draft and target distributions. The RNG is splitmix64 and doubles are built from
// its bits, so the same seed and inputs give the same tokens on every platform
// (std::uniform_real_distribution's output is implementation-defined).
//
// Log-probabilities (SampleInfo) are those of the model: log_softmax of the raw logits, before
// penalties, temperature and filters — what OpenAI-style APIs report (vLLM's default too), and
// meaningful for greedy decoding.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace dsv4 {

struct SamplingParams {
  float temperature = 0;         // 0 → greedy (argmax, ties to the lowest id)
  int top_k = 0;                 // keep the k most likely tokens; 0 = off
  float top_p = 1;               // keep the smallest most-likely set with mass ≥ top_p; 1 = off
  float min_p = 0;               // drop tokens with p < min_p · p_max; 0 = off
  float presence_penalty = 0;    // OpenAI: logit −= presence_penalty if the token occurred
  float frequency_penalty = 0;   // OpenAI: logit −= frequency_penalty · occurrences
  float repetition_penalty = 1;  // HF / llama.cpp: occurred tokens' logits ÷ (if > 0) or × (if ≤ 0) it
  uint64_t seed = 0;
  int top_logprobs = 0;          // how many alternatives SampleInfo::top lists
};

struct SampleInfo {
  float logprob = 0;                           // log p(chosen) under the raw model distribution
  std::vector<std::pair<int32_t, float>> top;  // [top_logprobs] (id, logprob), most likely first
};

// logits + penalties for the tokens in `history` (each distinct id once for repetition and
// presence, × its count for frequency). Throws Error on an id outside the vocabulary.
std::vector<float> apply_penalties(std::span<const float> logits, std::span<const int32_t> history,
                                   const SamplingParams& p);

class Sampler {
 public:
  // Throws Error naming the field on an out-of-range parameter.
  explicit Sampler(const SamplingParams& params);
  const SamplingParams& params() const { return p_; }

  // Picks the next token from logits [vocab]; `history` holds the ids the penalties look at
  // (the caller decides: prompt + generated, or generated only). Greedy uses no randomness;
  // otherwise exactly one uniform draw per call.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history, SampleInfo* info = nullptr);

  // The distribution sample() draws from, [vocab], summing to 1 (one-hot when greedy).
  std::vector<float> probabilities(std::span<const float> logits, std::span<const int32_t> history) const;

  // Draws an id from non-negative weights [vocab] (need not sum to 1) with one uniform draw.
  int32_t sample_from(std::span<const float> probs);

  // The RNG's position, to continue a stream exactly where an earlier sampler left it.
  uint64_t rng_state() const { return state_; }
  void set_rng_state(uint64_t s) { state_ = s; }

  // A uniform float in [0, 1) from the sampler's stream (24 random bits).
  float uniform();

 private:
  uint64_t next();
  SamplingParams p_;
  uint64_t state_;
};

}  // namespace dsv4
