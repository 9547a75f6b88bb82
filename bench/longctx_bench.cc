// Long-context benchmark (issue 15): decode and chunk-prefill speed of a checkpoint at contexts
// up to the model's 1M, where the time goes, and the KV state measured against the predicted
// bytes per token.
//
//   longctx_bench --model DIR [--contexts 4096,65536,262144,1048576] [--gen 8] [--chunk 256]
//                 [--reps 3] [--threads N] [--mmap]
//
// The state at each context is filled with synthetic rows of the cache formats
// (model/context_fill.h) instead of a real prefill; decode is the median per-token time of
// --gen steps after that, prefill the speed of one --chunk-token forward at that context. The
// time to prefill a whole context is extrapolated from the chunk speeds (per-token time linear
// between measured contexts, starting from a chunk at context 0). Phase times come from
// model/profile.h; "rest" is everything else in the step: the weight-streaming matrix products,
// MoE, norms, the head.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "model/context_fill.h"
#include "model/model.h"
#include "model/profile.h"

namespace {

using namespace dsv4;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_s() {  // the process's CPU time, all threads (less sensitive than wall time to a busy machine)
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Flags {
  std::string model;
  std::vector<int64_t> contexts = {4096, 65536, 262144, 1048576};
  int gen = 8, chunk = 256, reps = 3, threads = 0;
  bool mmap = false;
};

Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto need = [&] {
      if (!v) throw std::runtime_error(a + " needs a value");
      ++i;
      return std::string(v);
    };
    if (a == "--model") f.model = need();
    else if (a == "--gen") f.gen = std::stoi(need());
    else if (a == "--chunk") f.chunk = std::stoi(need());
    else if (a == "--reps") f.reps = std::stoi(need());
    else if (a == "--threads") f.threads = std::stoi(need());
    else if (a == "--mmap") f.mmap = true;
    else if (a == "--contexts") {
      f.contexts.clear();
      std::stringstream ss(need());
      for (std::string t; std::getline(ss, t, ',');) f.contexts.push_back(std::stoll(t));
    } else throw std::runtime_error("unknown option " + a);
  }
  if (f.model.empty()) throw std::runtime_error("--model DIR is required");
  if (f.gen < 1 || f.chunk < 1 || f.reps < 1) throw std::runtime_error("--gen, --chunk, --reps must be positive");
  return f;
}

struct Row {
  int64_t context = 0;
  double decode_s = 0;                       // median seconds per decoded token
  double decode_cpu_s = 0;                   // CPU seconds per decoded token (median over reps)
  double phase_s[int(Phase::kCount)] = {};   // per decoded token (median over reps)
  double chunk_tps = 0;                      // chunk prefill tokens/s at this context
  double kv_measured = 0, kv_predicted = 0;  // bytes of the state
};

struct Bench {
  const Model& m;
  const Flags& f;
  std::mt19937 rng{42};

  std::vector<int32_t> tokens(int n) {
    std::uniform_int_distribution<int32_t> d(100, int32_t(std::min<int64_t>(m.config().vocab_size, 100000)) - 1);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& t : v) t = d(rng);
    return v;
  }

  SequenceState filled(int64_t ctx, uint64_t seed) {
    SequenceState st = m.new_sequence();
    fill_synthetic_context(m.config(), m.numerics(), &st, ctx, seed);
    return st;
  }

  Row measure(int64_t ctx) {
    Row r;
    r.context = ctx;
    std::vector<double> dec, dec_cpu, chunk, phase[int(Phase::kCount)];
    ForwardOutput out;
    for (int rep = 0; rep < f.reps; ++rep) {
      SequenceState st = filled(ctx, uint64_t(rep + 1));
      if (rep == 0) {
        double fixed = 0;
        const double per_token = kv_bytes_per_token(m.config(), m.numerics(), &fixed);
        r.kv_predicted = fixed + per_token * double(ctx);
        r.kv_measured = double(st.bytes());
      }
      std::vector<double> dt;
      PhaseProfile::reset();
      PhaseProfile::enabled = true;
      const double c0 = cpu_s();
      for (int i = 0; i < f.gen; ++i) {
        std::vector<int32_t> t = tokens(1);
        const double a = now_s();
        m.forward(&st, t, LogitsMode::kLast, &out);
        dt.push_back(now_s() - a);
      }
      dec_cpu.push_back((cpu_s() - c0) / f.gen);
      PhaseProfile::enabled = false;
      dec.push_back(median(dt));
      for (int p = 0; p < int(Phase::kCount); ++p) phase[p].push_back(PhaseProfile::seconds(Phase(p)) / f.gen);
      std::vector<int32_t> c = tokens(f.chunk);
      const double a = now_s();
      m.forward(&st, c, LogitsMode::kLast, &out);
      chunk.push_back(f.chunk / (now_s() - a));
    }
    r.decode_s = median(dec);
    r.decode_cpu_s = median(dec_cpu);
    for (int p = 0; p < int(Phase::kCount); ++p) r.phase_s[p] = median(phase[p]);
    r.chunk_tps = median(chunk);
    return r;
  }
};

