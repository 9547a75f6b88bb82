// AVX-512 (+BF16, VBMI) linear kernels.
//
// Weights become BF16 "slots": a fixed order per 128-column group that the decoding shuffles
// produce naturally (x is permuted into the same order once per call). E4M3 and E2M1 values
// are exact in BF16, so:
//  * BF16 path: when an x row is exactly BF16 (reference numerics: FP8 act-quantized input),
//    vdpbf16ps multiplies exactly and accumulates in F32. (E4M3 subnormals are BF16 normals,
//    so its denormals-are-zero rule never bites; products of these values are F32 normals.)
//  * F32 path: other rows (plain numerics, BF16 weights) widen the BF16 slots to F32 and FMA.
// Where the weights come from depends on how many x rows share them: for 1–2 rows (decode) each
// group is decoded in registers as it is used, 8 weight rows interleaved with a software
// prefetch into L2 four tiles ahead (one or two read streams per core do not reach DRAM
// bandwidth; into L1 or two tiles ahead read 30–60 % slower in kernels_bench); for
// more rows each weight row is decoded once per 64-row block of x into per-thread scratch.
// Per group of 128 columns a vector partial sum starts at zero. FP8, BF16, F32: it is summed
// horizontally (reduce4: four rows' sums at once, in one fixed pairing tree), multiplied by the
// block scale (FP8) and accumulated — the reference's two-level structure; keeping lanes apart
// across groups flipped FP8 rounding ties against the official outputs (golden MTP test). FP4
// (one scale per 32 = per 128-bit lane): the partial is multiplied by per-lane scales into a
// vector accumulator, lanes summed last. Every (x row, weight row) pair sees the same operations
// in the same order whatever the tile shape or weight source, so results do not depend on how
// many rows are computed together (tests/kernels/linear_test.cc checks bit equality).
// GCC 12 reports its own AVX-512 intrinsics' deliberately undefined pass-through operands as
// uninitialized when they are inlined into target("...") functions at -O3 (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/avx512_sums.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

namespace {

constexpr int64_t kGroup = 128;  // columns per group
constexpr int kRowsW = 8;        // weight rows read together (interleaved read streams)
constexpr int64_t kRowsX = 64;   // x rows per cache block (x block stays in L2)

// Built in default-target code: nothing here may run before the ISA check.
struct Tables {
  alignas(64) uint8_t fp8_lo[128];  // E4M3 magnitude code → low byte of its BF16
  alignas(64) uint8_t fp8_hi[128];  // → high byte (sign added from the code's bit 7)
  alignas(64) uint16_t fp4[32];     // E2M1 code (with sign) → its BF16, twice (index bit 4 ignored)
  // slot → column within a 128-column group, per weight format; f32 slots: even then odd
  // BF16 halves of each 32-bit lane of each 32-slot register.
  int16_t perm_fp8[128], perm_fp4[128], perm_id[128];
};

const Tables& tables() {
  static const Tables t = [] {
    Tables t{};
    for (int m = 0; m < 128; ++m) {
      uint16_t b = f32_to_bf16(e4m3_to_f32(uint8_t(m)));
      t.fp8_lo[m] = uint8_t(b & 0xff);
      t.fp8_hi[m] = uint8_t(b >> 8);
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
          t.perm_fp8[s] = int16_t(64 * (q >> 1) + 16 * L + 8 * (q & 1) + j);
          // FP4: register q holds nibble q of each 16-bit word m of the group's 64 bytes, i.e.
          // column 4m + q; lane L (words 8L..8L+7) holds columns 32L..32L+31.
          t.perm_fp4[s] = int16_t(4 * (8 * L + j) + q);
          t.perm_id[s] = int16_t(s);
        }
    return t;
  }();
  return t;
}

struct alignas(64) Line {
  uint8_t b[64];
};

// Column of F32 slot s of a group, given the BF16 slot permutation.
inline int f32_slot_col(const int16_t* perm, int s) {
  const int q = s / 32, i = s % 32;
  return perm[32 * q + (i < 16 ? 2 * i : 2 * (i - 16) + 1)];
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

// x row → BF16 slots (when exact) or F32 slots. Returns whether the row is exactly BF16.
bool prep_row_x(const float* x, int64_t K, const int16_t* perm, bool try_bf16, uint16_t* xb, float* xf) {
  bool exact = try_bf16;
  if (exact) {
    __m512i bad = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 16)
      bad = _mm512_or_si512(bad, _mm512_and_si512(_mm512_loadu_si512(x + k), _mm512_set1_epi32(0xffff)));
    exact = _mm512_test_epi32_mask(bad, bad) == 0;
  }
  for (int64_t g = 0; g < K; g += kGroup) {
    const uint32_t* xg = reinterpret_cast<const uint32_t*>(x + g);
    if (exact) {
      for (int s = 0; s < kGroup; ++s) xb[g + s] = uint16_t(xg[perm[s]] >> 16);
    } else {
      for (int s = 0; s < kGroup; ++s) xf[g + s] = x[g + f32_slot_col(perm, s)];
    }
  }
  return exact;
}

// One 128-column group of one weight row as 4 registers of 32 BF16 slots.
inline void decode_fp8_group(const uint8_t* p, const __m512i lut[4], __m512i w[4]) {
  const __m512i sign = _mm512_set1_epi8(char(0x80));
  for (int h = 0; h < 2; ++h) {
    const __m512i v = _mm512_loadu_si512(p + 64 * h);
    const __m512i lo = _mm512_permutex2var_epi8(lut[0], v, lut[1]);
    __m512i hi = _mm512_permutex2var_epi8(lut[2], v, lut[3]);
    hi = _mm512_ternarylogic_epi32(hi, v, sign, 0xF8);  // hi | (v & 0x80)
    w[2 * h] = _mm512_unpacklo_epi8(lo, hi);
    w[2 * h + 1] = _mm512_unpackhi_epi8(lo, hi);
  }
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

// Whether n scale bytes are all in 1..254 (fp4_lane_scales_fast applies).
inline bool plain_scales(const uint8_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(s + i);
    if (_mm512_cmpeq_epi8_mask(v, _mm512_setzero_si512()) | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(char(255))))
      return false;
  }
  for (; i < n; ++i)
    if (s[i] == 0 || s[i] == 255) return false;
  return true;
}

