#include "apps/cli/bench_passes.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "model/context_fill.h"

namespace dsv4::cli {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_s() {  // the process's CPU time, all threads
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

template <class F>
double median_over(size_t n, F f) {
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) v.push_back(f(i));
  return median_of(v);
}

void start_profile() {
  PhaseProfile::reset();
  PhaseProfile::enabled = true;
}

// The profile since start_profile(), per step.
PhaseSample stop_profile(int steps) {
  PhaseProfile::enabled = false;
  PhaseSample s;
  const double n = double(std::max(steps, 1));
  for (int p = 0; p < int(Phase::kCount); ++p) {
    s.s[p] = PhaseProfile::seconds(Phase(p)) / n;
    s.bytes[p] = double(PhaseProfile::bytes_of(Phase(p))) / n;
  }
  s.kv_bytes = double(PhaseProfile::kv_bytes.load()) / n;
  s.regions = double(PhaseProfile::regions.load()) / n;
  s.wait_s = double(PhaseProfile::wait_ns.load()) * 1e-9 / n;
  s.experts = double(PhaseProfile::experts_touched.load()) / n;
  const int64_t chunks = PhaseProfile::chunks.load();
  s.worker_share = chunks ? double(PhaseProfile::worker_chunks.load()) / double(chunks) : 0;
  return s;
}

// Per step: the kernels' expert bytes against the routing's union (exactly equal when every
// touched expert is read once per step for all its rows), and the step's union bytes.
void fill_bytes(const Model& m, const StepBytes& sb, int steps, BatchSample* b) {
  const int64_t experts = PhaseProfile::experts_touched.load();
  const int64_t read = PhaseProfile::bytes_of(Phase::kRoutedExperts) + PhaseProfile::bytes_of(Phase::kSharedExpert);
  const int64_t uni = experts * sb.expert + int64_t(steps) * m.config().n_layers * sb.shared_expert;
  const double n = double(steps);
  b->expert_read_bytes = double(read) / n;
  b->expert_union_bytes = double(uni) / n;
  b->experts = double(experts) / n;
  b->kv_bytes = double(PhaseProfile::kv_bytes.load()) / n;
  b->union_bytes = double(sb.dense) + b->experts * double(sb.expert) + b->kv_bytes;
}

std::vector<SequenceState> filled_sequences(const Model& m, int n, int64_t context) {
  std::vector<SequenceState> seqs;
  for (int i = 0; i < n; ++i) {
    seqs.push_back(m.new_sequence());
    fill_synthetic_context(m.config(), m.numerics(), &seqs.back(), context, uint64_t(i + 1));
  }
  return seqs;
}

// run() under the profiler; its figures per token of the n tokens it forwards.
template <class Run>
PhaseSample profiled(int n, Run run) {
  start_profile();
  const double c0 = cpu_s(), t0 = now_s();
  run();
  const double wall = now_s() - t0, cpu = cpu_s() - c0;
  PhaseSample s = stop_profile(n);
  s.wall_s = wall / n, s.cpu_s = cpu / n;
  return s;
}

// `steps` calls of step(i) under the profiler (whose counters give the bytes): the median time of one.
template <class Step>
BatchSample timed_steps(const Model& m, const StepBytes& sb, int steps, Step step) {
  std::vector<double> dt;
  start_profile();
  const double c0 = cpu_s();
  for (int i = 0; i < steps; ++i) {
    const double a = now_s();
    step(i);
    dt.push_back(now_s() - a);
  }
  const double cpu = cpu_s() - c0;
  BatchSample b;
  b.phases = stop_profile(steps);
  b.phases.cpu_s = cpu / steps;
  b.step_s = median_of(dt);
  fill_bytes(m, sb, steps, &b);
  return b;
}

}  // namespace

double PhaseSample::total_bytes() const {
  double t = 0;
  for (double b : bytes) t += b;
  return t;
}

PhaseSample profile_decode(const Model& m, SequenceState* st, int n, const TokenSource& tokens) {
  ForwardOutput out;
  return profiled(n, [&] {
    for (int i = 0; i < n; ++i) m.forward(st, tokens(1), LogitsMode::kLast, &out);
  });
}

PhaseSample profile_prefill(const Model& m, int prompt, const TokenSource& tokens) {
  SequenceState st = m.new_sequence();
  const std::vector<int32_t> t = tokens(prompt);
  ForwardOutput out;
  return profiled(prompt, [&] { m.forward(&st, t, LogitsMode::kLast, &out); });
}

BatchSample measure_batch(const Model& m, int sequences, int64_t context, int steps, const TokenSource& tokens,
                          const StepBytes& sb) {
  std::vector<SequenceState> seqs = filled_sequences(m, sequences, context);
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(sequences));
  std::vector<Model::BatchItem> items(static_cast<size_t>(sequences));
  std::vector<ForwardOutput> outs;
  auto step = [&] {
    for (size_t i = 0; i < items.size(); ++i) {
      toks[i] = tokens(1);
      items[i] = Model::BatchItem{&seqs[i], toks[i], LogitsMode::kLast};
    }
    m.forward_batch(items, &outs);
  };
  step();  // warm-up: the new sequences' first step allocates
  return timed_steps(m, sb, steps, [&](int) { step(); });
}

