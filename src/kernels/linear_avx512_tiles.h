// Internal to linear_avx512.cc: the compute tiles of the AVX-512 linear kernels — how x slots
// meet weight slots (BF16 dot products or F32 FMAs), where a tile's weight registers come from
// (decoded in registers, or from per-thread scratch), and the per-group scaling of each format.
// Include only from code that runs after the ISA check.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/avx512_sums.h"
#include "kernels/linear_avx512_formats.h"

namespace dsv4::kernels::detail {

namespace {
constexpr int kRowsW = 8;  // weight rows read together (interleaved read streams)
// The weight sources that decode in registers (BF16; FP8 for 1–2 rows) prefetch each row's own
// stream this far ahead into L1 (FP8 also the next tile into L2): its lines came late from L2
// (BF16, 4 rows, in a loop of its own: 512 B 36 GB/s, 1 KB 35, 2 KB 32, none 26–28). FP8's
// by-half passes and the tiled FP4 experts gained nothing from it.
constexpr int64_t kNearAhead = 512;
}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

// `lines` cache lines kNearAhead bytes past p, into L1.
inline void prefetch_near(const void* p, int lines) {
  const char* a = static_cast<const char*>(p) + kNearAhead;
  for (int l = 0; l < lines; ++l) _mm_prefetch(a + 64 * l, _MM_HINT_T0);
}

// FP8: per lane ℓ of a tile's sums (pairs numbered i·RT + r), the block scale of weight row
// (ℓ / RT) % NW.
template <int RT, int NW>
inline __m512 fp8_row_scales(const uint8_t* const* srow, int64_t g) {
  if (srow[0] == srow[NW - 1]) return _mm512_set1_ps(e8m0_to_f32(srow[0][g]));  // one 128-row block (usual)
  alignas(64) int32_t b[16];
  for (int l = 0; l < 16; ++l) b[l] = srow[(l / RT) % NW][g];
  return e8m0_lanes(_mm512_load_si512(b));
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

// BF16 | FP8 (per group, after the sum) | FP4, per lane: the partial times the block scale
// (kLane: scale bytes 1..254; kLaneSpecial: any), or the scales folded into the weights and the
// partial added (kFolded, see foldable; same bits as kLane) | FP8 that the reference dequantizes
// (wo_a): scales folded into the weights, one sum per lane over all of K (kWholeK).
enum class Scaling { kNone, kBlock, kLane, kLaneSpecial, kFolded, kWholeK };
constexpr bool per_lane(Scaling s) {
  return s == Scaling::kLane || s == Scaling::kLaneSpecial || s == Scaling::kFolded || s == Scaling::kWholeK;
}

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
  __m512i lut[4];     // by value: a pointer made every row reload the table from memory
  int64_t ahead = 0;  // bytes to the same place a tile on (software prefetch into L2)
  void prefetch(int i, int64_t g) const {
    const char* p = reinterpret_cast<const char*>(row[i] + g * kGroup + ahead);
    _mm_prefetch(p, _MM_HINT_T1);
    _mm_prefetch(p + 64, _MM_HINT_T1);
    prefetch_near(row[i] + g * kGroup, 2);
  }
  void get(int i, int64_t g, __m512i w[4]) const {
    prefetch(i, g);
    decode_fp8_group(row[i] + g * kGroup, lut, w);
  }
};
// kWholeK: the table with the row's block scale folded in, rebuilt when the scale byte changes.
struct Fp8FoldedRows : Fp8Rows {
  const Tables* tables = nullptr;
  mutable FoldedFp8Lut folded;
  void get(int i, int64_t g, __m512i w[4]) const {
    prefetch(i, g);
    decode_fp8_group(row[i] + g * kGroup, folded.get(*tables, srow[i][g]), w);
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
// BF16 weights are already BF16 slots (identity order). Prefetched into L1 only: a prefetch into
// L2 four tiles on made the head's 1–2 rows 6–15 % slower.
struct Bf16Rows {
  const uint16_t* row[kRowsW];
  void get(int i, int64_t g, __m512i w[4]) const {
    prefetch_near(row[i] + g * kGroup, 4);
    for (int q = 0; q < 4; ++q) w[q] = _mm512_loadu_si512(row[i] + g * kGroup + 32 * q);
  }
};

// out[r][i] for RT x rows and nw ≤ NW weight rows (without per-lane scaling at most 16 pairs: one
// accumulator's lanes hold their sums).
// Per (x row, weight row) the operations and their order are the same whatever RT, NW, nw and
// the weight source: batch invariance. Rows nw..NW-1 are padding (Rows repeats a real row there):
// they are computed and dropped, because a loop that stops at nw keeps the accumulators on the
// stack instead of in registers; for the same reason a tile is not inlined into run_range, whose
// register pressure spilled them too (in-cache decode speed 31–35 → 46–49 GB/s).
template <class P, Scaling S, int RT, int NW, class Rows>
__attribute__((noinline)) void tile(const Rows& rows, int nw, const typename P::X* const* xr, int64_t g0, int64_t g1,
                                    int64_t G, __m512* state, float* const* out) {
  constexpr bool lane = per_lane(S), whole = S == Scaling::kWholeK;
  constexpr int NP = RT * NW;  // (x row, weight row) pairs, numbered i·RT + r
  static_assert(lane || (NP % 4 == 0 && NP <= 16));  // one accumulator's lanes hold every pair
  constexpr int NZ = NP / 4;                   // in-lane sums of four pairs
  constexpr int NA = lane ? NP : 1;  // accumulators: one per pair, or one whose lanes are the pairs
  __m512 acc[NA];
  for (int a = 0; a < NA; ++a) acc[a] = g0 == 0 ? _mm512_setzero_ps() : state[a];
  for (int64_t g = g0; g < g1; ++g) {
    __m512 part[NP];
    for (int p = 0; p < NP; ++p) part[p] = _mm512_setzero_ps();
    __m512 z[4];  // in-lane sums of four pairs each (without per-lane scaling)
    typename P::XV xv[RT][4];
    for (int r = 0; r < RT; ++r)
      for (int q = 0; q < 4; ++q) xv[r][q] = P::load(xr[r] + g * kGroup + 32 * q);
#pragma GCC unroll 16
    for (int i = 0; i < NW; ++i) {
      __m512i w[4];
      rows.get(i, g, w);
      for (int q = 0; q < 4; ++q)
        for (int r = 0; r < RT; ++r) {
          __m512& sum = whole ? acc[i * RT + r] : part[i * RT + r];
          sum = P::step(sum, xv[r][q], w[q]);
        }
      // Four pairs complete: their in-lane sums now, while the next rows' products are computed
      // (left to the end of the group, the whole reduction's latency showed).
      if constexpr (!lane) {
        for (int c = 0; c < NZ; ++c)  // the quads whose last pair this weight row completed
          if (4 * c + 3 >= i * RT && 4 * c + 3 < i * RT + RT)
            z[c] = sum_in_lanes4(part[4 * c], part[4 * c + 1], part[4 * c + 2], part[4 * c + 3]);
      }
    }
    if constexpr (whole) {
      // nothing per group
    } else if constexpr (S == Scaling::kFolded) {
      for (int p = 0; p < NP; ++p) acc[p] = _mm512_add_ps(acc[p], part[p]);
    } else if constexpr (lane) {
#pragma GCC unroll 16
      for (int i = 0; i < NW; ++i) {
        const __m512 s = S == Scaling::kLane ? fp4_lane_scales_fast(rows.fp4s[i] + 4 * g)
                                             : fp4_lane_scales(rows.fp4s[i] + 4 * g);
        for (int r = 0; r < RT; ++r) acc[i * RT + r] = _mm512_fmadd_ps(part[i * RT + r], s, acc[i * RT + r]);
      }
    } else {
      for (int c = NZ; c < 4; ++c) z[c] = _mm512_setzero_ps();
      const __m512 red = sum_across_lanes4(z[0], z[1], z[2], z[3]);
      if constexpr (S == Scaling::kBlock) acc[0] = _mm512_fmadd_ps(red, fp8_row_scales<RT, NW>(rows.srow, g), acc[0]);
      else acc[0] = _mm512_add_ps(acc[0], red);
    }
  }
  if (g1 < G) {  // more groups to come: the sums wait in state
    for (int a = 0; a < NA; ++a) state[a] = acc[a];
    return;
  }
  if constexpr (lane) {
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < nw; ++i) out[r][i] = hsum512(acc[i * RT + r]);
  } else {
    alignas(64) float lanes[NA * 16];
    for (int a = 0; a < NA; ++a) _mm512_store_ps(lanes + 16 * a, acc[a]);
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < nw; ++i) out[r][i] = lanes[i * RT + r];
  }
}

// Weight sources of tile_rows_by_half: half h (64 columns, slot registers 2h and 2h + 1) of
// group g of weight row i in two registers, prefetching `ahead` bytes on into L2 (by_half).
struct Fp8Halves {  // FP8 decoded in registers, block scales per group (kBlock)
  static constexpr Scaling kScaling = Scaling::kBlock;
  const uint8_t* row[4];
  const uint8_t* srow[4];
  __m512i lut[4];
  int64_t ahead = 0;
  void get(int i, int64_t g, int h, __m512i w[2]) const {
    const uint8_t* p = row[i] + g * kGroup + 64 * h;
    _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T1);
    decode_fp8_half(p, lut, w);
  }
};
// FP8 that the reference dequantizes (wo_a): the row's block scale in the decode table (kWholeK).
struct Fp8FoldedHalves : Fp8Halves {
  static constexpr Scaling kScaling = Scaling::kWholeK;
  const Tables* tables = nullptr;
  mutable FoldedFp8Lut folded;
  void get(int i, int64_t g, int h, __m512i w[2]) const {
    const uint8_t* p = row[i] + g * kGroup + 64 * h;
    _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T1);
    decode_fp8_half(p, folded.get(*tables, srow[i][g]), w);
  }
};
struct Bf16Halves {  // BF16 as stored (kNone)
  static constexpr Scaling kScaling = Scaling::kNone;
  const uint16_t* row[4];
  int64_t ahead = 0;
  void get(int i, int64_t g, int h, __m512i w[2]) const {
    const uint16_t* p = row[i] + g * kGroup + 64 * h;
    const char* a = reinterpret_cast<const char*>(p) + ahead;
    _mm_prefetch(a, _MM_HINT_T1);
    _mm_prefetch(a + 64, _MM_HINT_T1);
    prefetch_near(p, 2);
    w[0] = _mm512_loadu_si512(p), w[1] = _mm512_loadu_si512(p + 32);
  }
};

