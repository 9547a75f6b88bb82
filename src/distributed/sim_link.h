// A simulated network link, to measure what waves overlap when the ranks share one machine
// (benchmarks only; docs/distributed.md). Set DSV4_EP_SIM_LINK="GB/s,latency µs" for rank 0:
// rows and outputs then count as arrived only when a link of that bandwidth and latency (one per
// expert rank, each direction) would have delivered them — the expert rank waits for its rows,
// rank 0 for the outputs. Shared-memory transfers take microseconds: without this, waves have
// nothing to hide here. Results are unchanged (only waiting is added).
#pragma once

#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "distributed/mpi_wait.h"

namespace dsv4::dist {

struct SimLink {
  double bytes_per_s = 0, latency_s = 0;
  bool on() const { return bytes_per_s > 0; }
  double transfer_s(double bytes) const { return bytes / bytes_per_s; }

  static SimLink from_env() {
    SimLink l;
    const char* v = std::getenv("DSV4_EP_SIM_LINK");
    if (!v || !*v) return l;
    double gbs = 0, us = 0;
    if (std::sscanf(v, "%lf,%lf", &gbs, &us) != 2 || gbs <= 0 || us < 0)
      throw Error(cat("DSV4_EP_SIM_LINK='", v, "': expected 'GB/s,latency_us', e.g. '12.5,20'"));
    l.bytes_per_s = gbs * 1e9;
    l.latency_s = us * 1e-6;
    return l;
  }
};

// Sleeps until the steady clock (system-wide: CLOCK_MONOTONIC) reads t seconds.
inline void sleep_until(double t) {
  for (double now; (now = now_s()) < t;) {
    const double d = t - now;
    timespec ts{time_t(d), long((d - double(time_t(d))) * 1e9)};
    nanosleep(&ts, nullptr);
  }
}

}  // namespace dsv4::dist
