// The measured passes `dsv4 bench` adds on request (issue 19): a per-phase profile of decode
// steps (--profile), several sequences decoding together (--batch), and multi-token verify
// forwards of draft lengths (--verify). Each speed comes with the bytes its step had to read, set
// against the read bandwidth measured in the same repetition.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/profile.h"
#include "model/model.h"

namespace dsv4::cli {

using TokenSource = std::function<std::vector<int32_t>(int)>;

// Weight bytes of one decode step split the way a batch shares them: everything but the routed
// experts (read once per step whatever the rows) and one routed expert (read once per step for
// every row routed to it).
struct StepBytes {
  int64_t dense = 0;         // all weights a token reads except its routed experts
  int64_t expert = 0;        // one routed expert (w1, w2, w3)
  int64_t shared_expert = 0; // the shared expert of one MoE layer
};

// One profiled stretch of forward passes, per step.
struct PhaseSample {
  double s[int(Phase::kCount)] = {};      // wall seconds per step
  double bytes[int(Phase::kCount)] = {};  // bytes read per step
  double kv_bytes = 0, regions = 0, wait_s = 0, experts = 0, cpu_s = 0, wall_s = 0;
  double worker_share = 0;  // the fraction of the pool's chunks that worker threads ran
  double total_bytes() const;
};

// n single-token decode steps on `st`, profiled.
PhaseSample profile_decode(const Model& m, SequenceState* st, int n, const TokenSource& tokens);

// One prefill of `prompt` tokens on a new sequence, profiled; figures per prompt token.
PhaseSample profile_prefill(const Model& m, int prompt, const TokenSource& tokens);

// Medians over repetitions of per-phase samples, with the bandwidth of each repetition.
nlohmann::ordered_json profile_json(const std::vector<PhaseSample>& reps, const std::vector<double>& bws);
void print_profile(const std::vector<PhaseSample>& reps, const std::vector<double>& bws,
                   const char* title = "decode step by phase");

// `sequences` sequences at `context` (synthetic state) decoding `steps` steps together.
struct BatchSample {
  double step_s = 0;              // median wall time of a step
  double expert_read_bytes = 0;   // per step, the kernels' count (routed + shared experts)
  double expert_union_bytes = 0;  // per step, from the routing: distinct experts + shared ones
  double union_bytes = 0;         // per step: dense weights + distinct experts + KV read
  double experts = 0;             // distinct routed experts per step (all layers)
  double kv_bytes = 0;
  PhaseSample phases;             // the same steps by phase (per step; wall_s unset)
};
BatchSample measure_batch(const Model& m, int sequences, int64_t context, int steps, const TokenSource& tokens,
                          const StepBytes& sb);

// Forward passes of `draft` tokens with logits for every position (the speculative verify) on a
// sequence at `context`, median of `reps_per` passes; draft 1 is a decode step.
BatchSample measure_verify(const Model& m, int draft, int64_t context, int reps_per, const TokenSource& tokens,
                           const StepBytes& sb);

// Medians of rows per setting (sequences or draft length) across repetitions.
nlohmann::ordered_json batch_json(const std::vector<int>& ns, const std::vector<std::vector<BatchSample>>& reps,
                                  const std::vector<double>& bws);
void print_batch(const std::vector<int>& ns, const std::vector<std::vector<BatchSample>>& reps,
                 const std::vector<double>& bws);
nlohmann::ordered_json verify_json(const std::vector<int>& ks, const std::vector<std::vector<BatchSample>>& reps);
void print_verify(const std::vector<int>& ks, const std::vector<std::vector<BatchSample>>& reps);

}  // namespace dsv4::cli