// FP8: the block scale of weight row i of a quad on lanes 4i..4i+3 (where reduce4 leaves row i).
inline __m512 fp8_quad_scales(const uint8_t* const* srow, int64_t g) {
  if (srow[0] == srow[3]) return _mm512_set1_ps(e8m0_to_f32(srow[0][g]));  // one 128-row block (usual)
  const __m512i b = _mm512_setr_epi32(srow[0][g], 0, 0, 0, srow[1][g], 0, 0, 0, srow[2][g], 0, 0, 0, srow[3][g], 0, 0, 0);
  return e8m0_lanes(b);
}

// How one register of 32 x slots meets one register of 32 BF16 weight slots.
// XV: x slots loaded for one step (held in registers across a group's weight rows).
struct Bf16Product {  // x exactly BF16: exact products, F32 accumulation
  using X = uint16_t;
  using XV = __m512i;
  static XV load(const X* x) { return _mm512_loadu_si512(x); }
  static __m512 step(__m512 acc, XV x, __m512i w) { return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)w); }
};
struct F32Product {  // F32 x: widen the weight slots (even halves, then odd halves) and FMA
  using X = float;
  struct XV {
    __m512 even, odd;
  };
  static XV load(const X* x) { return {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)}; }
  static __m512 step(__m512 acc, XV x, __m512i w) {
    const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xffff0000u))));
    acc = _mm512_fmadd_ps(we, x.even, acc);
    return _mm512_fmadd_ps(wo, x.odd, acc);
  }
};

// BF16 | FP8 (per group, after the sum) | FP4 (per lane; kLaneSpecial: some scale byte is 0 or 255)
enum class Scaling { kNone, kBlock, kLane, kLaneSpecial };

// Where a tile's weight registers come from: get(i, g, w) fills the 4 registers of row i, group g.