// RT x rows against NW weight rows (up to 4 × 4, or 6 × 2), for 3–8 x rows in passes
// (concurrent sequences, verify; FP8 with BF16-exact x, the BF16 head with F32 x): each
// half-group of a weight row is fetched (FP8: decoded) once in registers and used by all RT x
// rows, and each x register is loaded once for the NW weight rows (loaded again for each, the
// 8-row FP8 product ran 14 % slower). tile() holds a group's x registers across its weight rows,
// so past 2–3 rows it had to fetch each weight again for every 2–3 x rows (the head's 2×8 tiles
// ran 20–30 % slower than this). The NW·RT pairs (i·RT + r) fill one accumulator's lanes and see
// tile()'s operations in tile()'s order: the same bits.
// Spans: groups [g0, g1) of G, the sums waiting in `state` (NP registers, or 1) until the call
// that ends at G; otherwise all of K at once (a separate instance: the bounds made the 4-row head
// 7 % slower).
template <class P, int RT, int NW, bool Spans, class Rows>
__attribute__((noinline)) void tile_rows_by_half(const Rows& rows, const typename P::X* const* xr, int64_t g0,
                                                 int64_t g1, int64_t G, __m512* state, float* const* out, int nw) {
  if constexpr (!Spans) g0 = 0, g1 = G;
  constexpr Scaling S = Rows::kScaling;
  constexpr bool whole = S == Scaling::kWholeK;  // one sum per pair over all of K, as tile()
  constexpr int NP = RT * NW, NZ = NP / 4;
  static_assert(NP % 4 == 0 && NP <= 16);
  constexpr int NA = whole ? NP : 1;
  __m512 acc[NA];
  for (int a = 0; a < NA; ++a) acc[a] = Spans && g0 > 0 ? state[a] : _mm512_setzero_ps();
  for (int64_t g = g0; g < g1; ++g) {
    __m512 part[NP];
    if constexpr (!whole)
      for (int p = 0; p < NP; ++p) part[p] = _mm512_setzero_ps();
    for (int h = 0; h < 2; ++h) {
      __m512i w[NW][2];
      for (int i = 0; i < NW; ++i) rows.get(i, g, h, w[i]);
      for (int qq = 0; qq < 2; ++qq)
        for (int r = 0; r < RT; ++r) {
          const typename P::XV xv = P::load(xr[r] + g * kGroup + 32 * (2 * h + qq));
          for (int i = 0; i < NW; ++i) {
            __m512& sum = whole ? acc[i * RT + r] : part[i * RT + r];
            sum = P::step(sum, xv, w[i][qq]);
          }
        }
    }
    if constexpr (!whole) {
      __m512 z[4];
      for (int c = 0; c < NZ; ++c) z[c] = sum_in_lanes4(part[4 * c], part[4 * c + 1], part[4 * c + 2], part[4 * c + 3]);
      for (int c = NZ; c < 4; ++c) z[c] = _mm512_setzero_ps();
      const __m512 red = sum_across_lanes4(z[0], z[1], z[2], z[3]);
      if constexpr (S == Scaling::kBlock) acc[0] = _mm512_fmadd_ps(red, fp8_row_scales<RT, NW>(rows.srow, g), acc[0]);
      else acc[0] = _mm512_add_ps(acc[0], red);
    }
  }
  if (Spans && g1 < G) {
    for (int a = 0; a < NA; ++a) state[a] = acc[a];
    return;
  }
  if constexpr (whole) {
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < nw; ++i) out[r][i] = hsum512(acc[i * RT + r]);
  } else {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[0]);
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < nw; ++i) out[r][i] = lanes[i * RT + r];
  }
}

