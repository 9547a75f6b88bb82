#include "kernels/probe.h"

// GCC 12 reports its own AVX-512 intrinsics' deliberately undefined pass-through operands as
// uninitialized when they are inlined into target("...") functions at -O3 (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/avx512_sums.h"
#include "kernels/isa.h"

namespace dsv4::kernels {

namespace {

using detail::hsum512;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Keeps the compiler from discarding the measured work.
volatile float g_sink;

float read_scalar(const uint8_t* p, size_t n) {
  const size_t q = n / 4 / 64 * 64;
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < q; i += 64) {
    uint64_t v;
    std::memcpy(&v, p + i, 8), a += v;
    std::memcpy(&v, p + q + i, 8), b += v;
    std::memcpy(&v, p + 2 * q + i, 8), c += v;
    std::memcpy(&v, p + 3 * q + i, 8), d += v;
  }
  return float(a + b + c + d);
}

__attribute__((target("avx2"))) float read_avx2(const uint8_t* p, size_t n) {
  const size_t q = n / 4 / 64 * 64;
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i < q; i += 64) {
    a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_load_si256((const __m256i*)(p + i)), _mm256_load_si256((const __m256i*)(p + i + 32))));
    b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_load_si256((const __m256i*)(p + q + i)), _mm256_load_si256((const __m256i*)(p + q + i + 32))));
    c = _mm256_add_epi32(c, _mm256_add_epi32(_mm256_load_si256((const __m256i*)(p + 2 * q + i)), _mm256_load_si256((const __m256i*)(p + 2 * q + i + 32))));
    d = _mm256_add_epi32(d, _mm256_add_epi32(_mm256_load_si256((const __m256i*)(p + 3 * q + i)), _mm256_load_si256((const __m256i*)(p + 3 * q + i + 32))));
  }
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d));
  return float(_mm256_extract_epi32(s, 0));
}

// Eight interleaved streams, each prefetched 2 KB ahead into L2: of the read loops tried on the
// target machine (2–16 streams, no prefetch, T0/T1/T2 hints 1–128 KB ahead) the fastest, up to 18 %
// above 4 plain streams when the host is fast — the bound the kernels are held to must be the
// best this machine reads, not a modest one.
__attribute__((target("avx512f"))) float read_avx512(const uint8_t* p, size_t n) {
  constexpr int kStreams = 8;
  constexpr size_t kAhead = 2048;
  const size_t q = n / kStreams / 64 * 64;
  __m512i a[kStreams];
  for (int s = 0; s < kStreams; ++s) a[s] = _mm512_setzero_si512();
  for (size_t i = 0; i < q; i += 64)
    for (int s = 0; s < kStreams; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(p + s * q + i + kAhead), _MM_HINT_T1);
      a[s] = _mm512_add_epi32(a[s], _mm512_load_si512(p + s * q + i));
    }
  __m512i t = a[0];
  for (int s = 1; s < kStreams; ++s) t = _mm512_add_epi32(t, a[s]);
  return float(_mm512_cvtsi512_si32(t));
}

// Dot-product peak loops. Each runs `kAccs` independent accumulator chains; how many chains
// keep the pipes full depends on the micro-architecture (on the Zen 5 target, 12 vdpbf16ps chains
// measured 606–958 GFLOP/s on 2 threads where 16–24 measured 1,009–1,071), so the peak is the
// best of several loop shapes: a fair maximum, not one shape's figure. Every shape issues about
// kPeakInstructions instructions per thread. The chain loops are unrolled so that the array of
// accumulators lives in registers: GCC otherwise kept it in memory (a load and a store per
// instruction), which held the F32 FMA loop to two thirds of its rate.
constexpr int64_t kPeakInstructions = 240'000'000;

template <int kAccs>
__attribute__((target("avx512f,avx512bf16"))) float peak_bf16_avx512() {
  __m512 acc[kAccs];
#pragma GCC unroll 32
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
  for (int64_t it = 0; it < kPeakInstructions / kAccs; ++it)
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kAccs; ++i) s = _mm512_add_ps(s, acc[i]);
  return hsum512(s);
}

template <int kAccs>
__attribute__((target("avx512f"))) float peak_f32_avx512() {
  __m512 acc[kAccs];
#pragma GCC unroll 32
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakInstructions / kAccs; ++it)
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
  __m512 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kAccs; ++i) s = _mm512_add_ps(s, acc[i]);
  return hsum512(s);
}

template <int kAccs>
__attribute__((target("avx2,fma"))) float peak_f32_avx2() {
  __m256 acc[kAccs];
#pragma GCC unroll 32
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakInstructions / kAccs; ++it)
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
  __m256 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kAccs; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