struct ScratchRows {  // rows decoded once into per-thread scratch (many x rows reuse them)
  const uint16_t* wb[kRowsW];
  const uint8_t* srow[kRowsW];    // FP8 scale rows
  const uint8_t* fp4s[kRowsW];    // FP4 scale rows
  void get(int i, int64_t g, __m512i w[4]) const {
    for (int q = 0; q < 4; ++q) w[q] = _mm512_load_si512(wb[i] + g * kGroup + 32 * q);
  }
};
struct Fp8Rows {  // decoded on the fly (few x rows: the decode is not worth storing)
  const uint8_t* row[kRowsW];
  const uint8_t* srow[kRowsW];
  const __m512i* lut;
  int64_t ahead = 0;  // bytes to the same place four tiles on (software prefetch into L2)
  void get(int i, int64_t g, __m512i w[4]) const {
    const char* p = reinterpret_cast<const char*>(row[i] + g * kGroup + ahead);
    _mm_prefetch(p, _MM_HINT_T1);
    _mm_prefetch(p + 64, _MM_HINT_T1);
    decode_fp8_group(row[i] + g * kGroup, lut, w);
  }
};
struct Fp4Rows {
  const uint8_t* row[kRowsW];
  const uint8_t* fp4s[kRowsW];
  const __m512i* lut;
  int64_t ahead = 0;  // bytes to the same place four tiles on (software prefetch into L2)
  void get(int i, int64_t g, __m512i w[4]) const {
    _mm_prefetch(reinterpret_cast<const char*>(row[i] + g * (kGroup / 2) + ahead), _MM_HINT_T1);
    decode_fp4_group(row[i] + g * (kGroup / 2), lut, w);
  }
};
struct Bf16Rows {  // BF16 weights are already BF16 slots (identity order)
  const uint16_t* row[kRowsW];
  int64_t ahead = 0;  // bytes to the same place four tiles on (software prefetch into L2)
  void get(int i, int64_t g, __m512i w[4]) const {
    const char* p = reinterpret_cast<const char*>(row[i] + g * kGroup) + ahead;
    for (int q = 0; q < 4; ++q) _mm_prefetch(p + 64 * q, _MM_HINT_T1);
    for (int q = 0; q < 4; ++q) w[q] = _mm512_loadu_si512(row[i] + g * kGroup + 32 * q);
  }
};

// out[r][i] for RT x rows and nw ≤ NW weight rows (NW a multiple of 4: one reduce4 per four).
// Per (x row, weight row) the operations and their order are the same whatever RT, NW, nw and
// the weight source: batch invariance. Rows nw..NW-1 are padding (Rows repeats a real row there):
// they are computed and dropped, because a loop that stops at nw keeps the accumulators on the
// stack instead of in registers; for the same reason a tile is not inlined into run_range, whose
// register pressure spilled them too (in-cache decode speed 31–35 → 46–49 GB/s).
template <class P, Scaling S, int RT, int NW, class Rows>
__attribute__((noinline)) void tile(const Rows& rows, int nw, const typename P::X* const* xr, int64_t G, float* const* out) {
  constexpr bool lane = S == Scaling::kLane || S == Scaling::kLaneSpecial;
  constexpr int NA = lane ? NW : NW / 4;  // accumulators per x row
  __m512 acc[RT][NA];
  for (int r = 0; r < RT; ++r)
    for (int a = 0; a < NA; ++a) acc[r][a] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 part[RT][NW];
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < NW; ++i) part[r][i] = _mm512_setzero_ps();
    typename P::XV xv[RT][4];
    for (int r = 0; r < RT; ++r)
      for (int q = 0; q < 4; ++q) xv[r][q] = P::load(xr[r] + g * kGroup + 32 * q);
