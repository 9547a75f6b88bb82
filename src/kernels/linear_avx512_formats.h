// Internal to linear_avx512.cc: how the stored weight formats become BF16 "slots" on AVX-512 —
// the slot order of each format's decoding (and x put in the same order), the FP8/FP4 decoders,
// UE8M0 scales, and FP4 scale folding. Include only from code that runs after the ISA check.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"

namespace dsv4::kernels::detail {

namespace {

constexpr int64_t kGroup = 128;  // columns per group

// f(std::integral_constant<int, n>) for 1 ≤ n ≤ Max (n clamped): a kernel instance per x-row count.
template <int Max, class F>
void with_rows(int n, F&& f) {
  if constexpr (Max > 1) {
    if (n < Max) return with_rows<Max - 1>(n, f);
  }
  f(std::integral_constant<int, Max>{});
}

// The order of x's values within a 128-column group that a weight format's decoding produces
// ("slots"), and what prep_row_x needs to put x in that order with a few permutes per group.
struct SlotOrder {
  int16_t perm[128];  // slot → column
  // BF16 slots: register q's slot j takes the high half of column perm[32q+j], found in the
  // group's high halves (packed in column order into four registers) at idx[q][j] of the pair
  // (0,1), or of the pair (2,3) where bit j of hi[q] is set.
  alignas(64) uint16_t idx[4][32];
  uint32_t hi[4];
  // F32 slots: even then odd BF16 halves of each 32-bit lane of each 32-slot register.
  alignas(64) int32_t f32col[128];
};

// Built in default-target code: nothing here may run before the ISA check.
struct Tables {
  alignas(64) uint8_t fp8_lo[128];  // E4M3 magnitude code → low byte of its BF16
  alignas(64) uint8_t fp8_hi[128];  // → high byte (sign added from the code's bit 7)
  alignas(64) uint8_t fp8x2_lo[128];  // the same for twice the value (fp8_folded_lut)
  alignas(64) uint8_t fp8x2_hi[128];
  alignas(64) uint16_t fp4[32];     // E2M1 code (with sign) → its BF16, twice (index bit 4 ignored)
  SlotOrder order_fp8, order_fp4, order_id;  // per weight format
};

const Tables& tables() {
  static const Tables t = [] {
    Tables t{};
    for (int m = 0; m < 128; ++m) {
      uint16_t b = f32_to_bf16(e4m3_to_f32(uint8_t(m)));
      t.fp8_lo[m] = uint8_t(b & 0xff);
      t.fp8_hi[m] = uint8_t(b >> 8);
      b = f32_to_bf16(2.0f * e4m3_to_f32(uint8_t(m)));
      t.fp8x2_lo[m] = uint8_t(b & 0xff);
      t.fp8x2_hi[m] = uint8_t(b >> 8);
    }
    for (int c = 0; c < 16; ++c) {
      uint16_t b = f32_to_bf16(e2m1_to_f32(uint8_t(c)));
      t.fp4[c] = t.fp4[c + 16] = b;
    }
    for (int q = 0; q < 4; ++q)
      for (int L = 0; L < 4; ++L)
        for (int j = 0; j < 8; ++j) {
          const int s = 32 * q + 8 * L + j;
          // FP8: registers [lo(bytes 0-63), hi(0-63), lo(64-127), hi(64-127)] of unpack{lo,hi}_epi8.
          t.order_fp8.perm[s] = int16_t(64 * (q >> 1) + 16 * L + 8 * (q & 1) + j);
          // FP4: register q holds nibble q of each 16-bit word m of the group's 64 bytes, i.e.
          // column 4m + q; lane L (words 8L..8L+7) holds columns 32L..32L+31.
          t.order_fp4.perm[s] = int16_t(4 * (8 * L + j) + q);
          t.order_id.perm[s] = int16_t(s);
        }
    for (SlotOrder* o : {&t.order_fp8, &t.order_fp4, &t.order_id})
      for (int q = 0; q < 4; ++q) {
        o->hi[q] = 0;
        for (int j = 0; j < 32; ++j) {
          const int col = o->perm[32 * q + j];
          o->idx[q][j] = uint16_t(col & 63);
          if (col >= 64) o->hi[q] |= 1u << j;
          o->f32col[32 * q + j] = o->perm[32 * q + (j < 16 ? 2 * j : 2 * (j - 16) + 1)];
        }
      }
    return t;
  }();
  return t;
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

// x row → BF16 slots (when exact) or F32 slots. Returns whether the row is exactly BF16.
inline bool prep_row_x(const float* x, int64_t K, const SlotOrder& o, bool try_bf16, uint16_t* xb, float* xf) {
  bool exact = try_bf16;
  if (exact) {
    __m512i bad = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 16)
      bad = _mm512_or_si512(bad, _mm512_and_si512(_mm512_loadu_si512(x + k), _mm512_set1_epi32(0xffff)));
    exact = _mm512_test_epi32_mask(bad, bad) == 0;
  }
  __m512i odd = _mm512_setzero_si512();  // 16-bit index 2j+1: the high half of value j of a pair of registers
  {
    alignas(64) uint16_t v[32];
    for (int j = 0; j < 32; ++j) v[j] = uint16_t(2 * j + 1);
    odd = _mm512_load_si512(v);
  }
  for (int64_t g = 0; g < K; g += kGroup) {
    const float* xg = x + g;
    if (exact) {
      __m512i half[4];  // high halves of the group's columns, in column order
      for (int c = 0; c < 4; ++c)
        half[c] = _mm512_permutex2var_epi16(_mm512_loadu_si512(xg + 32 * c), odd, _mm512_loadu_si512(xg + 32 * c + 16));
      for (int q = 0; q < 4; ++q) {
        const __m512i idx = _mm512_load_si512(o.idx[q]);
        const __m512i lo = _mm512_permutex2var_epi16(half[0], idx, half[1]);
        const __m512i hi = _mm512_permutex2var_epi16(half[2], idx, half[3]);
        _mm512_storeu_si512(xb + g + 32 * q, _mm512_mask_blend_epi16(o.hi[q], lo, hi));
      }
    } else {
      for (int s = 0; s < kGroup; ++s) xf[g + s] = xg[o.f32col[s]];  // (gathers were slower here)
    }
  }
  return exact;
}

// The smallest and largest F32 exponent field among a row's nonzero values (255, 0 when none).
inline void exponent_range(const float* x, int64_t K, uint8_t* lo, uint8_t* hi) {
  __m512i mn = _mm512_set1_epi32(255), mx = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; k += 16) {
    const __m512i v = _mm512_loadu_si512(x + k);
    const __mmask16 nz = _mm512_test_epi32_mask(v, _mm512_set1_epi32(0x7fffffff));
    const __m512i e = _mm512_srli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x7f800000)), 23);
    mn = _mm512_mask_min_epu32(mn, nz, mn, e);
    mx = _mm512_mask_max_epu32(mx, nz, mx, e);
  }
  *lo = uint8_t(_mm512_reduce_min_epu32(mn));
  *hi = uint8_t(_mm512_reduce_max_epu32(mx));
}

