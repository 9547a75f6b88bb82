// Kernel micro-benchmarks (Google Benchmark): the linear kernels on every stored weight format,
// at decode shape (1 row: memory-bound, reported as bytes/s of weights read) and at prefill
// shapes (many rows: compute-bound, reported as FLOP/s), for each ISA the CPU supports; and the
// sparse attention kernel. Matrices are 64 MB or more so that decode reads come from DRAM.
//
//   build/bench/kernels_bench --benchmark_filter='Linear/fp4' --benchmark_repetitions=5
//
// Compare the GBps of the 1-row cases with `dsv4 bench`'s measured read bandwidth
// and the GFLOPs counter with its BF16 dot peak (same machine, same run of the machine).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <map>
#include <utility>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "core/arena.h"
#include "kernels/fp4_index.h"
#include "kernels/isa.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/probe.h"
#include "kernels/quant.h"
#include "kernels/sparse_attention.h"

namespace {

using namespace dsv4;

struct Matrix {
  std::vector<uint8_t> weight, scale;
  Linear lin;
};

// Random codes of `format`, shape [out, in], with scales near 2^-8 (real checkpoints' range).
Matrix make_matrix(WeightFormat format, int64_t out, int64_t in) {
  Matrix m;
  std::mt19937 rng(7);
  const int64_t bytes = format == WeightFormat::kFP4 ? out * in / 2 : format == WeightFormat::kFP8 ? out * in : out * in * 2;
  m.weight.resize(size_t(bytes));
  for (auto& b : m.weight) b = uint8_t(rng());
  if (format == WeightFormat::kFP8) {
    for (auto& b : m.weight)
      if ((b & 0x7f) == 0x7f) b &= 0xfe;  // no NaN codes
    m.scale.assign(size_t(((out + 127) / 128) * ((in + 127) / 128)), uint8_t(119));
  } else if (format == WeightFormat::kFP4) {
    m.scale.assign(size_t(out * in / 32), uint8_t(119));
  } else {
    for (int64_t i = 0; i < out * in; ++i) {  // finite BF16 of moderate size
      const uint16_t v = f32_to_bf16(std::uniform_real_distribution<float>(-1, 1)(rng));
      std::memcpy(m.weight.data() + 2 * i, &v, 2);
    }
  }
  m.lin = Linear{format, out, in, m.weight.data(), m.scale.empty() ? nullptr : m.scale.data()};
  return m;
}

// Activations as the reference numerics feeds FP8/FP4 linears: FP8-simulated (BF16-exact).
std::vector<float> make_x(int64_t rows, int64_t in, bool bf16_exact) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(size_t(rows * in));
  for (auto& v : x) v = nd(rng);
  if (bf16_exact) kernels::fp8_simulate(x.data(), rows * in, 128);
  return x;
}

const char* format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kFP8: return "fp8";
    case WeightFormat::kFP4: return "fp4";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kF32: return "f32";
  }
  return "?";
}

// The matrix of each format, built on first use: ≥ 64 MB of stored weights so decode reads come
// from DRAM — FP8 [16384, 4096] (an attention projection's width), FP4 [32768, 4096] (16 routed
// experts' w1), BF16 [8192, 4096] (head-like) — or, `cached`, a 256-row twin (≤ 2 MB) that stays
// in cache: the kernels' compute speed without DRAM.
const Matrix& matrix(WeightFormat f, bool cached) {
  static std::map<std::pair<WeightFormat, bool>, Matrix> made;
  auto it = made.find({f, cached});
  if (it == made.end()) {
    const int64_t rows = cached ? 256 : f == WeightFormat::kFP8 ? 16384 : f == WeightFormat::kFP4 ? 32768 : 8192;
    it = made.emplace(std::make_pair(f, cached), make_matrix(f, rows, 4096)).first;  // moves keep data pointers
  }
  return it->second;
}