#pragma GCC unroll 16
    for (int i = 0; i < NW; ++i) {
      __m512i w[4];
      rows.get(i, g, w);
      for (int q = 0; q < 4; ++q)
        for (int r = 0; r < RT; ++r) part[r][i] = P::step(part[r][i], xv[r][q], w[q]);
    }
    if constexpr (lane) {
#pragma GCC unroll 16
      for (int i = 0; i < NW; ++i) {
        const __m512 s = S == Scaling::kLane ? fp4_lane_scales_fast(rows.fp4s[i] + 4 * g)
                                             : fp4_lane_scales(rows.fp4s[i] + 4 * g);
        for (int r = 0; r < RT; ++r) acc[r][i] = _mm512_fmadd_ps(part[r][i], s, acc[r][i]);
      }
    } else {
#pragma GCC unroll 16
      for (int k = 0; k < NW / 4; ++k) {
        __m512 scale = _mm512_setzero_ps();
        if constexpr (S == Scaling::kBlock) scale = fp8_quad_scales(rows.srow + 4 * k, g);
        for (int r = 0; r < RT; ++r) {
          const __m512 red = reduce4(part[r][4 * k], part[r][4 * k + 1], part[r][4 * k + 2], part[r][4 * k + 3]);
          if constexpr (S == Scaling::kBlock) acc[r][k] = _mm512_fmadd_ps(red, scale, acc[r][k]);
          else acc[r][k] = _mm512_add_ps(acc[r][k], red);
        }
      }
    }
  }
  for (int r = 0; r < RT; ++r) {
    if constexpr (lane) {
      for (int i = 0; i < nw; ++i) out[r][i] = hsum512(acc[r][i]);
    } else {
      alignas(64) float lanes[NW * 4];
      for (int k = 0; k < NW / 4; ++k) _mm512_store_ps(lanes + 16 * k, acc[r][k]);
      for (int i = 0; i < nw; ++i) out[r][i] = lanes[4 * i];
    }
  }
}

// F32 weights, natural column order.
void dot_rows_f32w(const float* w, const float* x, int64_t K, float* out) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc);
  *out = hsum512(acc);
}

struct Call {
  const Linear* w;
  int64_t row0, n_out, rows, K, G;
  const float* x;
  float* y;
  const uint8_t* xprep;  // [rows, K·4 bytes]: BF16 or F32 slots
  const uint8_t* exact;  // [rows]
};

// Brings a byte range toward L2 a few lines at a time: spread over the tiles that compute
// meanwhile, the prefetches find free miss buffers (a burst of hundreds would mostly be dropped).
struct Prefetcher {
  const char* p = nullptr;
  int64_t bytes = 0, done = 0;
  void some(int64_t lines) {
    for (; lines > 0 && done < bytes; --lines, done += 64) _mm_prefetch(p + done, _MM_HINT_T1);
  }
  void rest() { some(bytes); }
};

// Runs tile() over the x rows [x0, x1) for one set of weight rows: rows of each path (BF16-exact
// or F32) in tiles of RT, leftovers one at a time (the per-row sequence is the same).
template <Scaling S, int RT, int NW, class Rows>
void tile_over_x(const Call& c, const Rows& rows, int nw, int64_t x0, int64_t x1, int64_t n,
                 Prefetcher* pf = nullptr) {
  for (int pass = 0; pass < 2; ++pass) {
    const bool bf16 = pass == 0;
    int64_t pend[RT];
    int np = 0;
    auto flush = [&](int count) {
      const void* xr[RT];
      float* out[RT];
      for (int k = 0; k < count; ++k) xr[k] = c.xprep + pend[k] * c.K * 4, out[k] = c.y + pend[k] * c.n_out + n;
      if (pf) pf->some(32);
      if (count == RT) {
        if (bf16) tile<Bf16Product, S, RT, NW>(rows, nw, reinterpret_cast<const uint16_t* const*>(xr), c.G, out);
        else tile<F32Product, S, RT, NW>(rows, nw, reinterpret_cast<const float* const*>(xr), c.G, out);
      } else {
        for (int k = 0; k < count; ++k) {
          if (bf16) tile<Bf16Product, S, 1, NW>(rows, nw, reinterpret_cast<const uint16_t* const*>(xr + k), c.G, out + k);
          else tile<F32Product, S, 1, NW>(rows, nw, reinterpret_cast<const float* const*>(xr + k), c.G, out + k);
        }
      }
    };
    for (int64_t r = x0; r < x1; ++r) {
      if (bool(c.exact[r]) != bf16) continue;
      pend[np++] = r;
      if (np == RT) flush(RT), np = 0;
    }
    if (np) flush(np);
  }
}

// Decodes weight rows n0..n0+nw-1 (all groups) into BF16 slots wb[i][K].
void decode_rows(const Linear& w, int64_t n0, int nw, uint16_t* wb, const __m512i* lut) {
  const int64_t K = w.in, G = K / kGroup;
  for (int64_t g = 0; g < G; ++g)
    for (int i = 0; i < nw; ++i) {  // rows interleaved: nw read streams
      __m512i v[4];
      if (w.format == WeightFormat::kFP8) decode_fp8_group(w.weight + (n0 + i) * K + g * kGroup, lut, v);
      else decode_fp4_group(w.weight + (n0 + i) * (K / 2) + g * (kGroup / 2), lut, v);
      for (int q = 0; q < 4; ++q) _mm512_store_si512(wb + i * K + g * kGroup + 32 * q, v[q]);
    }
}

