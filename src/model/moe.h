// Mixture of experts (spec §4.5), mirroring the reference `Gate`, `Expert` and `MoE`.
//
// Router: scores sqrt(softplus(b·gate_e)) in F32; hash layers take the experts from
// tid2eid[token], others the top-k of score + bias (bias for selection only); weights are the
// selected unbiased scores renormalised, × route_scale. Experts: SwiGLU with the clamp
// (up ∈ [−L, L], gate ≤ L), routing weight applied before w2; plus one shared expert.
#pragma once

#include <cstdint>
#include <functional>

#include "core/arena.h"
#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;
class ExpertCache;
class ExpertExecutor;

// How the experts of a call are scheduled; all give the same bits (tests/model/moe_test.cc).
// kAuto: whole experts per thread for many active experts with ~4+ rows each (prompts), else
// all experts' products in two thread-pool regions (fused) — or one expert after another where
// experts are streamed. $DSV4_FUSED_EXPERTS=0 restores the schedules before fusing (comparisons).
enum class ExpertSchedule { kAuto, kInTurn, kFused, kWholeExperts };

struct MoeArgs {
  const ModelConfig* config = nullptr;
  const MoeWeights* weights = nullptr;
  bool hash_routed = false;
  Numerics numerics = Numerics::kReference;
  const float* x = nullptr;        // [n, dim] = ffn_norm(hc_pre(X))
  const int32_t* tokens = nullptr; // [n] input ids (hash routing)
  int64_t n = 0;
  const int64_t* positions = nullptr;  // [n] for trace names only
  float* out = nullptr;            // [n, dim]
  Trace* trace = nullptr;
  const char* trace_tag = "";
  ThreadPool* pool = nullptr;  // kernels' threads (null: serial)
  int layer = 0;               // the block's layer id (n_layers + m for MTP block m)
  ExpertCache* cache = nullptr;  // routed experts streamed from disk (null: resident weights)
  ExpertExecutor* executor = nullptr;  // where routed experts run (null: all here)
  // With a cache: the next score-routed block's MoE weights and an estimate of its input (its
  // ffn_norm(hc_pre) of the residual as it is before this MoE), to read the experts it will
  // probably pick while this layer computes (null: no prediction).
  const MoeWeights* next_weights = nullptr;
  const float* next_x = nullptr;  // [n, dim]
  int next_layer = 0;
  ExpertSchedule schedule = ExpertSchedule::kAuto;
};

// Decode batches up to this many tokens predict the next layer's experts; longer prompts use most
// experts of each layer anyway, and speculative reads would delay the ones they need.
inline constexpr int64_t kMaxPredictedTokens = 8;

void moe_forward(const MoeArgs& args);

// Hash-routed layers know their experts from the token ids alone: starts the cache's reads for
// them before the block runs (no-op without a cache or on a score-routed layer).
void moe_prefetch_hashed(const MoeArgs& args);

// The routed part of one MoE call, grouped by expert: expert e takes the rows tok[e] of xq (in
// token order) with routing weights wgt[e], and its outputs go to rows [first[e], first[e+1]) of Y.
struct RoutedBatch {
  const ModelConfig* config = nullptr;
  const MoeWeights* weights = nullptr;
  int layer = 0;
  Numerics numerics = Numerics::kReference;
  const float* xq = nullptr;  // [n, dim] expert input, rounded as the reference does
  int64_t n = 0;
  const Scratch<int64_t>* tok = nullptr;  // [E]
  const Scratch<float>* wgt = nullptr;    // [E]
  const int64_t* first = nullptr;         // [E + 1]
  float* Y = nullptr;
  ThreadPool* pool = nullptr;
};

// Where the routed experts of a MoE layer run. The model only knows this interface; the default
// (no executor) runs every expert in this process. The combine stays in moe.cc, so the sum is
// taken in the reference order whatever runs the experts.
class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  // Fills Y's rows of every routed expert in `b`, calling `local()` (the shared expert's work)
  // exactly once in between, so that it can overlap the routed experts running elsewhere.
  virtual void run(const RoutedBatch& b, const std::function<void()>& local) = 0;
};

// One expert on m gathered input rows xg [m, dim] with routing weights `weight` [m]: y [m, dim].
// Rows are independent, so any grouping of tokens gives the same bits per row.
void expert_rows(const ModelConfig& c, Numerics numerics, const ExpertWeights& w, const float* xg, int64_t m,
                 const float* weight, float* y, ThreadPool* pool);

}  // namespace dsv4