// The plain E4M3 → BF16 decode table (decode_fp8_group's lut).
inline void fp8_lut(const Tables& t, __m512i lut[4]) {
  lut[0] = _mm512_load_si512(t.fp8_lo), lut[1] = _mm512_load_si512(t.fp8_lo + 64);
  lut[2] = _mm512_load_si512(t.fp8_hi), lut[3] = _mm512_load_si512(t.fp8_hi + 64);
}

// acc + w · (x[0], x[1]) broadcast to every lane, the pair read straight from memory: GCC 12
// does not fold a broadcast into vdpbf16ps, and a separate broadcast per product halved the rate.
inline __m512 dp_pair(__m512 acc, __m512i w, const uint32_t* x) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(x)));
  return acc;
}

// 64 E4M3 bytes as 2 registers of 32 BF16 slots (half of a group: slot registers 2h, 2h + 1).
inline void decode_fp8_half(const uint8_t* p, const __m512i lut[4], __m512i w[2]) {
  const __m512i sign = _mm512_set1_epi8(char(0x80));
  const __m512i v = _mm512_loadu_si512(p);
  const __m512i lo = _mm512_permutex2var_epi8(lut[0], v, lut[1]);
  __m512i hi = _mm512_permutex2var_epi8(lut[2], v, lut[3]);
  hi = _mm512_ternarylogic_epi32(hi, v, sign, 0xF8);  // hi | (v & 0x80)
  w[0] = _mm512_unpacklo_epi8(lo, hi);
  w[1] = _mm512_unpackhi_epi8(lo, hi);
}
// One 128-column group of one weight row as 4 registers of 32 BF16 slots.
inline void decode_fp8_group(const uint8_t* p, const __m512i lut[4], __m512i w[4]) {
  decode_fp8_half(p, lut, w);
  decode_fp8_half(p + 64, lut, w + 2);
}

