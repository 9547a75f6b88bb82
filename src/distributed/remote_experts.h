// The MoE executor of rank 0 and the request loop of the other ranks (wire.h).
#pragma once

#include <memory>
#include <mutex>

#include "distributed/expert_parallel.h"
#include "distributed/sim_link.h"
#include "model/moe.h"

namespace dsv4::dist {

class RemoteExperts : public ExpertExecutor {
 public:
  // `mpi` is held for each call (heartbeat.h: rank 0's MPI calls take turns).
  RemoteExperts(int n_ranks, int n_experts, const EpOptions& options, std::mutex* mpi)
      : n_ranks_(n_ranks), n_experts_(n_experts), options_(options), link_(SimLink::from_env()), mpi_(mpi) {}
  void run(const RoutedBatch& b, const std::function<void()>& local) override;
  const EpStats& stats() const { return stats_; }

 private:
  int n_ranks_, n_experts_;
  EpOptions options_;
  SimLink link_;
  std::mutex* mpi_;
  EpStats stats_;
};

// Ranks > 0: answers requests for `model`'s experts until rank 0 sends stop; returns this rank's
// figures (compute and idle time).
EpStats serve_requests(const Model& model, const EpOptions& options);

}  // namespace dsv4::dist
