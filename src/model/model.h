// Model: a loaded DeepSeek-V4 checkpoint and its forward pass (spec §4.1, §6).
//
//   X = [embed(tok)] × hc  →  blocks  →  hc_head → norm → head  = logits
//
// A Model is immutable after load; everything that changes while a sequence runs lives in a
// SequenceState / MtpState owned by the caller. forward() takes any number of tokens at the
// state's current position (prefill, chunked prefill, single-token decode and multi-token
// verification are the same call), and every query sees exactly the keys the reference gives
// it, so the chunking does not change the result.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;
class ExpertCache;
class ExpertExecutor;

// The routed experts a process holds: ids [begin, end) of every MoE layer (expert parallelism
// splits them across processes; the default is all of them).
struct ExpertRange {
  int begin = 0;
  int end = 1 << 30;
  bool holds(int e) const { return e >= begin && e < end; }
};

enum class LogitsMode { kNone, kLast, kAll };

struct ForwardOutput {
  std::vector<float> hidden;  // [n, hc, dim] final residual streams (head / MTP input)
  std::vector<float> logits;  // [rows, vocab]: rows = 0, 1 or n per LogitsMode
};

class Model {
 public:
  // Opens a checkpoint directory: config.json + safetensors; validates the full inventory.
  // Kernels run on `pool` (null: ThreadPool::shared(), sized to the machine or $DSV4_THREADS).
  // `residency`: where the weight bytes live (core/mapped_file.h); they stay in stored format.
  // `expert_cache_bytes` > 0 streams the routed experts through a cache of that size whatever
  // `residency` says (model/expert_cache.h); with kCopy, a checkpoint larger than memory streams
  // with a default budget (model/stream_plan.h).
  // `experts`: only these routed experts are bound, and only their bytes read or pre-faulted;
  // running another one needs an executor that has it elsewhere. Such a share is never
  // streamed (an expert cache with a share is an Error).
  static std::unique_ptr<Model> load(const std::string& dir, Numerics numerics = Numerics::kReference,
                                     ThreadPool* pool = nullptr, Residency residency = Residency::kMap,
                                     size_t expert_cache_bytes = 0, ExpertRange experts = {});
  // The expert cache when routed experts stream from disk, else null.
  ExpertCache* expert_cache() const { return cache_.get(); }

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  const TensorDirectory& tensors() const { return *dir_; }
  Numerics numerics() const { return numerics_; }
  void set_numerics(Numerics n) { numerics_ = n; }
  ThreadPool* thread_pool() const { return pool_; }
  // The pool must outlive the model's use of it; null runs the kernels serially.
  void set_thread_pool(ThreadPool* pool) { pool_ = pool; }
  // Where routed experts run (null: here, all of them). Must outlive the model's use of it.
  // Streamed experts (an expert cache) cannot run through an executor: an Error.
  void set_expert_executor(ExpertExecutor* e);
  ExpertExecutor* expert_executor() const { return executor_; }
  const ExpertRange& expert_range() const { return experts_; }

  // Sequence state for the current numerics (its KV rows are stored in that mode's form).
  SequenceState new_sequence() const { return make_sequence_state(config_, numerics_); }
  MtpState new_mtp_state() const { return make_mtp_state(config_, numerics_); }

  // Runs `tokens` at positions state->pos … and advances state->pos.
  void forward(SequenceState* state, std::span<const int32_t> tokens, LogitsMode logits, ForwardOutput* out,
               Trace* trace = nullptr) const;

  // Several sequences in one forward (batched decode / prefill): weights are read once for all
  // rows; each sequence attends only within itself. outs[i] gets sequence i's results.
  struct BatchItem {
    SequenceState* state = nullptr;
    std::span<const int32_t> tokens;
    LogitsMode logits = LogitsMode::kLast;
  };
  void forward_batch(std::span<const BatchItem> items, std::vector<ForwardOutput>* outs, Trace* trace = nullptr) const;

  // One main block on given streams x [n, hc, dim] (in place) at start_pos with `state`.
  void block_forward(int layer, LayerState* state, int64_t start_pos, float* x, const int32_t* tokens, int64_t n,
                     Trace* trace = nullptr) const;

  // hc_head → norm → head for each of n rows of streams x [n, hc, dim]; logits [n, vocab].
  void head_logits(const float* x, int64_t n, float* logits) const;

  // The MTP block (spec §6): row i takes the main model's final streams at position p and the
  // token at p+1, and predicts the token at p+2. Runs at state->pos … and advances it.
  void mtp_forward(MtpState* state, const float* hidden, std::span<const int32_t> next_tokens, LogitsMode logits,
                   ForwardOutput* out, Trace* trace = nullptr) const;

  // Streamed experts (an expert cache): starts reading the hash-routed layers' experts of
  // `tokens`, which a coming forward() will run (they are known from the token ids alone).
  // forward() starts them itself; a decode loop calls this as soon as it has sampled the next
  // token, so that the reads overlap whatever it does before that forward (the MTP draft, the
  // answer's bookkeeping, other sequences' prefill). No effect without a cache; never changes
  // the results.
  void prefetch_experts(std::span<const int32_t> tokens) const;

 private:
  Model() = default;
  void embed(std::span<const int32_t> tokens, float* x) const;
  void head_input(const HcHeadWeights& hc, const Vec& norm, const float* x, float* z) const;  // hc_head → norm
  // hc_head → norm → head for each row of streams ([hc, dim] each): logits [rows, vocab], one
  // pass over the head for all of them.
  void head(const HcHeadWeights& hc, const Vec& norm, std::span<const float* const> streams, float* logits) const;
  void logits_rows(const HcHeadWeights& hc, const Vec& norm, const float* x, int64_t n, LogitsMode mode,
                   std::vector<float>* logits) const;  // the rows of x that `mode` asks for
  // forward_batch into outs[0 .. items.size()): their vectors are reused (no allocation once
  // they have the capacity, as in a decode loop).
  void forward_into(std::span<const BatchItem> items, ForwardOutput* outs, Trace* trace) const;

  ModelConfig config_;
  std::unique_ptr<TensorDirectory> dir_;
  Weights weights_;
  std::vector<RopeTable> ropes_;  // [n_layers + n_mtp_layers]
  Numerics numerics_ = Numerics::kReference;
  ThreadPool* pool_ = nullptr;
  std::shared_ptr<ExpertCache> cache_;  // shared_ptr: ExpertCache is incomplete here
  ExpertExecutor* executor_ = nullptr;
  ExpertRange experts_;
};

}  // namespace dsv4