// The scalar build is compiled for baseline x86-64, whose best F32 arithmetic (what its loops
// are auto-vectorized to) is SSE2 mulps + addps: 4 lanes, 2 FLOP each.
volatile float g_scale = 0.9999999f;

template <int kAccs>
float peak_f32_sse2() {
  __m128 acc[kAccs];
#pragma GCC unroll 32
  for (int i = 0; i < kAccs; ++i) acc[i] = _mm_set1_ps(float(i));
  const __m128 a = _mm_set1_ps(g_scale), b = _mm_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakInstructions / 16 / kAccs; ++it)
#pragma GCC unroll 32
    for (int i = 0; i < kAccs; ++i) acc[i] = _mm_add_ps(_mm_mul_ps(acc[i], a), b);
  __m128 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kAccs; ++i) s = _mm_add_ps(s, acc[i]);
  return _mm_cvtss_f32(s);
}

// One loop shape: its function, FLOP per call, per thread.
struct PeakLoop {
  float (*run)();
  double flop;
};

template <float (*F)(), int kAccs>
constexpr PeakLoop shape(double flop_per_instruction, int64_t instructions = kPeakInstructions) {
  return {F, flop_per_instruction * double(instructions / kAccs * kAccs)};
}

// The loop shapes of the dot-product peak of the active ISA (bf16: the BF16 dot where there is one).
std::vector<PeakLoop> peak_loops(Isa isa, bool bf16) {
  if (isa == Isa::kAvx512 && bf16)  // 16 lanes × 2 products, multiply + add
    return {shape<peak_bf16_avx512<12>, 12>(64), shape<peak_bf16_avx512<16>, 16>(64),
            shape<peak_bf16_avx512<24>, 24>(64)};
  if (isa == Isa::kAvx512)
    return {shape<peak_f32_avx512<12>, 12>(32), shape<peak_f32_avx512<16>, 16>(32), shape<peak_f32_avx512<24>, 24>(32)};
  if (isa == Isa::kAvx2) return {shape<peak_f32_avx2<8>, 8>(16), shape<peak_f32_avx2<12>, 12>(16)};
  // Per mul + add pair: 4 lanes × 2 FLOP.
  return {shape<peak_f32_sse2<8>, 8>(8, kPeakInstructions / 16), shape<peak_f32_sse2<12>, 12>(8, kPeakInstructions / 16)};
}

// GFLOP/s of one loop shape on every pool thread.
double run_peak_loop(ThreadPool* pool, const PeakLoop& loop) {
  const int T = pool ? pool->size() : 1;
  const double t0 = now_s();
  parallel_for(pool, T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) g_sink = loop.run();
  });
  return loop.flop * T / (now_s() - t0) / 1e9;
}

}  // namespace

double measure_read_bandwidth(ThreadPool* pool, size_t bytes, int reps) {
  const int T = pool ? pool->size() : 1;
  const size_t per = bytes / size_t(T) / 256 * 256;  // per-thread slice, whole 64-byte lines per stream
  const size_t total = per * size_t(T);
  void* mem = std::aligned_alloc(2 << 20, (total + (2 << 20) - 1) / (2 << 20) * (2 << 20));
  if (!mem) throw Error("bench: cannot allocate the bandwidth buffer");
  madvise(mem, total, MADV_HUGEPAGE);
  uint8_t* buf = static_cast<uint8_t*>(mem);
  parallel_for(pool, T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) std::memset(buf + size_t(t) * per, int(t + 1), per);
  });
  const Isa isa = active_isa();
  auto pass = [&] {
    parallel_for(pool, T, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const uint8_t* p = buf + size_t(t) * per;
        g_sink = isa == Isa::kAvx512 ? read_avx512(p, per) : isa == Isa::kAvx2 ? read_avx2(p, per) : read_scalar(p, per);
      }
    });
  };
  pass();
  std::vector<double> gbs;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const double t0 = now_s();
    pass();
    gbs.push_back(double(total) / (now_s() - t0) / 1e9);
  }
  std::free(mem);
  std::sort(gbs.begin(), gbs.end());
  return gbs[gbs.size() / 2];
}

double measure_dot_peak(ThreadPool* pool, bool bf16) {
  double best = 0;
  for (const PeakLoop& loop : peak_loops(active_isa(), bf16)) best = std::max(best, run_peak_loop(pool, loop));
  return best;
}

const char* dot_peak_kind(bool bf16) {
  switch (active_isa()) {
    case Isa::kAvx512: return bf16 ? "bf16 dot (vdpbf16ps, AVX512-BF16)" : "f32 fma (AVX-512)";
    case Isa::kAvx2: return "f32 fma (AVX2)";
    case Isa::kScalar: break;
  }
  return "f32 mul+add (SSE2, the scalar build's baseline)";
}

}  // namespace dsv4::kernels
