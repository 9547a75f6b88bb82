#include "kernels/quant.h"

// GCC 12 reports its own AVX-512 intrinsics' deliberately undefined pass-through operands as
// uninitialized when they are inlined into target("...") functions at -O3 (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/isa.h"

namespace dsv4::kernels {

namespace {
// Both are F32 constants multiplied (not divisions), as in the official kernels.
constexpr float kInv448 = 1.0f / 448.0f;
constexpr float kInv6 = 1.0f / 6.0f;
const float kFp4AmaxFloor = 6.0f * std::bit_cast<float>(0x00800000u);  // 6·2^-126

float block_amax(const float* x, int block) {
  float m = 0;
  for (int i = 0; i < block; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}
}  // namespace

float fp8_scale_for(float amax) { return pow2_ceil(std::max(amax, 1e-4f) * kInv448); }
float fp4_scale_for(float amax) { return pow2_ceil(std::max(amax, kFp4AmaxFloor) * kInv6); }

namespace {
// The two grids: range, power-of-two scale rule, encoder and decoder.
struct Fp8Grid {
  static constexpr float kMax = kE4m3Max;
  static float scale_for(float amax) { return fp8_scale_for(amax); }
  static uint8_t encode(float v) { return f32_to_e4m3(v); }
  static float decode(uint8_t c) { return e4m3_to_f32(c); }
};
struct Fp4Grid {
  static constexpr float kMax = kE2m1Max;
  static float scale_for(float amax) { return fp4_scale_for(amax); }
  static uint8_t encode(float v) { return f32_to_e2m1(v); }
  static float decode(uint8_t c) { return e2m1_to_f32(c); }
};

// One block of x on grid G: its scale, then each value's code (q = enc(clamp(x/s))).
template <class G>
float quantize_block(const float* xb, int block, uint8_t* codes) {
  const float s = G::scale_for(block_amax(xb, block));
  for (int i = 0; i < block; ++i) codes[i] = G::encode(std::clamp(xb[i] / s, -G::kMax, G::kMax));
  return s;
}

template <class G>
void quantize_blocks(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales) {
  DSV4_CHECK(n % block == 0, "quantize: ", n, " values, not a multiple of the block ", block);
  for (int64_t b = 0; b < n / block; ++b)
    scales[b] = uint8_t(std::bit_cast<uint32_t>(quantize_block<G>(x + b * block, block, codes + b * block)) >> 23);
}

// In place: x ← dec(q)·s (exact in F32).
template <class G>
void simulate_block(float* xb, int block) {
  uint8_t codes[256];
  DSV4_CHECK(block <= 256, "quantization block of ", block);
  const float s = quantize_block<G>(xb, block, codes);
  for (int i = 0; i < block; ++i) xb[i] = G::decode(codes[i]) * s;
}
}  // namespace

void fp8_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales) {
  quantize_blocks<Fp8Grid>(x, n, block, codes, scales);
}

void fp4_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales) {
  quantize_blocks<Fp4Grid>(x, n, block, codes, scales);
}

namespace {
// The same rounding, 16 lanes at a time (every activation of every FP8 linear passes here).
// y = x/s (exact: s is a power of two) clamped to ±448, then onto the E4M3 grid: normals keep
// 3 mantissa bits, rounded to nearest even on the bits below (a carry bumps the exponent, as
// the scalar encoder's ++q does); below 2^-6 the grid is multiples of 2^-9, which vrndscaleps
// rounds to (nearest even). Blocks holding a NaN take the scalar path.
__attribute__((target("avx512f,avx512dq"))) bool fp8_simulate_block_avx512(float* xb, int block) {
  __m512 amax = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int i = 0; i < block; i += 16) {
    const __m512 v = _mm512_loadu_ps(xb + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
  }
  if (nan) return false;
  const float s = fp8_scale_for(_mm512_reduce_max_ps(amax));
  const __m512 vs = _mm512_set1_ps(s), inv = _mm512_set1_ps(1.0f / s), lim = _mm512_set1_ps(kE4m3Max);
  const __m512i low = _mm512_set1_epi32(0x7ffff), one = _mm512_set1_epi32(1), keep = _mm512_set1_epi32(int(0xfff00000u));
  const __m512i min_normal = _mm512_set1_epi32(0x3c800000);  // 2^-6
  for (int i = 0; i < block; i += 16) {
    const __m512 v = _mm512_loadu_ps(xb + i);
    const __m512 y = _mm512_min_ps(_mm512_abs_ps(_mm512_mul_ps(v, inv)), lim);
    const __m512i a = _mm512_castps_si512(y);
    const __m512i rnd = _mm512_add_epi32(low, _mm512_and_si512(_mm512_srli_epi32(a, 20), one));
    __m512i r = _mm512_and_si512(_mm512_add_epi32(a, rnd), keep);
    const __m512 sub = _mm512_roundscale_ps(y, (9 << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epi32_mask(a, min_normal), _mm512_castps_si512(sub));
    const __m512 q = _mm512_castsi512_ps(_mm512_or_si512(r, _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int(0x80000000u)))));
    _mm512_storeu_ps(xb + i, _mm512_mul_ps(q, vs));
  }
  return true;
}
}  // namespace

void fp8_simulate(float* x, int64_t n, int block) {
  DSV4_CHECK(n % block == 0, "fp8_simulate: ", n, " not a multiple of ", block);
  const bool wide = active_isa() == Isa::kAvx512 && block % 16 == 0;
  for (int64_t b = 0; b < n / block; ++b) {
    float* xb = x + b * block;
    if (!wide || !fp8_simulate_block_avx512(xb, block)) simulate_block<Fp8Grid>(xb, block);
  }
}

void fp4_simulate(float* x, int64_t n, int block) {
  DSV4_CHECK(n % block == 0, "fp4_simulate: ", n, " not a multiple of ", block);
  for (int64_t b = 0; b < n / block; ++b) simulate_block<Fp4Grid>(x + b * block, block);
}

}  // namespace dsv4::kernels
