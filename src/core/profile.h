// Opt-in per-phase profile of forward passes (`dsv4 bench --profile`, longctx_bench): wall time,
// weight and KV bytes per phase, the thread pool's regions and the caller's wait in them. Off by
// default: a disabled timer or byte count is one relaxed load.
//
// Timers nest and count exclusive time: entering a phase stops the clock of the enclosing one, so
// the phases of a pass add up to its wall time (time outside any timer is not counted). Timers run
// on the thread that drives the forward pass; byte counts may come from any thread (kernels add
// to the phase that thread's caller is in). One pass at a time while enabled.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace dsv4 {

enum class Phase {
  kIndexerScoring,   // the indexer's scoring and top-k of cached keys (grows with the context)
  kSparseAttention,  // attention over the window and the selected compressed entries
  kCompressor,       // the compressors' projections and pooling
  kEmbed,
  kMhc,              // hyper-connection pre/post mixes and the sub-layer norms
  kAttnProjection,   // wq_a, wq_b, wkv, wo_a, wo_b with their norms and RoPE
  kIndexer,          // the indexer's projections (its scoring is kIndexerScoring)
  kGate,             // router logits and expert selection
  kSharedExpert,     // on its own only where experts are streamed or run one at a time
  kRoutedExperts,    // routed experts and the combine (resident experts: the shared one too, same regions)
  kHead,             // final mix, norm and the vocabulary projection
  kOther,            // the rest of a forward pass (bookkeeping, window writes)
  kCount
};

const char* phase_name(Phase p);

struct PhaseProfile {
  static inline std::atomic<bool> enabled{false};
  static inline std::atomic<int64_t> ns[int(Phase::kCount)] = {};
  static inline std::atomic<int64_t> bytes[int(Phase::kCount)] = {};  // weights and KV rows read
  static inline std::atomic<int64_t> kv_bytes{0};         // the KV part of `bytes`
  static inline std::atomic<int64_t> regions{0};          // thread pool parallel regions
  static inline std::atomic<int64_t> wait_ns{0};          // caller's wait for the other threads' chunks
  static inline std::atomic<int64_t> chunks{0};           // chunks of those regions
  static inline std::atomic<int64_t> worker_chunks{0};    // the chunks workers ran (the rest: the caller)
  static inline std::atomic<int64_t> experts_touched{0};  // distinct routed experts per MoE call, summed
  static inline std::atomic<int> current{-1};             // the open phase (−1: none)
  static inline std::atomic<int64_t> mark_ns{0};          // when the open phase's clock last started

  static void reset();
  static double seconds(Phase p) { return double(ns[int(p)].load(std::memory_order_relaxed)) * 1e-9; }
  static int64_t bytes_of(Phase p) { return bytes[int(p)].load(std::memory_order_relaxed); }
  static void add_bytes(int64_t b, bool kv = false) {
    if (!enabled.load(std::memory_order_relaxed)) return;
    const int p = current.load(std::memory_order_relaxed);
    bytes[p < 0 ? int(Phase::kOther) : p].fetch_add(b, std::memory_order_relaxed);
    if (kv) kv_bytes.fetch_add(b, std::memory_order_relaxed);
  }
  static void count(std::atomic<int64_t>& counter, int64_t n) {
    if (enabled.load(std::memory_order_relaxed)) counter.fetch_add(n, std::memory_order_relaxed);
  }
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

class PhaseTimer {
 public:
  explicit PhaseTimer(Phase p) : phase_(int(p)), on_(PhaseProfile::enabled.load(std::memory_order_relaxed)) {
    if (on_) prev_ = switch_to(phase_);
  }
  ~PhaseTimer() {
    if (on_) switch_to(prev_);
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  // Charges the time since the last switch to the open phase, opens `next`; returns the old one.
  static int switch_to(int next) {
    const int64_t t = PhaseProfile::now_ns();
    const int open = PhaseProfile::current.exchange(next, std::memory_order_relaxed);
    const int64_t since = PhaseProfile::mark_ns.exchange(t, std::memory_order_relaxed);
    if (open >= 0) PhaseProfile::ns[open].fetch_add(t - since, std::memory_order_relaxed);
    return open;
  }
  int phase_, prev_ = -1;
  bool on_;
};

}  // namespace dsv4