BatchSample measure_verify(const Model& m, int draft, int64_t context, int reps_per, const TokenSource& tokens,
                           const StepBytes& sb) {
  std::vector<SequenceState> seqs = filled_sequences(m, 1, context);
  ForwardOutput out;
  m.forward(&seqs[0], tokens(draft), LogitsMode::kAll, &out);  // warm-up
  std::vector<std::vector<int32_t>> drafts;  // drawn before the clock starts
  for (int r = 0; r < reps_per; ++r) drafts.push_back(tokens(draft));
  return timed_steps(m, sb, reps_per,
                     [&](int r) { m.forward(&seqs[0], drafts[size_t(r)], LogitsMode::kAll, &out); });
}

nlohmann::ordered_json profile_json(const std::vector<PhaseSample>& reps, const std::vector<double>& bws) {
  nlohmann::ordered_json j, phases = nlohmann::ordered_json::array();
  for (int p = 0; p < int(Phase::kCount); ++p) {
    nlohmann::ordered_json ph;
    ph["name"] = phase_name(Phase(p));
    ph["ms_per_token"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r].s[p]; });
    ph["mb_per_token"] = 1e-6 * median_over(reps.size(), [&](size_t r) { return reps[r].bytes[p]; });
    ph["gbs"] = median_over(reps.size(), [&](size_t r) { return reps[r].s[p] > 0 ? reps[r].bytes[p] / reps[r].s[p] / 1e9 : 0; });
    ph["bandwidth_fraction"] = median_over(reps.size(), [&](size_t r) {
      return reps[r].s[p] > 0 ? reps[r].bytes[p] / reps[r].s[p] / 1e9 / bws[r] : 0;
    });
    phases.push_back(ph);
  }
  j["phases"] = phases;
  j["bytes_per_token"] = median_over(reps.size(), [&](size_t r) { return reps[r].total_bytes(); });
  j["kv_bytes_per_token"] = median_over(reps.size(), [&](size_t r) { return reps[r].kv_bytes; });
  j["wall_ms_per_token"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r].wall_s; });
  j["cpu_ms_per_token"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r].cpu_s; });
  j["pool_regions_per_token"] = median_over(reps.size(), [&](size_t r) { return reps[r].regions; });
  j["pool_wait_ms_per_token"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r].wait_s; });
  j["pool_worker_chunk_share"] = median_over(reps.size(), [&](size_t r) { return reps[r].worker_share; });
  j["experts_per_token"] = median_over(reps.size(), [&](size_t r) { return reps[r].experts; });
  j["bandwidth_fraction"] = median_over(reps.size(), [&](size_t r) {
    return reps[r].total_bytes() / reps[r].wall_s / 1e9 / bws[r];
  });
  return j;
}

void print_profile(const std::vector<PhaseSample>& reps, const std::vector<double>& bws, const char* title) {
  const nlohmann::ordered_json j = profile_json(reps, bws);
  std::printf("  %-36s %9s %9s %8s %6s\n", cat(title, " (medians)").c_str(), "ms/token", "MB/token", "GB/s", "% bw");
  for (const auto& ph : j["phases"])
    std::printf("    %-34s %9.3f %9.2f %8.1f %5.1f%%\n", ph["name"].get<std::string>().c_str(),
                ph["ms_per_token"].get<double>(), ph["mb_per_token"].get<double>(), ph["gbs"].get<double>(),
                100 * ph["bandwidth_fraction"].get<double>());
  std::printf("    %-34s %9.3f %9.2f %8s %5.1f%%   (KV %.2f MB)\n", "all", j["wall_ms_per_token"].get<double>(),
              j["bytes_per_token"].get<double>() / 1e6, "", 100 * j["bandwidth_fraction"].get<double>(),
              j["kv_bytes_per_token"].get<double>() / 1e6);
  std::printf("    %-34s %9.0f regions/token, %.0f %% of chunks on workers, caller waited %.3f ms/token; CPU %.2f "
              "ms/token\n", "thread pool", j["pool_regions_per_token"].get<double>(),
              100 * j["pool_worker_chunk_share"].get<double>(), j["pool_wait_ms_per_token"].get<double>(),
              j["cpu_ms_per_token"].get<double>());
}

namespace {

// A batch or verify step by phase (medians over repetitions): ms and MB per step; the phases
// that took no time are left out.
nlohmann::ordered_json step_phases_json(const std::vector<std::vector<BatchSample>>& reps, size_t k) {
  nlohmann::ordered_json phases = nlohmann::ordered_json::object();
  for (int p = 0; p < int(Phase::kCount); ++p) {
    const double ms = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r][k].phases.s[p]; });
    if (ms <= 0) continue;
    phases[phase_name(Phase(p))] = {
        {"ms", ms}, {"mb", 1e-6 * median_over(reps.size(), [&](size_t r) { return reps[r][k].phases.bytes[p]; })}};
  }
  phases["pool_regions"] = median_over(reps.size(), [&](size_t r) { return reps[r][k].phases.regions; });
  phases["pool_wait_ms"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r][k].phases.wait_s; });
  // All threads' CPU time per step: on a machine shared with other work, the cost that wall
  // time hides (one thread: the compute alone).
  phases["cpu_ms"] = 1e3 * median_over(reps.size(), [&](size_t r) { return reps[r][k].phases.cpu_s; });
  return phases;
}

}  // namespace

