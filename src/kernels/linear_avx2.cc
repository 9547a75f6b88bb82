// AVX2 + FMA linear kernels (no BF16 dot products on this target: everything in F32). FP8 has
// its own path in the scalar twin's exact order (run_range_fp8).
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

// Eight E4M3 codes → their exact F32 values.
inline __m256 decode_e4m3x8(const uint8_t* p) {
  const __m256i m7f = _mm256_set1_epi32(0x7f), m80 = _mm256_set1_epi32(0x80);
  const __m256 k2p120 = _mm256_castsi256_ps(_mm256_set1_epi32((127 + 120) << 23));
  const __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i mag = _mm256_and_si256(v, m7f);
  __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(mag, 20)), k2p120);
  f = _mm256_blendv_ps(f, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, m7f)));  // 0x7f: NaN
  return _mm256_or_ps(f, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(v, m80), 24)));
}

// Row n of W as F32 [K] (unscaled for FP8/FP4) into wf.
void decode_row(const Linear& w, int64_t n, float* wf) {
  const int64_t K = w.in;
  switch (w.format) {
    case WeightFormat::kFP8: {
      const uint8_t* p = w.weight + n * K;
      for (int64_t k = 0; k < K; k += 8) _mm256_storeu_ps(wf + k, decode_e4m3x8(p + k));
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

// ---- FP8: the scalar twin's order, eight weight rows per vector ----------------------------
// kernels/reference/linear_ref.cc sums each 128-column block of a row in column order (multiply,
// then add: it is built without FMA contraction), multiplies the block sum by the block scale
// and adds it to the row's sum. Here each lane is one weight row doing exactly that, so every
// result is bit-identical to the twin — which is what the forced-scalar golden runs validate;
// an 8-lane order over columns flipped an FP8 rounding tie against the official outputs.
constexpr int kFp8Rows = 16;  // two vectors of 8 rows: two independent add chains per x row

// 8×8 transpose: rows r[0..7] (8 columns each) → columns.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20), r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
}

// Output rows [b, e) (relative to row0) for every x row; acc: [rows, kFp8Rows] row sums.
void run_range_fp8(const Call& c, int64_t b, int64_t e, float* acc) {
  const Linear& w = *c.w;
  const int64_t K = c.K, kblocks = K / 128;
  alignas(32) float wt[128 * kFp8Rows];  // one block's weights, transposed
  for (int64_t n = b; n < e; n += kFp8Rows) {
    const int nr = int(std::min<int64_t>(kFp8Rows, e - n));
    const uint8_t* row[kFp8Rows];
    for (int i = 0; i < kFp8Rows; ++i) row[i] = w.weight + (c.row0 + n + std::min(i, nr - 1)) * K;  // padding repeats a row
    std::fill(acc, acc + c.rows * kFp8Rows, 0.0f);
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      // The block's weights, transposed: wt[k][i] = W[row i][kb·128 + k].
      for (int g = 0; g < kFp8Rows / 8; ++g)
        for (int k0 = 0; k0 < 128; k0 += 8) {
          __m256 r[8];
          for (int i = 0; i < 8; ++i) r[i] = decode_e4m3x8(row[8 * g + i] + kb * 128 + k0);
          transpose8(r);
          for (int j = 0; j < 8; ++j) _mm256_store_ps(wt + (k0 + j) * kFp8Rows + 8 * g, r[j]);
        }
      alignas(32) float sc[kFp8Rows];
      for (int i = 0; i < kFp8Rows; ++i)
        sc[i] = e8m0_to_f32(w.scale[((c.row0 + n + std::min(i, nr - 1)) / 128) * kblocks + kb]);
      const __m256 s0 = _mm256_load_ps(sc), s1 = _mm256_load_ps(sc + 8);
      for (int64_t r = 0; r < c.rows; ++r) {
        const float* x = c.x + r * K + kb * 128;
        __m256 p0 = _mm256_setzero_ps(), p1 = _mm256_setzero_ps();
        for (int k = 0; k < 128; ++k) {
          const __m256 xk = _mm256_broadcast_ss(x + k);
          p0 = _mm256_add_ps(p0, _mm256_mul_ps(_mm256_load_ps(wt + k * kFp8Rows), xk));
          p1 = _mm256_add_ps(p1, _mm256_mul_ps(_mm256_load_ps(wt + k * kFp8Rows + 8), xk));
        }
        float* a = acc + r * kFp8Rows;
        _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), _mm256_mul_ps(p0, s0)));
        _mm256_storeu_ps(a + 8, _mm256_add_ps(_mm256_loadu_ps(a + 8), _mm256_mul_ps(p1, s1)));
      }
    }
    for (int64_t r = 0; r < c.rows; ++r)
      for (int i = 0; i < nr; ++i) c.y[r * c.n_out + n + i] = acc[r * kFp8Rows + i];
  }
}

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
  if (w.in % 128 != 0 || w.tiled) return false;  // tiled FP4: the scalar twin reads it
  Call c{&w, row0, n_out, rows, w.in, x, y};
  if (w.format == WeightFormat::kFP8) {
    parallel_for(pool, n_out, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> acc;  // [rows, kFp8Rows] row sums
      if (acc.size() < size_t(c.rows * kFp8Rows)) acc.resize(size_t(c.rows * kFp8Rows));
      run_range_fp8(c, b, e, acc.data());
    }, kFp8Rows);
    return true;
  }
  parallel_for(pool, n_out, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> wbuf, sbuf;  // [4, K] decoded rows, [4, K/32] block scales
    if (wbuf.size() < size_t(kRowsW * c.K)) wbuf.resize(size_t(kRowsW * c.K));
    if (sbuf.size() < size_t(kRowsW * c.K / 32)) sbuf.resize(size_t(kRowsW * c.K / 32));
    run_range(c, b, e, wbuf.data(), sbuf.data());
  }, 16);
  return true;
}

}  // namespace dsv4::kernels::detail
