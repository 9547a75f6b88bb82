// AVX-512 VNNI body of kernels::fp4_index_dots (twin: fp4_index_dots_reference; the integers T
// are the same, so the results are bit-identical).
//
// Keys sixteen at a time, one per int32 lane, so no lane sums need reducing: each key's 64 bytes
// of code pairs split into low and high nibbles (the even and odd elements, the order
// fp4_index_prepare gave the queries); one vpermb per half maps (block shift, code) to
// 2b·2^shift + 96, an unsigned byte in [0, 192]; gathers transpose the 16 keys' bytes so that
// vector g holds bytes 4g … 4g+3 of every key. vpdpbusd multiplies them by a head's signed query
// bytes 4g … 4g+3 (broadcast), four products per lane; 32 of them give 16 keys' sums for a head.
// The +96 offset costs 96·Σq per head, subtracted after.
// GCC 12 reports the intrinsics' undefined mask operand as uninitialized (as in sparse_attention_avx512.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "kernels/fp4_index_isa.h"

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni")

namespace {

constexpr int kOffset = 96;

// (shift, code) → 2·e2m1(code)·2^shift + 96, at index shift·16 + code.
__m512i key_lut() {
  alignas(64) uint8_t t[64];
  for (int s = 0; s < 4; ++s)
    for (int c = 0; c < 16; ++c) t[s * 16 + c] = uint8_t(twice_e2m1(uint8_t(c)) * (1 << s) + kOffset);
  return _mm512_load_si512(t);
}

}  // namespace

bool fp4_index_dots_avx512(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n, float* dots,
                           uint8_t* ok) {
  static const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  if (!vnni || q.heads % 4 != 0 || q.dim != 128) return false;
  const __m512i lut = key_lut(), low4 = _mm512_set1_epi8(0x0f), offset = _mm512_set1_epi8(kOffset);
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  alignas(64) uint8_t u[16][128];    // 16 keys' unsigned bytes, in the queries' element order
  alignas(64) int32_t key_exp[16];   // their smallest block exponents
  __m512i t[32];                     // dword g of each key: lane k = key k's bytes 4g … 4g+3
  uint8_t shifts[4];
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int m = int(std::min<int64_t>(16, n - j0));
    for (int k = 0; k < 16; ++k) {
      key_exp[k] = 0;
      if (k >= m || !(ok[j0 + k] = fp4_key_shifts(q, keys + size_t(j0 + k) * row_bytes + 64, &key_exp[k], shifts))) {
        _mm512_store_si512(u[k], offset), _mm512_store_si512(u[k] + 64, offset);  // a zero key
        continue;
      }
      // Low / high nibble i is element 2i / 2i+1, in block i/16: one block per 128-bit lane,
      // whose shift selects the LUT quarter.
      auto quarter = [&](int b) { return int64_t(0x1010101010101010ull * uint64_t(shifts[b])); };
      const __m512i sel = _mm512_set_epi64(quarter(3), quarter(3), quarter(2), quarter(2), quarter(1), quarter(1),
                                           quarter(0), quarter(0));
      const __m512i bytes = _mm512_loadu_si512(keys + size_t(j0 + k) * row_bytes);
      _mm512_store_si512(u[k], _mm512_permutexvar_epi8(_mm512_or_si512(_mm512_and_si512(bytes, low4), sel), lut));
      _mm512_store_si512(u[k] + 64, _mm512_permutexvar_epi8(
                                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4), sel), lut));
    }
    const __m512i rows = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(32));  // dword index of key k's row
    for (int g = 0; g < 32; ++g) t[g] = _mm512_i32gather_epi32(rows, reinterpret_cast<const int*>(u[0]) + g, 4);
    // 2^E per lane's key (E = min_exp_q + min_exp_k − 2, checked normal for ok keys).
    const __m512i kexp = _mm512_add_epi32(_mm512_load_si512(key_exp), _mm512_set1_epi32(127 - 2));
    const __mmask16 live = __mmask16((1u << m) - 1);
    for (int h = 0; h < q.heads; h += 4) {
      const int32_t* qd[4];
      __m512i acc[4];
      for (int i = 0; i < 4; ++i) qd[i] = reinterpret_cast<const int32_t*>(q.q.data() + (h + i) * 128), acc[i] = _mm512_setzero_si512();
      for (int g = 0; g < 32; ++g)
        for (int i = 0; i < 4; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], t[g], _mm512_set1_epi32(qd[i][g]));
      for (int i = 0; i < 4; ++i) {
        const __m512i tt = _mm512_sub_epi32(acc[i], _mm512_set1_epi32(kOffset * q.q_sum[size_t(h + i)]));
        const __m512i e = _mm512_add_epi32(kexp, _mm512_set1_epi32(q.min_exp[size_t(h + i)]));
        const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_max_epi32(e, _mm512_set1_epi32(1)), 23));
        _mm512_mask_storeu_ps(dots + (h + i) * n + j0, live, _mm512_mul_ps(_mm512_cvtepi32_ps(tt), scale));
      }
    }
  }
  return true;
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