// tile() for scratch rows with scales folded in (kFolded FP4, kWholeK FP8), looping over a
// group's column steps outside its weight rows: one weight and RT x registers live at a time
// instead of a group's 4 + 4·RT, which leaves room for 4×4 tiles of whole-K sums and for F32 x
// (kernels_bench FP4 expert shape +3 %; 3×4 tiles of kFolded spilled their 24 sums and were
// slower). Every pair sees tile()'s operations in tile()'s order.
template <class P, Scaling S, int RT, int NW>
__attribute__((noinline)) void tile_folded(const ScratchRows& rows, const typename P::X* const* xr, int64_t g0,
                                           int64_t g1, int64_t G, __m512* state, float* const* out, int nw) {
  static_assert(S == Scaling::kFolded || S == Scaling::kWholeK);
  constexpr bool whole = S == Scaling::kWholeK;
  constexpr int NP = RT * NW;
  __m512 acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = g0 == 0 ? _mm512_setzero_ps() : state[p];
  for (int64_t g = g0; g < g1; ++g) {
    __m512 part[NP];
    if constexpr (!whole)
      for (int p = 0; p < NP; ++p) part[p] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      typename P::XV xv[RT];
      for (int r = 0; r < RT; ++r) xv[r] = P::load(xr[r] + g * kGroup + 32 * q);
#pragma GCC unroll 16
      for (int i = 0; i < NW; ++i) {
        const __m512i w = _mm512_load_si512(rows.wb[i] + g * kGroup + 32 * q);
        for (int r = 0; r < RT; ++r) {
          if constexpr (whole) acc[i * RT + r] = P::step(acc[i * RT + r], xv[r], w);
          else part[i * RT + r] = P::step(part[i * RT + r], xv[r], w);
        }
      }
    }
    if constexpr (!whole)
      for (int p = 0; p < NP; ++p) acc[p] = _mm512_add_ps(acc[p], part[p]);
  }
  if (g1 < G) {
    for (int p = 0; p < NP; ++p) state[p] = acc[p];
    return;
  }
  for (int r = 0; r < RT; ++r)
    for (int i = 0; i < nw; ++i) out[r][i] = hsum512(acc[i * RT + r]);
}

}  // namespace

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
