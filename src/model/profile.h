// Opt-in wall-clock totals of the attention phases whose work grows with the context (the
// long-context benchmark's "where the time goes"). Off by default: a disabled timer is one
// relaxed load. Phases are timed on the thread that runs the forward pass (kernels inside them
// may use the pool); nested phases are not allowed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace dsv4 {

enum class Phase { kIndexerScoring, kSparseAttention, kCompressor, kCount };

struct PhaseProfile {
  static inline std::atomic<bool> enabled{false};
  static inline std::atomic<int64_t> ns[int(Phase::kCount)] = {};
  static void reset() {
    for (auto& n : ns) n.store(0, std::memory_order_relaxed);
  }
  static double seconds(Phase p) { return double(ns[int(p)].load(std::memory_order_relaxed)) * 1e-9; }
};

class PhaseTimer {
 public:
  explicit PhaseTimer(Phase p) : phase_(p), on_(PhaseProfile::enabled.load(std::memory_order_relaxed)) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~PhaseTimer() {
    if (!on_) return;
    const auto dt = std::chrono::steady_clock::now() - start_;
    PhaseProfile::ns[int(phase_)].fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(dt).count(),
                                            std::memory_order_relaxed);
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  Phase phase_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace dsv4