// Each 16-bit word of the 64 bytes holds 4 codes; vpermw looks up the word's low 5 bits in a
// 32-entry table that repeats the 16 codes, so only the low nibble selects.
inline void decode_fp4_group(const uint8_t* p, const __m512i lut[1], __m512i w[4]) {
  const __m512i v = _mm512_loadu_si512(p);
  w[0] = _mm512_permutexvar_epi16(v, lut[0]);
  w[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), lut[0]);
  w[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 8), lut[0]);
  w[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 12), lut[0]);
}

// UE8M0 bytes (in 32-bit lanes) → their F32 values (core/dtype.h e8m0_to_f32, vectorized).
inline __m512 e8m0_lanes(__m512i b) {
  __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(b, 23));
  f = _mm512_mask_mov_ps(f, _mm512_cmpeq_epi32_mask(b, _mm512_setzero_si512()),
                         _mm512_castsi512_ps(_mm512_set1_epi32(0x00400000)));
  return _mm512_mask_mov_ps(f, _mm512_cmpeq_epi32_mask(b, _mm512_set1_epi32(255)),
                            _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}

// FP4: the four scales of a group's 32-column blocks, block L on 128-bit lane L (the slot order
// puts columns 32L..32L+31 there). Exact for every byte, including 0 (2^-127) and 255 (NaN).
inline __m512 fp4_lane_scales(const uint8_t* s) {
  uint32_t word;
  std::memcpy(&word, s, 4);
  const __m512i sh = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
  return e8m0_lanes(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(word)), sh), _mm512_set1_epi32(0xff)));
}

// The same in 3 instructions for bytes 1..254 (byte → bits 24..31 of its lane, then >> 1).
inline __m512 fp4_lane_scales_fast(const uint8_t* s) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1 << 24, 1 << 24, 1 << 24, 1 << 24, 2 << 24, 2 << 24, 2 << 24,
                                        2 << 24, 3 << 24, 3 << 24, 3 << 24, 3 << 24);
  int32_t word;
  std::memcpy(&word, s, 4);
  const __m512i b = _mm512_maskz_permutexvar_epi8(0x8888888888888888ull, idx, _mm512_set1_epi32(word));
  return _mm512_castsi512_ps(_mm512_srli_epi32(b, 1));
}

// The smallest and largest of n UE8M0 scale bytes: one pass decides both fp4_lane_scales_fast
// (bytes 1..254) and foldable.
struct ScaleRange {
  int lo = 255, hi = 0;
  bool plain() const { return lo >= 1 && hi <= 254; }  // fp4_lane_scales_fast applies
};
inline ScaleRange scale_range(const uint8_t* s, int64_t n) {
  ScaleRange r;
  int64_t i = 0;
  if (n >= 64) {
    __m512i mn = _mm512_set1_epi8(char(255)), mx = _mm512_setzero_si512();
    for (; i + 64 <= n; i += 64) {
      const __m512i v = _mm512_loadu_si512(s + i);
      mn = _mm512_min_epu8(mn, v), mx = _mm512_max_epu8(mx, v);
    }
    alignas(64) uint8_t lo[64], hi[64];
    _mm512_store_si512(lo, mn), _mm512_store_si512(hi, mx);
    for (int k = 0; k < 64; ++k) r.lo = std::min<int>(r.lo, lo[k]), r.hi = std::max<int>(r.hi, hi[k]);
  }
  for (; i < n; ++i) r.lo = std::min<int>(r.lo, s[i]), r.hi = std::max<int>(r.hi, s[i]);
  return r;
}

