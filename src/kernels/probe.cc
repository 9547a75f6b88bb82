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

constexpr int64_t kPeakIters = 20'000'000;

__attribute__((target("avx512f,avx512bf16"))) float peak_bf16_avx512() {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
  for (int64_t it = 0; it < kPeakIters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return hsum512(s);
}

__attribute__((target("avx512f"))) float peak_f32_avx512() {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return hsum512(s);
}

__attribute__((target("avx2,fma"))) float peak_f32_avx2() {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

float peak_scalar() {
  float acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = float(i);
  for (int64_t it = 0; it < kPeakIters / 16; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * 1.0f + 1e-7f;
  float s = 0;
  for (float v : acc) s += v;
  return s;
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
  const int T = pool ? pool->size() : 1;
  const Isa isa = active_isa();
  double flops_per_thread = 0;
  auto body = [&] {
    if (isa == Isa::kAvx512 && bf16) {
      g_sink = peak_bf16_avx512();
      return 12.0 * 64 * double(kPeakIters);
    }
    if (isa == Isa::kAvx512) {
      g_sink = peak_f32_avx512();
      return 12.0 * 32 * double(kPeakIters);
    }
    if (isa == Isa::kAvx2) {
      g_sink = peak_f32_avx2();
      return 12.0 * 16 * double(kPeakIters);
    }
    g_sink = peak_scalar();
    return 12.0 * 2 * double(kPeakIters / 16);
  };
  const double t0 = now_s();
  parallel_for(pool, T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const double f = body();
      if (t == 0) flops_per_thread = f;
    }
  });
  return flops_per_thread * T / (now_s() - t0) / 1e9;
}

}  // namespace dsv4::kernels
