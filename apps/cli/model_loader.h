// Loading the model for a command, alone or as one rank of an expert-parallel MPI job
// (--expert-parallel, docs/distributed.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "apps/cli/load_flags.h"
#include "model/model.h"

namespace dsv4::cli {

// The model of this process. With --expert-parallel it joins the MPI job, reads only this rank's
// share of the routed experts and checks that every rank loaded the same model; on ranks > 0 it
// then answers rank 0's expert requests and ends the process when rank 0 is done: only rank 0
// returns.
std::unique_ptr<Model> load_model(const std::string& dir, const LoadFlags& f, ThreadPool* pool = nullptr);

// What rank 0's expert-parallel run sent and spent (bench, docs/distributed.md).
struct EpReport {
  int ranks = 0;  // 0: not expert-parallel
  int waves = 0;
  int64_t calls = 0, token_layers = 0;
  double bytes_sent = 0, bytes_received = 0;
  double local_s = 0, wait_s = 0, remote_compute_s = 0, remote_idle_s = 0;
  double max_remote_rss_gb = 0;
  double remote_span_s = 0;
};
// Releases the other ranks first (their figures come back with it): call when done with the model.
EpReport expert_parallel_report();

// main(), after the command (also after an error): rank 0 releases the other ranks, MPI ends.
void finish_expert_parallel();

}  // namespace dsv4::cli