nlohmann::ordered_json batch_json(const std::vector<int>& ns, const std::vector<std::vector<BatchSample>>& reps,
                                  const std::vector<double>& bws) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (size_t k = 0; k < ns.size(); ++k) {
    auto med = [&](auto f) { return median_over(reps.size(), [&](size_t r) { return f(reps[r][k], bws[r]); }); };
    const double n = ns[k];
    nlohmann::ordered_json j;
    j["sequences"] = ns[k];
    j["step_ms"] = 1e3 * med([](const BatchSample& b, double) { return b.step_s; });
    j["tokens_per_s"] = med([&](const BatchSample& b, double) { return n / b.step_s; });
    j["union_bytes_per_step"] = med([](const BatchSample& b, double) { return b.union_bytes; });
    j["experts_per_step"] = med([](const BatchSample& b, double) { return b.experts; });
    j["expert_bytes_read_per_step"] = med([](const BatchSample& b, double) { return b.expert_read_bytes; });
    j["expert_union_bytes_per_step"] = med([](const BatchSample& b, double) { return b.expert_union_bytes; });
    j["kv_bytes_per_step"] = med([](const BatchSample& b, double) { return b.kv_bytes; });
    j["bound_tokens_per_s"] = med([&](const BatchSample& b, double bw) { return n * bw * 1e9 / b.union_bytes; });
    j["bound_fraction"] = med([&](const BatchSample& b, double bw) { return (n / b.step_s) / (n * bw * 1e9 / b.union_bytes); });
    j["phases"] = step_phases_json(reps, k);
    rows.push_back(j);
  }
  return rows;
}

void print_batch(const std::vector<int>& ns, const std::vector<std::vector<BatchSample>>& reps,
                 const std::vector<double>& bws) {
  std::printf("  concurrent sequences (medians)  %6s %9s %10s %9s %10s %8s\n", "step ms", "tok/s", "union MB", "experts",
              "bound tok/s", "of bound");
  for (const auto& j : batch_json(ns, reps, bws))
    std::printf("    %-28d %9.1f %9.2f %10.1f %9.0f %10.2f %7.1f%%\n", j["sequences"].get<int>(), j["step_ms"].get<double>(),
                j["tokens_per_s"].get<double>(), j["union_bytes_per_step"].get<double>() / 1e6,
                j["experts_per_step"].get<double>(), j["bound_tokens_per_s"].get<double>(),
                100 * j["bound_fraction"].get<double>());
}

nlohmann::ordered_json verify_json(const std::vector<int>& ks, const std::vector<std::vector<BatchSample>>& reps) {
  // ks[0] is 1: every ratio is against the decode step of the same repetition.
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (size_t k = 0; k < ks.size(); ++k) {
    auto med = [&](auto f) { return median_over(reps.size(), [&](size_t r) { return f(reps[r][k], reps[r][0]); }); };
    nlohmann::ordered_json j;
    j["draft"] = ks[k];
    j["ms"] = 1e3 * med([](const BatchSample& b, const BatchSample&) { return b.step_s; });
    j["decode_step_ratio"] = med([](const BatchSample& b, const BatchSample& d) { return b.step_s / d.step_s; });
    j["union_bytes"] = med([](const BatchSample& b, const BatchSample&) { return b.union_bytes; });
    j["bytes_ratio"] = med([](const BatchSample& b, const BatchSample& d) { return b.union_bytes / d.union_bytes; });
    j["experts"] = med([](const BatchSample& b, const BatchSample&) { return b.experts; });
    j["expert_bytes_read"] = med([](const BatchSample& b, const BatchSample&) { return b.expert_read_bytes; });
    j["expert_union_bytes"] = med([](const BatchSample& b, const BatchSample&) { return b.expert_union_bytes; });
    j["phases"] = step_phases_json(reps, k);
    rows.push_back(j);
  }
  return rows;
}

void print_verify(const std::vector<int>& ks, const std::vector<std::vector<BatchSample>>& reps) {
  std::printf("  verify forward (medians)        %8s %10s %10s %10s %8s\n", "draft", "ms", "× decode", "union MB", "× bytes");
  for (const auto& j : verify_json(ks, reps))
    std::printf("    %-28s %8d %10.1f %10.2f %10.1f %8.2f\n", "", j["draft"].get<int>(), j["ms"].get<double>(),
                j["decode_step_ratio"].get<double>(), j["union_bytes"].get<double>() / 1e6, j["bytes_ratio"].get<double>());
}

}  // namespace dsv4::cli
