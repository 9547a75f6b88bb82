// GCC 12 warns inside its own AVX-512 headers (their set1/and intrinsics), as in src/kernels.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "model/expert_cache_tile.h"

#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/linear.h"

namespace dsv4 {

namespace {

#pragma GCC push_options
#pragma GCC target("avx512f")

// One row's four bytes (columns 0..7 of a group: low nibble = even column) as tile_fp4 stores
// them: the even columns' nibbles in bits 0..15, the odd columns' in bits 16..31 — per lane.
inline __m512i pack_word(__m512i b) {
  const __m512i lo4 = _mm512_set1_epi32(0x0f0f0f0f), lo8 = _mm512_set1_epi32(0x00ff00ff);
  const __m512i m16 = _mm512_set1_epi32(0xffff);
  auto pack = [&](__m512i v) {  // nibbles at bits 0, 8, 16, 24 → bits 0, 4, 8, 12
    v = _mm512_and_si512(_mm512_or_si512(v, _mm512_srli_epi32(v, 4)), lo8);
    return _mm512_and_si512(_mm512_or_si512(v, _mm512_srli_epi32(v, 8)), m16);
  };
  const __m512i even = pack(_mm512_and_si512(b, lo4));
  const __m512i odd = pack(_mm512_and_si512(_mm512_srli_epi32(b, 4), lo4));
  return _mm512_or_si512(even, _mm512_slli_epi32(odd, 16));
}

// r[i] lane k ↔ r[k] lane i: at each block size h, rows i and i + h swap their off-diagonal
// h-lane blocks (a block transpose, recursively).
inline void transpose16(__m512i r[16]) {
  for (int h = 8; h >= 1; h /= 2) {
    alignas(64) int32_t ia[16], ib[16];
    for (int k = 0; k < 16; ++k) {
      ia[k] = (k & h) ? 16 + k - h : k;
      ib[k] = (k & h) ? 16 + k : k + h;
    }
    const __m512i va = _mm512_load_si512(ia), vb = _mm512_load_si512(ib);
    for (int i = 0; i < 16; ++i) {
      if (i & h) continue;
      const __m512i a = r[i], b = r[i + h];
      r[i] = _mm512_permutex2var_epi32(a, va, b);
      r[i + h] = _mm512_permutex2var_epi32(a, vb, b);
    }
  }
}

// One tile of 16 rows (P bytes each), from the row-major copy t into w.
void tile_weights_avx512(const uint8_t* t, uint8_t* w, int64_t P) {
  for (int64_t j = 0; j < P / 64; ++j) {  // word groups c = 16j .. 16j + 15
    __m512i r[16];
    for (int l = 0; l < 16; ++l) r[l] = pack_word(_mm512_loadu_si512(t + l * P + 64 * j));
    transpose16(r);  // r[k] lane l: row l's word of group 16j + k
    for (int k = 0; k < 16; ++k) _mm512_storeu_si512(w + (16 * j + k) * 64, r[k]);
  }
}

#pragma GCC pop_options

bool avx512_here() {
  static const bool on = __builtin_cpu_supports("avx512f");
  return on;
}

}  // namespace

void tile_fp4_streamed(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in) {
  const int64_t P = in / 2, B = in / 32;  // bytes of a row: weights, scales
  if (!avx512_here() || P % 64 != 0 || out % 16 != 0) return kernels::tile_fp4(weight, scale, out, in);
  std::vector<uint8_t> t(size_t(16 * P));
  for (int64_t blk = 0; blk < out / 16; ++blk) {
    uint8_t* wt = weight + blk * 16 * P;
    std::memcpy(t.data(), wt, t.size());
    tile_weights_avx512(t.data(), wt, P);
    uint8_t* st = scale + blk * 16 * B;  // scales: per 32-column block, the 16 rows' bytes together
    std::memcpy(t.data(), st, size_t(16 * B));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = 0; l < 16; ++l) st[b * 16 + l] = t[size_t(l * B + b)];
  }
}

}  // namespace dsv4