// FP4 scale folding (many x rows). A block's E2M1 values times its scale 2^(b−127) are exact
// BF16 normals for b in 2..252, so the weights can carry the scale and the per-group step
// becomes an addition instead of a multiply-add on the dot-product pipe. Same bits as kLane:
// scaling by a power of two commutes with rounding, products and sums included, as long as no
// nonzero intermediate of either computation is subnormal (the dot product flushes those) or
// overflows. Every product is a multiple of unit(x)·0.5·s — unit(x) = 2^(e−150) for the smallest
// exponent field e among x's nonzero values, F32 or not — and so is every rounded partial sum,
// so nothing nonzero falls under 2^-126 when e_min − 151 + (b_min − 127) ≥ −126; sums stay far
// from overflow when |x|·6·s·K < 2^120. Real checkpoints and activations satisfy this by tens
// of binades; other calls keep the multiply.
inline bool foldable(ScaleRange b, int64_t K, uint8_t x_exp_min, uint8_t x_exp_max) {
  if (x_exp_min == 255) return false;  // no nonzero x (nothing to gain, nothing to prove)
  if (K > (int64_t(1) << 16)) return false;  // the overflow bound below assumes K ≤ 2^16
  if (b.lo < 2 || b.hi > 252) return false;
  const int e_min = x_exp_min, e_max = x_exp_max;
  // unfolded path too: products of x and the bare E2M1 values stay normal and finite
  return e_min - 151 + (b.lo - 127) >= -126 && e_min - 151 >= -126 &&
         (e_max - 126) + 3 + std::max(b.hi - 127, 0) + 16 < 120;  // K < 2^16
}

// FP8 scale folding (Linear::dequantized: wo_a). E4M3 magnitudes span 2^-9 … 448, so times a
// scale 2^(b−127) they are exact BF16 normals for b in 10..246, and the decode table itself can
// carry the scale: a BF16 exponent field is the high byte's low 7 bits plus the low byte's top
// bit, so an even shift 2h adds h to the high-byte table, and an odd one does the same to a
// table of twice the values. Entries 0 (zero) and 127 (NaN) stay as they are.
inline bool fp8_foldable(ScaleRange b) { return b.lo >= 10 && b.hi <= 246; }

inline void fp8_folded_lut(const Tables& t, uint8_t b, __m512i lut[4]) {
  const int d = int(b) - 127, odd = d & 1;
  const uint8_t* lo = odd ? t.fp8x2_lo : t.fp8_lo;
  const uint8_t* hi = odd ? t.fp8x2_hi : t.fp8_hi;
  const __m512i h = _mm512_set1_epi8(char((d - odd) / 2));
  lut[0] = _mm512_load_si512(lo), lut[1] = _mm512_load_si512(lo + 64);
  const __m512i h0 = _mm512_load_si512(hi), h1 = _mm512_load_si512(hi + 64);
  lut[2] = _mm512_mask_add_epi8(h0, ~uint64_t(1), h0, h);
  lut[3] = _mm512_mask_add_epi8(h1, ~(uint64_t(1) << 63), h1, h);
}

// fp8_folded_lut for the last scale byte asked, rebuilt only when the byte changes (the rows of
// one 128-row block share it).
struct FoldedFp8Lut {
  int byte = -1;
  __m512i lut[4];
  const __m512i* get(const Tables& t, uint8_t b) {
    if (b != byte) byte = b, fp8_folded_lut(t, b, lut);
    return lut;
  }
};

// The four scale bytes of a group as BF16 exponent increments, (b − 127) << 7 on every 16-bit
// word of 128-bit lane L (where the slot order puts block L).
inline __m512i fp4_fold_addend(const uint8_t* s) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0x10001, 0x10001, 0x10001, 0x10001, 0x20002, 0x20002, 0x20002,
                                        0x20002, 0x30003, 0x30003, 0x30003, 0x30003);  // byte L → low bytes of lane L
  int32_t word;
  std::memcpy(&word, s, 4);
  const __m512i b = _mm512_maskz_permutexvar_epi8(0x5555555555555555ull, idx, _mm512_set1_epi32(word));
  return _mm512_slli_epi16(_mm512_sub_epi16(b, _mm512_set1_epi16(127)), 7);
}

// w·s on the BF16 slots of one group (zeros, ±0, stay as they are).
inline void fold_fp4_group(__m512i w[4], __m512i addend) {
  for (int q = 0; q < 4; ++q)
    w[q] = _mm512_mask_add_epi16(w[q], _mm512_test_epi16_mask(w[q], _mm512_set1_epi16(0x7fff)), w[q], addend);
}

}  // namespace

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