// Seconds to prefill `ctx` tokens from chunk speeds measured at increasing contexts (the first at
// 0): per-token time interpolated linearly between them, held flat beyond the last.
double prefill_seconds(const std::vector<Row>& rows, int64_t ctx) {
  double s = 0;
  for (size_t i = 0; i + 1 < rows.size() && rows[i].context < ctx; ++i) {
    const double a = double(rows[i].context), b = double(std::min(rows[i + 1].context, ctx));
    const double ta = 1 / rows[i].chunk_tps, tb = 1 / rows[i + 1].chunk_tps;
    const double tb_at = ta + (tb - ta) * (b - a) / (double(rows[i + 1].context) - a);
    s += (b - a) * (ta + tb_at) / 2;
  }
  return s;
}

void run(const Flags& f) {
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("OPENBLAS_L2_SIZE");
  const int T = f.threads > 0 ? f.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(T);
  auto model = Model::load(f.model, Numerics::kReference, &pool, f.mmap ? Residency::kMap : Residency::kCopy);
  const ModelConfig& c = model->config();
  std::printf("longctx_bench: %s, %d layers (compress ratios", f.model.c_str(), c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) std::printf(" %d", c.compress_ratio(l));
  std::printf("), reference numerics, %d threads, weights %s\n", T, f.mmap ? "mapped" : "copied");
  Bench b{*model, f};
  {  // warm-up: first touch of the weights
    SequenceState st = model->new_sequence();
    ForwardOutput out;
    for (int i = 0; i < 2; ++i) model->forward(&st, b.tokens(1), LogitsMode::kLast, &out);
  }
  std::vector<Row> rows;
  rows.push_back(b.measure(0));
  for (int64_t ctx : f.contexts) {
    rows.push_back(b.measure(ctx));
    const Row& r = rows.back();
    std::fprintf(stderr, "  context %lld done\n", (long long)ctx);
    (void)r;
  }
  std::printf("%9s %9s %9s %9s %9s %9s %9s %9s | %10s %12s | %10s %10s %6s\n", "context", "dec tok/s", "ms/token", "cpu ms",
              "indexer", "sparse", "compress", "rest", "chunk tok/s", "prefill(ctx)", "KV MB", "pred MB", "ratio");
  for (const Row& r : rows) {
    const double ms = r.decode_s * 1e3;
    double rest = ms;
    for (int p = 0; p < 3; ++p) rest -= r.phase_s[p] * 1e3;  // the context-dependent phases
    const double pre = r.context ? prefill_seconds(rows, r.context) : 0;
    std::printf("%9lld %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f | %10.1f %10.0f s | %10.1f %10.1f %6.3f\n",
                (long long)r.context, 1 / r.decode_s, ms, r.decode_cpu_s * 1e3, r.phase_s[0] * 1e3, r.phase_s[1] * 1e3, r.phase_s[2] * 1e3,
                rest, r.chunk_tps, pre, r.kv_measured / 1e6, r.kv_predicted / 1e6, r.kv_measured / r.kv_predicted);
  }
  if (rows.size() > 2)
    std::printf("decode slowdown %lld -> %lld: %.2fx\n", (long long)rows[1].context, (long long)rows.back().context,
                rows.back().decode_s / rows[1].decode_s);
  std::printf("(decode: median ms per token of %d steps, median of %d reps; cpu ms: process CPU time per\n"
              " token, all threads; phases: wall ms per token, timed on the\n"
              " forward thread; state filled with synthetic rows; prefill(ctx): seconds to prefill ctx tokens,\n"
              " extrapolated from %d-token chunk speeds at the measured contexts)\n",
              f.gen, f.reps, f.chunk);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longctx_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
