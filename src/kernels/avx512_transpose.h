// Internal: the 16×16 transpose of 32-bit words in 16 AVX-512 registers, shared by the FP8
// many-rows kernel (decoded weights of 16 rows) and the FP4 tiler (16 rows' words). Include only
// from files that run it after the ISA check (kernels/isa.h); compiled for AVX-512F whatever the
// file's target.
#pragma once

#include <immintrin.h>

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f")

// o[j] lane ℓ = r[ℓ] lane j: pairs within 128-bit lanes, then quads, then the 4×4 transpose of
// 128-bit lanes (64 shuffles).
inline void transpose16x16_epi32(const __m512i r[16], __m512i o[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], 128-bit lane L: rows 4i..4i+3 of column 4L + c
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // column 4L + c takes lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    o[c] = _mm512_shuffle_i32x4(v0, v2, 0x88), o[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    o[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88), o[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
