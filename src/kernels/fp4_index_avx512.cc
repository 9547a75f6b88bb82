// AVX-512 VNNI body of kernels::fp4_index_dots (twin: fp4_index_dots_reference; the integers T
// are the same, so the results are bit-identical).
//
// Per key: its 64 bytes of code pairs split into low and high nibbles (the even and odd
// elements, the order fp4_index_prepare gave the queries); one vpermb per half maps
// (block shift, code) to 2b·2^shift + 96, an unsigned byte in [0, 192]. vpdpbusd then multiplies
// those by the heads' signed query bytes, four products per int32 lane; the +96 offset costs
// 96·Σq per head, subtracted after. Sixteen heads' accumulators are reduced together.
// GCC 12 reports the intrinsics' undefined mask operand as uninitialized (as in sparse_attention_avx512.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

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

// Lane i of the result: the sum of all lanes of a[i] (16 vectors in, in order).
__m512i reduce16(__m512i* a) {
  __m512i b[8], c[4];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * i], b[2 * i + 1]), _mm512_unpackhi_epi64(b[2 * i], b[2 * i + 1]));
  // c[i]: heads 4i … 4i+3, one partial sum per 128-bit lane; add the lanes and gather.
  const __m512i e0 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], 0x88), _mm512_shuffle_i32x4(c[0], c[1], 0xdd));
  const __m512i e1 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], 0x88), _mm512_shuffle_i32x4(c[2], c[3], 0xdd));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(e0, e1, 0x88), _mm512_shuffle_i32x4(e0, e1, 0xdd));
}

}  // namespace

bool fp4_index_dots_avx512(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n, float* dots,
                           uint8_t* ok) {
  static const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  if (!vnni || q.heads % 16 != 0 || q.dim % 128 != 0 || q.dim > 1024) return false;
  const int64_t chunks = q.dim / 128;
  const __m512i lut = key_lut(), low4 = _mm512_set1_epi8(0x0f);
  uint8_t shifts[32];
  __m512i kl[8], kh[8];
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = keys + size_t(j) * row_bytes;
    int32_t min_exp = 0;
    ok[j] = fp4_key_shifts(q, row + q.dim / 2, &min_exp, shifts);
    if (!ok[j]) continue;
    for (int64_t c = 0; c < chunks; ++c) {
      // Low / high nibble j of this chunk is element 2j / 2j+1, in block 4c + j/16: one block
      // per 128-bit lane, whose shift selects the LUT quarter.
      auto quarter = [&](int b) { return int64_t(0x1010101010101010ull * uint64_t(shifts[4 * c + b])); };
      const __m512i sel = _mm512_set_epi64(quarter(3), quarter(3), quarter(2), quarter(2), quarter(1), quarter(1),
                                           quarter(0), quarter(0));
      const __m512i bytes = _mm512_loadu_si512(row + c * 64);
      kl[c] = _mm512_permutexvar_epi8(_mm512_or_si512(_mm512_and_si512(bytes, low4), sel), lut);
      kh[c] = _mm512_permutexvar_epi8(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4), sel), lut);
    }
    for (int h0 = 0; h0 < q.heads; h0 += 16) {
      __m512i acc[16];
      for (int h = 0; h < 16; ++h) {
        const int8_t* qh = q.q.data() + (h0 + h) * q.dim;
        acc[h] = _mm512_setzero_si512();
        for (int64_t c = 0; c < chunks; ++c) {
          acc[h] = _mm512_dpbusd_epi32(acc[h], kl[c], _mm512_loadu_si512(qh + c * 128));
          acc[h] = _mm512_dpbusd_epi32(acc[h], kh[c], _mm512_loadu_si512(qh + c * 128 + 64));
        }
      }
      const __m512i qsum = _mm512_loadu_si512(q.q_sum.data() + h0);
      const __m512i t = _mm512_sub_epi32(reduce16(acc), _mm512_mullo_epi32(qsum, _mm512_set1_epi32(kOffset)));
      // 2^E as a float (E in [−126, 100], checked): its exponent field is E + 127.
      const __m512i e = _mm512_add_epi32(_mm512_loadu_si512(q.min_exp.data() + h0), _mm512_set1_epi32(min_exp - 2 + 127));
      const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
      _mm512_storeu_ps(dots + j * q.heads + h0, _mm512_mul_ps(_mm512_cvtepi32_ps(t), scale));
    }
  }
  return true;
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
