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

// The two stages of a 16-register horizontal sum, split so that a kernel can run the first on
// four registers as soon as they are final and leave only the second for the end. One fixed
// tree: neighbours (j, j^1), then pairs (j^2) inside each 128-bit lane, then 128-bit lanes
// (L, L^1), then halves — so a sum has the same bits whichever slot it came in. The in-lane
// levels come first because on Zen the shuffles that cross 128-bit lanes take the dot-product
// pipe: 3 of the 48 instructions for 16 registers do, against 24 for four reduce4.

// Lane 4L+t of the result: v[t] summed over its 128-bit lane L.
inline __m512 sum_in_lanes4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_ps(c, d, 0x88), _mm512_shuffle_ps(c, d, 0xDD));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x88), _mm512_shuffle_ps(ab, cd, 0xDD));
}

// Lanes of b where mask is set, of a elsewhere, each plus its partner lane (128-bit lanes
// permuted by SWAP) taken from the other register.
template <int SWAP>
inline __m512 fold_lanes(__m512 a, __m512 b, __mmask16 mask) {
  const __m512 other = _mm512_mask_blend_ps(mask, b, a);
  return _mm512_add_ps(_mm512_mask_blend_ps(mask, a, b), _mm512_shuffle_f32x4(other, other, SWAP));
}

// z[m] from sum_in_lanes4 → lane 4m+t: z[m]'s lane t summed over the four 128-bit lanes.
inline __m512 sum_across_lanes4(__m512 z0, __m512 z1, __m512 z2, __m512 z3) {
  return fold_lanes<0x4E>(fold_lanes<0xB1>(z0, z1, 0xF0F0), fold_lanes<0xB1>(z2, z3, 0xF0F0), 0xFF00);
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
