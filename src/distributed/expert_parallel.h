// Expert parallelism across processes of an MPI job (docs/distributed.md).
//
// Every rank loads the non-expert weights and a contiguous share of the routed experts (only
// those bytes). Rank 0 runs the model: tokenization, attention, sampling, the server. At each
// MoE layer it sends the rows routed to another rank's experts there (in waves, non-blocking),
// runs its own experts and the shared expert meanwhile, receives the other ranks' expert
// outputs, and sums everything in the reference order, so the logits are bit-identical to one
// process. Ranks > 0 only serve those requests until rank 0 is done.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/model.h"

namespace dsv4::dist {

class Heartbeat;

// Rank r's routed experts of E over N ranks: contiguous, the first E mod N ranks one more.
ExpertRange expert_share(int n_experts, int rank, int n_ranks);

struct EpOptions {
  int waves = 4;             // a layer's remote experts in up to this many waves per rank (1: none)
  double timeout_s = 120;    // a rank that sends nothing for this long ends the job with an error
};

// Traffic and time of the MoE calls rank 0 made (bench, docs/distributed.md).
struct EpStats {
  int64_t calls = 0;              // MoE layer calls
  int64_t token_layers = 0;       // Σ tokens over those calls
  double bytes_sent = 0, bytes_received = 0;  // rank 0 ↔ the others
  double local_s = 0;             // rank 0: own experts + shared expert
  double wait_s = 0;              // rank 0: waiting for remote results after its own work
  double remote_compute_s = 0;    // ranks > 0: computing experts (summed over ranks)
  double remote_idle_s = 0;       // ranks > 0: inside a call, waiting for the next wave's rows
  double remote_span_s = 0;       // ranks > 0: Σ per call, rank 0 sending → last outputs arrived
  double max_remote_rss_gb = 0;   // ranks > 0: the largest resident memory (VmRSS)
};

// This process's resident memory (VmRSS) in GB.
double resident_gb();

class ExpertParallel {
 public:
  // Joins the MPI job (MPI_Init); one per process.
  static std::unique_ptr<ExpertParallel> join(const EpOptions& options);
  ~ExpertParallel();  // rank 0: releases the other ranks; then MPI_Finalize

  int rank() const { return rank_; }
  int size() const { return size_; }
  ExpertRange my_experts(int n_experts) const { return expert_share(n_experts, rank_, size_); }

  // Collective: every rank passes the model it loaded from `dir` (or the error that stopped it
  // loading). Throws Error on every rank when any rank failed, or loaded a different checkpoint,
  // config, numerics or kernel ISA than rank 0. Then rank 0 gets an executor for its model.
  void agree(const Model* model, const std::string& dir, const std::string& load_error);

  // Ranks > 0: answers rank 0's expert requests until it is done.
  void serve(const Model& model);

  // Rank 0: the executor to install (model->set_expert_executor); lives as long as this.
  ExpertExecutor* executor() const { return executor_.get(); }
  EpStats stats() const;  // rank 0, after the run: includes the other ranks' figures once released
  void release();         // rank 0: tells the others to stop (also done by the destructor)

 private:
  ExpertParallel() = default;
  int rank_ = 0, size_ = 1;
  EpOptions options_;
  bool serving_ = false;  // agreed: the others wait for requests / stop
  std::unique_ptr<Heartbeat> heartbeat_;  // rank 0 while serving_; outlives executor_ (its lock)
  std::unique_ptr<ExpertExecutor> executor_;
  EpStats remote_;  // what the other ranks reported when released
};

}  // namespace dsv4::dist