// Output rows [b, e) (relative to row0) for every x row. wbuf: [kRowsW, K] BF16 scratch.
void run_range(const Call& c, int64_t b, int64_t e, uint16_t* wbuf) {
  const Linear& w = *c.w;
  const Tables& t = tables();
  __m512i lut[4];
  if (w.format == WeightFormat::kFP8) {
    lut[0] = _mm512_load_si512(t.fp8_lo), lut[1] = _mm512_load_si512(t.fp8_lo + 64);
    lut[2] = _mm512_load_si512(t.fp8_hi), lut[3] = _mm512_load_si512(t.fp8_hi + 64);
  } else if (w.format == WeightFormat::kFP4) {
    lut[0] = _mm512_load_si512(t.fp4);
  }
  const int64_t K = c.K, kblocks = (K + 127) / 128;
  // Few x rows: decode each weight group in registers as it is used. Many: decode each weight
  // row once per block of x rows into scratch and reuse it.
  const bool direct = c.rows <= 2;
  for (int64_t x0 = 0; x0 < c.rows; x0 += kRowsX) {
    const int64_t x1 = std::min(c.rows, x0 + kRowsX);
    for (int64_t n = b; n < e; n += kRowsW) {
      const int nw = int(std::min<int64_t>(kRowsW, e - n));
      const int64_t r0 = c.row0 + n;
      const uint8_t* srow[kRowsW];
      const uint8_t* fp4s[kRowsW];
      for (int i = 0; i < kRowsW; ++i) {
        const int64_t r = r0 + std::min(i, nw - 1);  // padding lanes repeat a real row
        if (w.format == WeightFormat::kFP8) srow[i] = w.scale + (r / 128) * kblocks;
        if (w.format == WeightFormat::kFP4) fp4s[i] = w.scale + r * (K / 32);
      }
      // Scratch path: the decoded rows in quads, so that 4 x rows fit the registers.
      auto scratch_quads = [&](Scaling s) {
        decode_rows(w, r0, nw, wbuf, lut);
        // The tiles below only compute: meanwhile the next rows' bytes come into L2, or the next
        // decode_rows waits for DRAM with the arithmetic units idle.
        Prefetcher pf;
        if (n + kRowsW < e) {
          const int64_t row_bytes = w.format == WeightFormat::kFP8 ? K : K / 2;
          pf.p = reinterpret_cast<const char*>(w.weight + (r0 + kRowsW) * row_bytes);
          pf.bytes = std::min<int64_t>(kRowsW, e - n - kRowsW) * row_bytes;
        }
        for (int k = 0; 4 * k < nw; ++k) {
          ScratchRows rows{};
          const int nq = std::min(4, nw - 4 * k);
          for (int i = 0; i < 4; ++i) {
            const int j = 4 * k + std::min(i, nq - 1);
            rows.wb[i] = wbuf + j * K, rows.srow[i] = srow[j], rows.fp4s[i] = fp4s[j];
          }
          if (s == Scaling::kBlock) tile_over_x<Scaling::kBlock, 4, 4>(c, rows, nq, x0, x1, n + 4 * k, &pf);
          else if (s == Scaling::kLane) tile_over_x<Scaling::kLane, 2, 4>(c, rows, nq, x0, x1, n + 4 * k, &pf);
          else tile_over_x<Scaling::kLaneSpecial, 2, 4>(c, rows, nq, x0, x1, n + 4 * k, &pf);
        }
        pf.rest();
      };
      switch (w.format) {
        case WeightFormat::kF32:
          for (int64_t r = x0; r < x1; ++r)
            for (int i = 0; i < nw; ++i)
              dot_rows_f32w(reinterpret_cast<const float*>(w.weight) + (r0 + i) * K, c.x + r * K, K,
                            c.y + r * c.n_out + n + i);
          break;
        case WeightFormat::kBF16: {
          if (direct) {  // all rows' read streams at once, prefetching the next tile's
            Bf16Rows rows{};
            for (int i = 0; i < kRowsW; ++i)
              rows.row[i] = reinterpret_cast<const uint16_t*>(w.weight) + (r0 + std::min(i, nw - 1)) * K;
            rows.ahead = 4 * kRowsW * K * 2;
            tile_over_x<Scaling::kNone, 2, kRowsW>(c, rows, nw, x0, x1, n);
            break;
          }
          for (int k = 0; 4 * k < nw; ++k) {
            Bf16Rows rows{};
            const int nq = std::min(4, nw - 4 * k);
            for (int i = 0; i < 4; ++i)
              rows.row[i] = reinterpret_cast<const uint16_t*>(w.weight) + (r0 + 4 * k + std::min(i, nq - 1)) * K;
            tile_over_x<Scaling::kNone, 4, 4>(c, rows, nq, x0, x1, n + 4 * k);
          }
          break;
        }
        case WeightFormat::kFP8:
          if (direct) {
            Fp8Rows rows{};
            for (int i = 0; i < kRowsW; ++i) rows.row[i] = w.weight + (r0 + std::min(i, nw - 1)) * K, rows.srow[i] = srow[i];
            rows.lut = lut;
            rows.ahead = 4 * kRowsW * K;
            tile_over_x<Scaling::kBlock, 2, kRowsW>(c, rows, nw, x0, x1, n);
          } else {
            scratch_quads(Scaling::kBlock);
          }
          break;
        case WeightFormat::kFP4: {
          // The rows' scales are contiguous: [nw, K/32].
          const bool plain = plain_scales(w.scale + r0 * (K / 32), nw * (K / 32));
          if (direct) {
            Fp4Rows rows{};
            for (int i = 0; i < kRowsW; ++i) rows.row[i] = w.weight + (r0 + std::min(i, nw - 1)) * (K / 2), rows.fp4s[i] = fp4s[i];
            rows.lut = lut;
            rows.ahead = 4 * kRowsW * (K / 2);
            if (plain) tile_over_x<Scaling::kLane, 1, kRowsW>(c, rows, nw, x0, x1, n);
            else tile_over_x<Scaling::kLaneSpecial, 1, kRowsW>(c, rows, nw, x0, x1, n);
          } else {
            scratch_quads(plain ? Scaling::kLane : Scaling::kLaneSpecial);
          }
          break;
        }
      }
    }
  }
}

}  // namespace