void BM_Linear(benchmark::State& state, WeightFormat format, kernels::Isa isa, bool cached) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  const int64_t rows = state.range(0);
  const Matrix& m = matrix(format, cached);
  const std::vector<float> x = make_x(rows, m.lin.in, format != WeightFormat::kBF16);
  std::vector<float> y(size_t(rows * m.lin.out));
  ThreadPool* pool = ThreadPool::shared();
  for (auto _ : state) {
    kernels::linear(m.lin, x.data(), rows, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  const double stored = double(m.weight.size() + m.scale.size());
  // Decimal GB/s of stored weight bytes, comparable with ReadBandwidth's GBps.
  state.counters["GBps"] = benchmark::Counter(stored * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * double(rows * m.lin.out * m.lin.in) * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
  state.counters["threads"] = pool->size();
}

// One group of V4-Flash's wo_a: FP8 [1024, 4096] that the reference dequantizes (Linear::
// dequantized), with x as attention outputs come (F32, not BF16-exact) or BF16-exact.
void BM_LinearWoA(benchmark::State& state, bool bf16_x) {
  static const Matrix m = [] {
    Matrix w = make_matrix(WeightFormat::kFP8, 1024, 4096);
    w.lin.dequantized = true;
    return w;
  }();
  const int64_t rows = state.range(0);
  std::vector<float> x = make_x(rows, m.lin.in, false);
  if (bf16_x)
    for (float& v : x) v = round_bf16(v);
  std::vector<float> y(size_t(rows * m.lin.out));
  ThreadPool* pool = ThreadPool::shared();
  for (auto _ : state) {
    kernels::linear(m.lin, x.data(), rows, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * double(rows * m.lin.out * m.lin.in) * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}

// The FP4 matrix as 16 expert-sized calls of 2048 rows (a decoded token's routed experts): the
// same bytes as Linear/fp4, so the difference is what each call's start and join cost.
// The FP4 matrix in 16-row tiles (kernels::tile_fp4), as loading puts routed experts.
const Matrix& tiled_fp4() {
  static Matrix t = [] {
    const Matrix& m = matrix(WeightFormat::kFP4, false);
    Matrix c;
    c.weight = m.weight, c.scale = m.scale;
    c.lin = m.lin;
    c.lin.weight = c.weight.data(), c.lin.scale = c.scale.data();
    kernels::tile_fp4(c.weight.data(), c.scale.data(), c.lin.out, c.lin.in);
    c.lin.tiled = true;
    return c;
  }();
  return t;
}

// The 256-row cached FP4 twin in 16-row tiles: the expert kernel's compute speed without DRAM.
const Matrix& tiled_fp4_cached() {
  static Matrix t = [] {
    Matrix c = make_matrix(WeightFormat::kFP4, 256, 4096);
    kernels::tile_fp4(c.weight.data(), c.scale.data(), c.lin.out, c.lin.in);
    c.lin.tiled = true;
    return c;
  }();
  return t;
}

void BM_LinearTiledCached(benchmark::State& state, kernels::Isa isa) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  const Matrix& m = tiled_fp4_cached();
  const int64_t rows = state.range(0);
  const std::vector<float> x = make_x(rows, m.lin.in, true);
  std::vector<float> y(size_t(rows * m.lin.out));
  ThreadPool* pool = ThreadPool::shared();
  for (auto _ : state) {
    kernels::linear(m.lin, x.data(), rows, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GBps"] = benchmark::Counter(double(m.weight.size() + m.scale.size()) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["threads"] = pool->size();
}

void BM_LinearExperts(benchmark::State& state, kernels::Isa isa, bool tiled) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  const int64_t rows = state.range(0), expert_rows = 2048;
  const Matrix& m = tiled ? tiled_fp4() : matrix(WeightFormat::kFP4, false);
  const std::vector<float> x = make_x(rows, m.lin.in, true);
  std::vector<float> y(size_t(rows * expert_rows));
  ThreadPool* pool = ThreadPool::shared();
  for (auto _ : state) {
    for (int64_t r0 = 0; r0 < m.lin.out; r0 += expert_rows) {
      kernels::linear_rows(m.lin, r0, expert_rows, x.data(), rows, y.data(), pool);
      benchmark::DoNotOptimize(y.data());
    }
  }
  const double stored = double(m.weight.size() + m.scale.size());
  state.counters["GBps"] = benchmark::Counter(stored * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * double(rows * m.lin.out * m.lin.in) * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
  state.counters["calls"] = double(m.lin.out / expert_rows);
}

// kernels::tile_fp4 in place on one thread (as the expert cache's finishers run it), GB/s of
// weights and scales rearranged: 256 rows × 4096 (544 KB, in L2), an expert's w1 (2048 rows,
// 4.25 MB, in L3), and 16 of them (68 MB: from DRAM, as an expert that has just been read is).
void BM_TileFp4(benchmark::State& state, kernels::Isa isa) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  Matrix m = make_matrix(WeightFormat::kFP4, state.range(0), 4096);
  for (auto _ : state) {
    kernels::tile_fp4(m.weight.data(), m.scale.data(), m.lin.out, m.lin.in);  // each pass re-tiles the last
    benchmark::DoNotOptimize(m.weight.data());
  }
  state.counters["GBps"] = benchmark::Counter(double(m.weight.size() + m.scale.size()) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void BM_SparseAttention(benchmark::State& state, kernels::Isa isa) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  const int heads = 64;
  const int64_t dim = 512, n_kv = state.range(0);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> q(size_t(heads) * size_t(dim)), kv(size_t(n_kv) * size_t(dim)), sink(static_cast<size_t>(heads)),
      out(size_t(heads) * size_t(dim)), scratch(size_t(n_kv) * size_t(heads));
  for (auto& v : q) v = nd(rng);
  for (auto& v : kv) v = nd(rng);
  for (auto& v : sink) v = nd(rng);
  std::vector<const float*> rows(static_cast<size_t>(n_kv));
  for (int64_t i = 0; i < n_kv; ++i) rows[size_t(i)] = kv.data() + i * dim;
  kernels::SparseAttentionArgs a{q.data(), rows.data(), n_kv, sink.data(), heads, dim, 1.0f / std::sqrt(float(dim)),
                                 out.data(), scratch.data()};
  for (auto _ : state) {
    kernels::sparse_attention(a);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOPs"] =
      benchmark::Counter(4.0 * double(heads * n_kv * dim) * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// The indexer's scoring of FP4 keys by one decode row (64 heads × 128 dims, one thread): from the
// codes in exact integers (VNNI / the scalar twin), or the F32 path it replaces — decode each key
// row, then 64 F32 dots. Counter MACs: multiply-adds per second (heads·dim per key).
void BM_IndexScore(benchmark::State& state, kernels::Isa isa, bool integer) {
  if (!kernels::isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  kernels::set_isa(isa);
  const int heads = 64;
  const int64_t dim = 128, n = state.range(0), row_bytes = dim / 2 + dim / 32;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> q(size_t(heads * dim)), row(static_cast<size_t>(dim)), dots(size_t(n * heads));
  for (auto& v : q) v = nd(rng);
  kernels::fp4_simulate(q.data(), heads * dim, 32);
  std::vector<uint8_t> keys(size_t(n * row_bytes)), codes(static_cast<size_t>(dim)), ok(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    for (auto& v : row) v = nd(rng);
    uint8_t* dst = keys.data() + j * row_bytes;
    kernels::fp4_quantize(row.data(), dim, 32, codes.data(), dst + dim / 2);
    for (int64_t k = 0; k < dim; k += 2) dst[k / 2] = uint8_t(codes[size_t(k)] | (codes[size_t(k + 1)] << 4));
  }
  ArenaScope scope;
  kernels::Fp4IndexQuery prepared;
  if (!kernels::fp4_index_prepare(q.data(), heads, dim, &prepared)) {
    state.SkipWithError("query not preparable");
    return;
  }
  for (auto _ : state) {
    if (integer) {
      kernels::fp4_index_dots(prepared, keys.data(), size_t(row_bytes), n, dots.data(), ok.data());
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t* src = keys.data() + j * row_bytes;
        for (int64_t k = 0; k < dim; ++k) row[size_t(k)] = fp4_packed_at(src, size_t(k)) * e8m0_to_f32(src[dim / 2 + k / 32]);
        for (int h = 0; h < heads; ++h) dots[size_t(h * n + j)] = kernels::dot(q.data() + h * dim, row.data(), dim);
      }
    }
    benchmark::DoNotOptimize(dots.data());
  }
  state.counters["GMACs"] =
      benchmark::Counter(double(n * heads * dim) * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["Mkeys_per_s"] = benchmark::Counter(double(n) * double(state.iterations()) / 1e6, benchmark::Counter::kIsRate);
}

// The machine's read bandwidth, measured the way `dsv4 bench` does: the yardstick for the
// 1-row Linear cases' bytes_per_second.
void BM_ReadBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = kernels::measure_read_bandwidth(ThreadPool::shared(), size_t(1) << 30, 3);
  state.counters["GBps"] = gbs;
}

// The BF16 dot-product peak, as `dsv4 bench` measures it: the yardstick for the GFLOPs counters.
void BM_Bf16Peak(benchmark::State& state) {
  double gflops = 0;
  for (auto _ : state) gflops = kernels::measure_dot_peak(ThreadPool::shared(), true);
  state.counters["GFLOPs"] = gflops;
}

void register_all() {
  benchmark::RegisterBenchmark("ReadBandwidth", BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Bf16Peak", BM_Bf16Peak)->Iterations(1)->Unit(benchmark::kMillisecond);
  using kernels::Isa;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kScalar}) {
    const std::string isa_s(kernels::isa_name(isa));
    for (WeightFormat f : {WeightFormat::kFP8, WeightFormat::kFP4, WeightFormat::kBF16}) {
      auto* b = benchmark::RegisterBenchmark(("Linear/" + std::string(format_name(f)) + "/" + isa_s).c_str(),
                                             [f, isa](benchmark::State& s) { BM_Linear(s, f, isa, false); });
      benchmark::RegisterBenchmark(("LinearCached/" + std::string(format_name(f)) + "/" + isa_s).c_str(),
                                   [f, isa](benchmark::State& s) { BM_Linear(s, f, isa, true); })
          ->Arg(1)
          ->Arg(2)
          ->Arg(4)
          ->Arg(8)  // concurrent sequences, verify: the per-row compute cost without DRAM
          ->UseRealTime();
      // Scalar prefill shapes take minutes; its decode shape is the speed-up baseline.
      if (isa == Isa::kScalar) b->Arg(1);
      else b->Arg(1)->Arg(4)->Arg(8)->Arg(16)->Arg(128)->Arg(256)->Arg(512);  // decode, batch / verify, prefill (a chunk: 256)
      b->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    if (isa == Isa::kAvx512)
      for (bool bf16_x : {false, true})
        benchmark::RegisterBenchmark(bf16_x ? "LinearWoA/bf16-x/avx512" : "LinearWoA/f32-x/avx512",
                                     [bf16_x](benchmark::State& s) { BM_LinearWoA(s, bf16_x); })
            ->Arg(1)
            ->Arg(2)
            ->Arg(512)
            ->Arg(1024)  // bf16-x: the hi and lo halves of 512 F32 rows
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    if (isa == Isa::kAvx512)
      benchmark::RegisterBenchmark(("LinearCached/fp4-tiled/" + isa_s).c_str(),
                                   [isa](benchmark::State& s) { BM_LinearTiledCached(s, isa); })
          ->Arg(1)
          ->Arg(2)
          ->Arg(4)
          ->Arg(8)
          ->UseRealTime();
    if (isa != Isa::kScalar)
      for (bool tiled : {false, true})
        benchmark::RegisterBenchmark(("LinearExperts/fp4" + std::string(tiled ? "-tiled/" : "/") + isa_s).c_str(),
                                     [isa, tiled](benchmark::State& s) { BM_LinearExperts(s, isa, tiled); })
            ->Arg(1)
            ->Arg(12)  // a 512-token prefill gives each of 256 experts ~12 rows
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    if (isa != Isa::kAvx2)  // AVX2 tiles with the scalar twin
      benchmark::RegisterBenchmark(("TileFp4/" + isa_s).c_str(), [isa](benchmark::State& s) { BM_TileFp4(s, isa); })
          ->Arg(256)
          ->Arg(2048)
          ->Arg(32768)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    benchmark::RegisterBenchmark(("IndexScore/int/" + isa_s).c_str(),
                                 [isa](benchmark::State& s) { BM_IndexScore(s, isa, true); })
        ->Arg(4096)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("IndexScore/f32/" + isa_s).c_str(),
                                 [isa](benchmark::State& s) { BM_IndexScore(s, isa, false); })
        ->Arg(4096)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("SparseAttention/" + isa_s).c_str(),
                                 [isa](benchmark::State& s) { BM_SparseAttention(s, isa); })
        ->Arg(128)
        ->Arg(640)
        ->Arg(8320)  // a 1M context's ratio-128 layer: 8192 entries + the window
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
