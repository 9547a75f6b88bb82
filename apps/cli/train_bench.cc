#include "apps/cli/train_bench.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <chrono>
#include <time.h>

#include "core/thread_pool.h"
#include "kernels/probe.h"
#include "train/cost.h"

namespace dsv4::cli {

namespace {

// A "VmRSS:" / "VmHWM:" line of /proc/self/status in bytes (0 if unreadable).
double proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string k;
  double kb = 0;
  while (f >> k) {
    if (k == key + ":" && f >> kb) return kb * 1024.0;
    f.ignore(1 << 20, '\n');
  }
  return 0;
}

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

}  // namespace

void TrainBench::start() {
  // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
  std::ofstream("/proc/self/clear_refs") << "5";
  baseline_bytes_ = proc_status_bytes("VmRSS");
}

void TrainBench::add(const train::StepReport& r, int64_t tokens_per_step) {
  max_activations_ = std::max(max_activations_, r.activation_bytes);
  if (++steps_ == 1) return;
  seconds_ += r.seconds;
  cpu_seconds_ += r.cpu_seconds;
  tokens_ += tokens_per_step;
}

void TrainBench::print(const ModelConfig& c, const train::TrainOptions& o, int threads) const {
  const train::TrainCost cost = train::train_cost(c, o);
  ThreadPool pool(threads);
  const auto w0 = std::chrono::steady_clock::now();
  const double c0 = cpu_seconds();
  const double peak = kernels::measure_dot_peak(&pool, false);  // GFLOP/s of wall clock
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
  const double cpu = cpu_seconds() - c0;
  // The probe's rate per CPU-second: its wall-clock rate scaled by the share of the wall time
  // its threads got (under contention the wall-clock peak is low by that share).
  const double core_peak = cpu > 0 ? peak * wall / cpu : peak / double(threads);
  const double tps = seconds_ > 0 ? double(tokens_) / seconds_ : 0;
  // Per CPU-second: what the steps got out of the cores they ran on, whatever else ran beside
  // them on a shared machine; compared with the peak of as many cores.
  const double per_cpu_s = cpu_seconds_ > 0 ? double(tokens_) / cpu_seconds_ : 0;
  const double gflops = tps * cost.flop_per_token * 1e-9, cpu_gflops = per_cpu_s * cost.flop_per_token * 1e-9;
  std::printf("bench: %.0f tokens/s, %.0f tokens per CPU-second over steps 2-%lld (%lld tokens per step, %d threads)\n",
              tps, per_cpu_s, (long long)steps_, (long long)(o.batch * o.seq_len), threads);
  std::printf("bench: %.2f MFLOP/token = 6 x %.3f M active matrix weights + %.2f MFLOP attention\n",
              cost.flop_per_token * 1e-6, double(cost.active_matmul) * 1e-6, cost.attention_flop * 1e-6);
  std::printf("bench: achieved %.2f GFLOP/s = %.1f %% of the F32 peak %.1f GFLOP/s (%s) measured now; "
              "%.2f GFLOP per CPU-second = %.1f %% of the peak per CPU-second %.1f\n",
              gflops, peak > 0 ? 100.0 * gflops / peak : 0.0, peak, kernels::dot_peak_kind(false), cpu_gflops,
              core_peak > 0 ? 100.0 * cpu_gflops / core_peak : 0.0, core_peak);
  const double predicted = baseline_bytes_ + cost.static_bytes + max_activations_;
  const double hwm = proc_status_bytes("VmHWM");
  std::printf("bench: memory formula: baseline %.1f + 4 B x (params %lld + grads %lld + Muon momentum %lld + "
              "2 AdamW moments %lld) %.1f + activations %.1f (measured, largest step) = %.1f MiB\n",
              mib(baseline_bytes_), (long long)cost.params, (long long)cost.trainable, (long long)cost.muon,
              (long long)(2 * (cost.trainable - cost.muon)), mib(cost.static_bytes), mib(max_activations_), mib(predicted));
  std::printf("bench: peak RSS %.1f MiB (%.2f x the formula)\n", mib(hwm), predicted > 0 ? hwm / predicted : 0.0);
}

}  // namespace dsv4::cli