#pragma GCC pop_options

bool linear_rows_avx512(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                        ThreadPool* pool) {
  if (w.in % kGroup != 0) return false;
  const Tables& t = tables();
  const bool quant = w.format == WeightFormat::kFP8 || w.format == WeightFormat::kFP4;
  const int16_t* perm = w.format == WeightFormat::kFP8 ? t.perm_fp8 : w.format == WeightFormat::kFP4 ? t.perm_fp4 : t.perm_id;
  Call c{&w, row0, n_out, rows, w.in, w.in / kGroup, x, y, nullptr, nullptr};
  // x in slot order, reused across calls (no allocation once warm). F32 weights read x as is.
  thread_local std::vector<uint8_t> xprep, exact;
  if (w.format != WeightFormat::kF32) {
    if (xprep.size() < size_t(rows * w.in * 4)) xprep.resize(size_t(rows * w.in * 4));
    if (exact.size() < size_t(rows)) exact.resize(size_t(rows));
    uint8_t* xp = xprep.data();
    uint8_t* ex = exact.data();
    parallel_for(pool, rows, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        uint8_t* p = xp + r * w.in * 4;
        ex[r] = prep_row_x(x + r * w.in, w.in, perm, quant, reinterpret_cast<uint16_t*>(p), reinterpret_cast<float*>(p));
      }
    }, 4);
    c.xprep = xp;
    c.exact = ex;
  }
  parallel_for(pool, n_out, [&](int64_t b, int64_t e) {
    // Per-thread decode scratch: 4 rows of BF16 slots (64-byte aligned).
    thread_local std::vector<Line> scratch;
    const size_t need = size_t(kRowsW * c.K * 2 / 64);
    if (scratch.size() < need) scratch.resize(need);
    run_range(c, b, e, reinterpret_cast<uint16_t*>(scratch.data()));
  }, 16);
  return true;
}

}  // namespace dsv4::kernels::detail
