// Flags shared by every command that loads a model: numerics and weight residency.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "core/mapped_file.h"
#include "model/config.h"

namespace dsv4::cli {

struct LoadFlags {
  std::string numerics = "reference";
  Residency residency = Residency::kCopy;  // streamed or mapped when the checkpoint does not fit in RAM
  double expert_cache_gb = 0;              // > 0: routed experts streamed through a cache this large
  bool expert_parallel = false;  // one rank of an MPI job (apps/cli/model_loader.h)
  int ep_waves = 4;
  double ep_timeout_s = 120;

  size_t expert_cache_bytes() const { return size_t(expert_cache_gb * 1e9); }

  Numerics numerics_mode() const { return numerics == "plain" ? Numerics::kPlain : Numerics::kReference; }
};

// --expert-parallel and its settings (also for `logits`, which has its own numerics flag).
inline void add_expert_parallel_flags(CLI::App* c, LoadFlags& f) {
  c->add_flag("--expert-parallel", f.expert_parallel,
              "Run as one rank of an MPI job (mpirun -np N dsv4 ...): routed experts split across the ranks, "
              "rank 0 answers");
  c->add_option("--ep-waves", f.ep_waves,
                "Expert parallelism: send each rank's experts of a layer in up to N waves, overlapping "
                "transfer and compute (1: no waves)")
      ->check(CLI::Range(1, 64));
  c->add_option("--ep-timeout", f.ep_timeout_s,
                "Expert parallelism: end the job with an error when a rank answers nothing for S seconds")
      ->check(CLI::Range(0.1, 86400.0));
}

inline void add_load_flags(CLI::App* c, LoadFlags& f) {
  c->add_option("--numerics", f.numerics, "reference (official QAT numerics) or plain")
      ->check(CLI::IsMember({"reference", "plain"}));
  auto* map = c->add_flag_callback(
      "--mmap", [&f] { f.residency = Residency::kMap; },
      "Use weights from the file mapping (pre-faulted when they fit in RAM): fastest start from a warm "
      "page cache");
  auto* copy = c->add_flag_callback(
      "--no-mmap", [&f] { f.residency = Residency::kCopy; },
      "Copy weights once into huge-page memory (default when they fit in RAM): faster prefill, immune to "
      "page-cache reclaim");
  map->excludes(copy);
  c->add_option("--expert-cache-gb", f.expert_cache_gb,
                "Stream the routed experts from disk through a RAM cache of this many GB (default: only when the "
                "checkpoint does not fit in memory, with what is left after the rest of the model)")
      ->check(CLI::PositiveNumber)
      ->excludes(map);
  add_expert_parallel_flags(c, f);
}

}  // namespace dsv4::cli
