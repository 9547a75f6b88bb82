// AVX-512 body of kernels::tile_fp4 (twin: the scalar loop in linear.cc; the bytes are the same).
//
// Per tile of 16 rows the weights are a transpose of 32-bit words — row ℓ's word c (8 columns)
// goes to word c·16 + ℓ — with the nibbles inside each word reordered (low nibbles of its four
// bytes first, then the high ones). Sixteen rows' 64 bytes are loaded as 16 registers, each
// word's nibbles reordered in place (two vpmaddubsw fold the nibble pairs, one vpshufb orders the
// bytes), and the 16×16 word block transposed with 64 shuffles: 1 KB of output per step,
// written whole. The scales are a 16×B byte transpose, 16 columns at a time with vpermt2b.
// The tile is rearranged in place, so each is first copied to a small buffer of its own.
// GCC 12 reports the intrinsics' undefined operands as uninitialized (as in fp4_index_avx512.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <array>
#include <cstring>
#include <vector>

#include "kernels/avx512_transpose.h"
#include "kernels/fp4_tile_isa.h"

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vbmi")

namespace {

// In every 32-bit word, bytes (lo, hi) × 4 → nibbles lo0 lo1 lo2 lo3 hi0 hi1 hi2 hi3.
__m512i reorder_nibbles(__m512i v) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i pair = _mm512_set1_epi16(0x1001);  // bytes 1, 16: a + 16·b of each byte pair
  const __m512i lo = _mm512_maddubs_epi16(_mm512_and_si512(v, low), pair);
  const __m512i hi = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(v, 4), low), pair);
  const __m512i t = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 8));  // bytes L01 H01 L23 H23
  const __m512i order = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15));
  return _mm512_shuffle_epi8(t, order);  // bytes 0 2 1 3 of each word
}

// One tile's weights: src is a copy of its 16 rows of P bytes, dst the tile. The next tile's
// 16·P bytes (`next`, null for none) are fetched meanwhile, 1 KB a step: an expert just read
// from disk is in DRAM, and copying it would otherwise wait on every line.
void tile_weights(const uint8_t* src, int64_t P, uint8_t* dst, const uint8_t* next) {
  __m512i r[16], o[16];
  for (int64_t at = 0; at < P; at += 64) {
    if (next)
      for (int i = 0; i < 16; ++i) _mm_prefetch(reinterpret_cast<const char*>(next + at * 16 + i * 64), _MM_HINT_T1);
    const int words = int(P - at < 64 ? (P - at) / 4 : 16);  // P is a multiple of 16
    const __mmask16 keep = __mmask16((1u << words) - 1);
    for (int l = 0; l < 16; ++l) r[l] = reorder_nibbles(_mm512_maskz_loadu_epi32(keep, src + l * P + at));
    transpose16x16_epi32(r, o);  // o[c]: word c of rows 0..15
    for (int c = 0; c < words; ++c) _mm512_storeu_si512(dst + (at / 4 + c) * 64, o[c]);
  }
}

// vpermt2b indices. Step 1: byte 8·j + ℓ (ℓ < 8 rows, j < 8 columns from column `first`) of
// two registers holding rows 0..3 and 4..7 (16 columns each, one row per 128-bit lane).
// Step 2: byte 16·j + ℓ (16 rows, 4 columns from `first`) of two step-1 results (rows 0..7, 8..15).
constexpr std::array<uint8_t, 64> gather_rows8(int first) {
  std::array<uint8_t, 64> idx{};
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 8; ++l) idx[size_t(8 * j + l)] = uint8_t((l >= 4 ? 64 : 0) + (l % 4) * 16 + first + j);
  return idx;
}
constexpr std::array<uint8_t, 64> gather_rows16(int first) {
  std::array<uint8_t, 64> idx{};
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 16; ++l) idx[size_t(16 * j + l)] = uint8_t((l >= 8 ? 64 : 0) + (first + j) * 8 + l % 8);
  return idx;
}

__m512i load_idx(const std::array<uint8_t, 64>& idx) { return _mm512_loadu_si512(idx.data()); }

// Rows 4q..4q+3, bytes [b, b + 16) of each, one row per 128-bit lane.
__m512i load_rows4(const uint8_t* src, int64_t B, int q, int64_t b) {
  const uint8_t* p = src + 4 * q * B + b;
  __m512i z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + B)), 1);
  z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * B)), 2);
  return _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3 * B)), 3);
}

// One tile's scales: src is a copy of 16 rows of B bytes; dst[b·16 + ℓ] = src[ℓ·B + b].
void tile_scales(const uint8_t* src, int64_t B, uint8_t* dst) {
  static constexpr std::array<uint8_t, 64> kLo = gather_rows8(0), kHi = gather_rows8(8);
  static constexpr std::array<uint8_t, 64> kOut0 = gather_rows16(0), kOut1 = gather_rows16(4);
  const __m512i lo = load_idx(kLo), hi = load_idx(kHi), out0 = load_idx(kOut0), out1 = load_idx(kOut1);
  int64_t b = 0;
  for (; b + 16 <= B; b += 16) {
    const __m512i z0 = load_rows4(src, B, 0, b), z1 = load_rows4(src, B, 1, b);
    const __m512i z2 = load_rows4(src, B, 2, b), z3 = load_rows4(src, B, 3, b);
    const __m512i u_lo = _mm512_permutex2var_epi8(z0, lo, z1), u_hi = _mm512_permutex2var_epi8(z0, hi, z1);
    const __m512i v_lo = _mm512_permutex2var_epi8(z2, lo, z3), v_hi = _mm512_permutex2var_epi8(z2, hi, z3);
    uint8_t* d = dst + b * 16;
    _mm512_storeu_si512(d, _mm512_permutex2var_epi8(u_lo, out0, v_lo));
    _mm512_storeu_si512(d + 64, _mm512_permutex2var_epi8(u_lo, out1, v_lo));
    _mm512_storeu_si512(d + 128, _mm512_permutex2var_epi8(u_hi, out0, v_hi));
    _mm512_storeu_si512(d + 192, _mm512_permutex2var_epi8(u_hi, out1, v_hi));
  }
  for (; b < B; ++b)
    for (int l = 0; l < 16; ++l) dst[b * 16 + l] = src[l * B + b];
}

}  // namespace

void tile_fp4_avx512(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in) {
  const int64_t P = in / 2, B = in / 32;  // bytes of a row: weights, scales
  thread_local std::vector<uint8_t> copy;  // one tile; the finisher threads reuse theirs
  copy.resize(size_t(16 * P));
  for (int64_t t = 0; t < out / 16; ++t) {
    uint8_t* wt = weight + t * 16 * P;
    std::memcpy(copy.data(), wt, size_t(16 * P));
    tile_weights(copy.data(), P, wt, t + 1 < out / 16 ? wt + 16 * P : nullptr);
    uint8_t* st = scale + t * 16 * B;
    std::memcpy(copy.data(), st, size_t(16 * B));
    tile_scales(copy.data(), B, st);
  }
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
