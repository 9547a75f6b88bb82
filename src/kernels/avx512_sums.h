// Internal: horizontal sums of AVX-512 registers in one fixed pairing tree, shared by the
// AVX-512 kernels and the bench probes. Include only from files that run these after the ISA
// check (kernels/isa.h); the functions are compiled for AVX-512F whatever the file's target.
#pragma once

#include <immintrin.h>

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f")

// Σ of the 16 lanes: lane j + lane j^8, then j^4, j^2, j^1 (GCC 12's _mm512_reduce_add_ps
// trips -Wuninitialized at -O3, and its order is not ours to fix).
inline float hsum512(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

// The sums of a, b, c, d on lanes 0, 4, 8, 12, each added up in hsum512's pairing tree (so
// every value has the bits a lone hsum512 would give it), in 13 instructions instead of 32.
inline __m512 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
  return _mm512_add_ps(s, _mm512_permute_ps(s, 0xB1));
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
