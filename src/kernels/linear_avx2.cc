// AVX2 + FMA linear kernels (no BF16 dot products on this target: everything in F32).
//
// Weights are decoded 4 rows at a time (interleaved read streams) into F32 per-thread scratch
// in natural column order: E4M3 by the exponent-rebias trick — bitcast((b & 0x7f) << 20)·2^120
// is exact for normals and subnormals — and E2M1 as 2·value small integers via a byte shuffle,
// halved exactly. Per 32-column block a partial sum starts at zero and is multiplied by the
// block's power-of-two scale into the accumulator (see tile()). Each (x row, weight row) pair sees the same sequence of
// operations whatever the number of rows, so results are batch invariant.
// GCC 12 reports its own AVX-512 intrinsics' deliberately undefined pass-through operands as
// uninitialized when they are inlined into target("...") functions at -O3 (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

namespace {
constexpr int kRowsW = 4;
constexpr int64_t kRowsX = 64;
}  // namespace

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")

namespace {

// Row n of W as F32 [K] (unscaled for FP8/FP4) into wf.
void decode_row(const Linear& w, int64_t n, float* wf) {
  const int64_t K = w.in;
  switch (w.format) {
    case WeightFormat::kFP8: {
      const uint8_t* p = w.weight + n * K;
      const __m256i m7f = _mm256_set1_epi32(0x7f), m80 = _mm256_set1_epi32(0x80);
      const __m256 k2p120 = _mm256_castsi256_ps(_mm256_set1_epi32((127 + 120) << 23));
      const __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
      for (int64_t k = 0; k < K; k += 8) {
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + k)));
        const __m256i mag = _mm256_and_si256(v, m7f);
        __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(mag, 20)), k2p120);
        f = _mm256_blendv_ps(f, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, m7f)));  // 0x7f: NaN
        f = _mm256_or_ps(f, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(v, m80), 24)));
        _mm256_storeu_ps(wf + k, f);
      }
      break;
    }
    case WeightFormat::kFP4: {
      const uint8_t* p = w.weight + n * (K / 2);
      const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
      const __m128i nib = _mm_set1_epi8(0x0f);
      const __m256 half = _mm256_set1_ps(0.5f);
      for (int64_t k = 0; k < K; k += 32) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k / 2));
        const __m128i ev = _mm_shuffle_epi8(lut, _mm_and_si128(v, nib));
        const __m128i od = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), nib));
        const __m128i a = _mm_unpacklo_epi8(ev, od), b = _mm_unpackhi_epi8(ev, od);  // columns 0-15, 16-31
        const __m128i parts[4] = {a, _mm_srli_si128(a, 8), b, _mm_srli_si128(b, 8)};
        for (int j = 0; j < 4; ++j)
          _mm256_storeu_ps(wf + k + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j])), half));
      }
      break;
    }
    case WeightFormat::kBF16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(w.weight) + n * K;
      for (int64_t k = 0; k < K; k += 8)
        _mm256_storeu_ps(wf + k, _mm256_castsi256_ps(_mm256_slli_epi32(
                                     _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k))), 16)));
      break;
    }
    case WeightFormat::kF32: break;
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One x row against NW weight rows. FP4 (lane_scales): per 32-column block a vector partial,
// scaled into a vector accumulator. Others: per 128-column group a vector partial, summed
// horizontally and added (× the FP8 block scale) to a scalar accumulator, the reference's
// structure — finer orders flipped FP8 rounding ties against the official outputs.
template <int NW>
void tile(const float* const* wf, const float* const* scales, const float* x, int64_t K, float* out, bool lane_scales) {
  __m256 acc[NW];
  float accs[NW];
  for (int i = 0; i < NW; ++i) acc[i] = _mm256_setzero_ps(), accs[i] = 0.0f;
  const int64_t step = lane_scales ? 32 : 128;
  for (int64_t k = 0; k < K; k += step) {
    __m256 part[NW];
    for (int i = 0; i < NW; ++i) part[i] = _mm256_setzero_ps();
    for (int j = 0; j < step; j += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k + j);
      for (int i = 0; i < NW; ++i) part[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wf[i] + k + j), xv, part[i]);
    }
    for (int i = 0; i < NW; ++i) {
      if (lane_scales) {
        acc[i] = _mm256_fmadd_ps(part[i], _mm256_set1_ps(scales[i][k / 32]), acc[i]);
      } else if (scales) {
        accs[i] += hsum(part[i]) * scales[i][k / 32];
      } else {
        accs[i] += hsum(part[i]);
      }
    }
  }
  for (int i = 0; i < NW; ++i) out[i] = lane_scales ? hsum(acc[i]) : accs[i];
}

struct Call {
  const Linear* w;
  int64_t row0, n_out, rows, K;
  const float* x;
  float* y;
};

void run_range(const Call& c, int64_t b, int64_t e, float* wbuf, float* sbuf) {
  const Linear& w = *c.w;
  const int64_t K = c.K, nb = K / 32;
  const bool quant = w.format == WeightFormat::kFP8 || w.format == WeightFormat::kFP4;
  const bool fp4 = w.format == WeightFormat::kFP4;
  float tmp[kRowsW];
  for (int64_t x0 = 0; x0 < c.rows; x0 += kRowsX) {
    const int64_t x1 = std::min(c.rows, x0 + kRowsX);
    for (int64_t n = b; n < e; n += kRowsW) {
      const int nw = int(std::min<int64_t>(kRowsW, e - n));
      const float* wf[kRowsW];
      const float* sc[kRowsW];
      for (int i = 0; i < nw; ++i) {
        const int64_t row = c.row0 + n + i;
        if (w.format == WeightFormat::kF32) {
          wf[i] = reinterpret_cast<const float*>(w.weight) + row * K;
        } else {
          decode_row(w, row, wbuf + i * K);
          wf[i] = wbuf + i * K;
        }
        sc[i] = sbuf + i * nb;
        if (w.format == WeightFormat::kFP8) {
          const uint8_t* s = w.scale + (row / 128) * ((K + 127) / 128);
          for (int64_t j = 0; j < nb; ++j) sbuf[i * nb + j] = e8m0_to_f32(s[j / 4]);
        } else if (w.format == WeightFormat::kFP4) {
          for (int64_t j = 0; j < nb; ++j) sbuf[i * nb + j] = e8m0_to_f32(w.scale[row * nb + j]);
        }
      }
      for (int64_t r = x0; r < x1; ++r) {
        const float* xr = c.x + r * K;
        switch (nw) {
          case 4: tile<4>(wf, quant ? sc : nullptr, xr, K, tmp, fp4); break;
          case 3: tile<3>(wf, quant ? sc : nullptr, xr, K, tmp, fp4); break;
          case 2: tile<2>(wf, quant ? sc : nullptr, xr, K, tmp, fp4); break;
          default: tile<1>(wf, quant ? sc : nullptr, xr, K, tmp, fp4); break;
        }
        for (int i = 0; i < nw; ++i) c.y[r * c.n_out + n + i] = tmp[i];
      }
    }
  }
}

}  // namespace

#pragma GCC pop_options

bool linear_rows_avx2(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                      ThreadPool* pool) {
  if (w.in % 128 != 0) return false;
  // FP8 stays on the scalar reference here: this target's 8-lane F32 order still flipped an FP8
  // rounding tie against the official outputs (golden MTP test, flash-mini); to revisit.
  if (w.format == WeightFormat::kFP8) return false;
  Call c{&w, row0, n_out, rows, w.in, x, y};
  parallel_for(pool, n_out, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> wbuf, sbuf;  // [4, K] decoded rows, [4, K/32] block scales
    if (wbuf.size() < size_t(kRowsW * c.K)) wbuf.resize(size_t(kRowsW * c.K));
    if (sbuf.size() < size_t(kRowsW * c.K / 32)) sbuf.resize(size_t(kRowsW * c.K / 32));
    run_range(c, b, e, wbuf.data(), sbuf.data());
  }, 16);
  return true;
}

}  // namespace dsv4::kernels::detail
