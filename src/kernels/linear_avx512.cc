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
// more rows each weight row is decoded once per block of x rows (≤ 512 KB) into per-thread scratch.
// Per group of 128 columns a vector partial sum starts at zero. FP8, BF16, F32: it is summed
// horizontally (sixteen (x row, weight row) pairs at once, in one fixed pairing tree, its
// in-lane half as soon as four pairs are final), multiplied by the block scale (FP8) and
// accumulated — the reference's two-level structure; keeping lanes apart across groups flipped
// FP8 rounding ties against the official outputs (golden MTP test). FP4 (one scale per 32 = per
// 128-bit lane): the partial is multiplied by per-lane scales into a vector accumulator, lanes
// summed last; with many x rows the scales are folded into the decoded weights instead and the
// partial is added, which gives the same bits (linear_avx512_formats.h, foldable). Every
// (x row, weight row) pair sees the same operations in the same order whatever the tile shape
// or weight source, so results do not depend on how many rows are computed together
// (tests/kernels/linear_test.cc checks bit equality).
// GCC 12 reports its own AVX-512 intrinsics' deliberately undefined pass-through operands as
// uninitialized when they are inlined into target("...") functions at -O3 (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/avx512_sums.h"
#include "kernels/linear_avx512_formats.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

namespace {

constexpr int kRowsW = 8;        // weight rows read together (interleaved read streams)
constexpr int64_t kRowsX = 256;  // x rows per cache block at most (x block stays in L2)
constexpr int64_t kBlockBytes = 512 << 10;  // prepared x bytes per cache block at most
constexpr int64_t kSpan = 16;    // groups per span of FP4's many-rows path (see tile_over_x)

// Scratch row stride (BF16 values): K plus two lines, so that the rows' stores of one group do
// not all share an address modulo 4 KB with each other and with the weight loads that follow
// (K·2 bytes is a multiple of 4 KB for every model width).
constexpr int64_t scratch_row(int64_t K) { return K + 64; }

struct alignas(64) Line {
  uint8_t b[64];
};

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

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
  const __m512i* lut;
  int64_t ahead = 0;  // bytes to the same place four tiles on (software prefetch into L2)
  // kWholeK: the table with the block scale folded in, rebuilt when the scale byte changes.
  const Tables* fold = nullptr;
  mutable int folded_for = -1;
  mutable __m512i flut[4];
  void get(int i, int64_t g, __m512i w[4]) const {
    const char* p = reinterpret_cast<const char*>(row[i] + g * kGroup + ahead);
    _mm_prefetch(p, _MM_HINT_T1);
    _mm_prefetch(p + 64, _MM_HINT_T1);
    if (fold) {
      if (srow[i][g] != folded_for) folded_for = srow[i][g], fp8_folded_lut(*fold, srow[i][g], flut);
      decode_fp8_group(row[i] + g * kGroup, flut, w);
    } else {
      decode_fp8_group(row[i] + g * kGroup, lut, w);
    }
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
        if ((i * RT + RT) % 4 == 0) {
          const int c = (i * RT + RT) / 4 - 1;
          z[c] = sum_in_lanes4(part[4 * c], part[4 * c + 1], part[4 * c + 2], part[4 * c + 3]);
        }
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
  uint8_t x_exp_min = 255, x_exp_max = 0;  // exponent fields of x's nonzero values (exponent_range)
  bool any_f32 = false;                     // some row is not exactly BF16 (F32 slots)
  bool whole_k = false;                     // FP8 as kWholeK (Linear::dequantized, fp8_foldable)
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

// Runs tile() over the x rows [x0, x1) for one set of weight rows and the groups [g0, g1): rows
// of each path (BF16-exact or F32) in tiles of RT, leftovers one at a time (the per-row sequence
// is the same); a tile's sums wait in per-tile state until the span that ends at G. FP4 with
// many x rows comes in spans of kSpan groups, every x tile before the next span, so the weight
// rows' span stays in L1 while the x rows stream from L2 (its 2×4 tiles load 0.75 registers per
// dot product; spans of 16 groups: +14–22 % in kernels_bench, 8: +8–11 %). The 4×4 tiles of the
// other formats load less and lost 7 % to the extra calls, so they take all of K at once.
template <Scaling S, int RT, int NW, class Rows>
void tile_over_x(const Call& c, const Rows& rows, int nw, int64_t x0, int64_t x1, int64_t n, int64_t g0,
                 int64_t g1, Prefetcher* pf = nullptr) {
  constexpr int NA = per_lane(S) ? RT * NW : 1;  // as in tile()
  struct Tile {
    int count;  // RT, or 1 (a leftover row)
    bool bf16;
    int64_t row[RT];
  };
  Tile tiles[kRowsX];
  int nt = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const bool bf16 = pass == 0;
    int fill = 0;  // rows in tiles[nt] so far
    for (int64_t r = x0; r < x1; ++r) {
      if (bool(c.exact[r]) != bf16) continue;
      tiles[nt].row[fill++] = r;
      if (fill == RT) tiles[nt].count = RT, tiles[nt].bf16 = bf16, ++nt, fill = 0;
    }
    // Leftover rows (in tiles[nt] so far) get a tile each, spread back to front.
    for (int k = fill - 1; k >= 0; --k) {
      const int64_t r = tiles[nt].row[k];
      tiles[nt + k].row[0] = r, tiles[nt + k].count = 1, tiles[nt + k].bf16 = bf16;
    }
    nt += fill;
  }
  static thread_local __m512 state[kRowsX][NA];  // sums between spans, per tile
  for (int k = 0; k < nt; ++k) {
    const Tile& t = tiles[k];
    const void* xr[RT];
    float* out[RT];
    for (int j = 0; j < t.count; ++j) xr[j] = c.xprep + t.row[j] * c.K * 4, out[j] = c.y + t.row[j] * c.n_out + n;
    if (pf) pf->some(std::max<int64_t>(1, 32 * (g1 - g0) / c.G));
    if constexpr ((S == Scaling::kFolded || S == Scaling::kWholeK) && std::is_same_v<Rows, ScratchRows>) {
      if (t.bf16) {
        const auto* x16 = reinterpret_cast<const uint16_t* const*>(xr);
        if (t.count == RT) tile_folded<Bf16Product, S, RT, NW>(rows, x16, g0, g1, c.G, state[k], out, nw);
        else tile_folded<Bf16Product, S, 1, NW>(rows, x16, g0, g1, c.G, state[k], out, nw);
        continue;
      }
      if constexpr (S == Scaling::kWholeK) {
        const auto* x32 = reinterpret_cast<const float* const*>(xr);
        if (t.count == RT) tile_folded<F32Product, S, RT, NW>(rows, x32, g0, g1, c.G, state[k], out, nw);
        else tile_folded<F32Product, S, 1, NW>(rows, x32, g0, g1, c.G, state[k], out, nw);
        continue;
      }
    }
    if (t.count == RT) {
      if (t.bf16) tile<Bf16Product, S, RT, NW>(rows, nw, reinterpret_cast<const uint16_t* const*>(xr), g0, g1, c.G, state[k], out);
      else tile<F32Product, S, RT, NW>(rows, nw, reinterpret_cast<const float* const*>(xr), g0, g1, c.G, state[k], out);
    } else {
      if (t.bf16) tile<Bf16Product, S, 1, NW>(rows, nw, reinterpret_cast<const uint16_t* const*>(xr), g0, g1, c.G, state[k], out);
      else tile<F32Product, S, 1, NW>(rows, nw, reinterpret_cast<const float* const*>(xr), g0, g1, c.G, state[k], out);
    }
  }
}

// Decodes groups [g0, g1) of weight rows n0..n0+nw-1 into BF16 slots wb[i][·]; with `fold`
// the block scales folded in (FP4: kFolded; FP8: kWholeK).
void decode_rows(const Linear& w, int64_t n0, int nw, int64_t g0, int64_t g1, uint16_t* wb, const __m512i* lut,
                 bool fold) {
  const int64_t K = w.in;
  int folded_for = -1;
  __m512i flut[4];
  for (int64_t g = g0; g < g1; ++g)
    for (int i = 0; i < nw; ++i) {  // rows interleaved: nw read streams
      __m512i v[4];
      if (w.format == WeightFormat::kFP8) {
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * K + (g + 4) * kGroup), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * K + (g + 4) * kGroup + 64), _MM_HINT_T0);
        if (fold) {  // kWholeK: the row's block scale in the table (rebuilt when it changes)
          const uint8_t b = w.scale[((n0 + i) / 128) * ((K + 127) / 128) + g];
          if (b != folded_for) folded_for = b, fp8_folded_lut(tables(), b, flut);
          decode_fp8_group(w.weight + (n0 + i) * K + g * kGroup, flut, v);
        } else {
          decode_fp8_group(w.weight + (n0 + i) * K + g * kGroup, lut, v);
        }
      } else {
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * (K / 2) + (g + 4) * (kGroup / 2)), _MM_HINT_T0);
        decode_fp4_group(w.weight + (n0 + i) * (K / 2) + g * (kGroup / 2), lut, v);
        if (fold) fold_fp4_group(v, fp4_fold_addend(w.scale + (n0 + i) * (K / 32) + 4 * g));
      }
      for (int q = 0; q < 4; ++q) _mm512_store_si512(wb + i * scratch_row(K) + g * kGroup + 32 * q, v[q]);
    }
}

// Output rows [b, e) (relative to row0) for every x row. wbuf: [kRowsW, scratch_row(K)] BF16 scratch.
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
  // x blocks of at most kBlockBytes of prepared rows (F32 rows take twice the bytes of BF16
  // ones): a block that outgrows L2 is read from L3 by every weight tile (F32 x at K = 4096:
  // 64 rows were 1 MB, and that path ran at ~57 % of the FMA peak in the model).
  const int64_t row_bytes = c.K * (c.any_f32 ? 4 : 2);
  const int64_t rows_x = std::clamp<int64_t>(kBlockBytes / row_bytes, 8, kRowsX);
  for (int64_t x0 = 0; x0 < c.rows; x0 += rows_x) {
    const int64_t x1 = std::min(c.rows, x0 + rows_x);
    for (int64_t n = b; n < e; n += kRowsW) {
      const int nw = int(std::min<int64_t>(kRowsW, e - n));
      const int64_t r0 = c.row0 + n;
      if (w.format == WeightFormat::kFP4 && n + 4 * kRowsW < e) {
        // The scales of the rows four blocks on (FP4: K/32 bytes a row, read before the
        // weights by the checks below, which otherwise wait for DRAM at every block).
        const char* sp = reinterpret_cast<const char*>(w.scale + (r0 + 4 * kRowsW) * (K / 32));
        const int64_t sb = std::min<int64_t>(kRowsW, e - n - 4 * kRowsW) * (K / 32);
        for (int64_t o = 0; o < sb; o += 64) _mm_prefetch(sp + o, _MM_HINT_T1);
      }
      const uint8_t* srow[kRowsW];
      const uint8_t* fp4s[kRowsW];
      for (int i = 0; i < kRowsW; ++i) {
        const int64_t r = r0 + std::min(i, nw - 1);  // padding lanes repeat a real row
        if (w.format == WeightFormat::kFP8) srow[i] = w.scale + (r / 128) * kblocks;
        if (w.format == WeightFormat::kFP4) fp4s[i] = w.scale + r * (K / 32);
      }
      // Scratch path: the decoded rows in quads, so that 4 x rows fit the registers.
      auto scratch_quads = [&](Scaling s) {
        // The tiles below only compute: meanwhile the next rows' bytes come into L2, or the next
        // decode_rows waits for DRAM with the arithmetic units idle.
        Prefetcher pf;
        if (n + kRowsW < e) {
          const int64_t row_bytes = w.format == WeightFormat::kFP8 ? K : K / 2;
          pf.p = reinterpret_cast<const char*>(w.weight + (r0 + kRowsW) * row_bytes);
          pf.bytes = std::min<int64_t>(kRowsW, e - n - kRowsW) * row_bytes;
        }
        // FP4 (2×4 tiles) in spans of K: each span decoded right before its tiles read it, and
        // small enough that the weight rows stay in L1 meanwhile (see tile_over_x).
        const int64_t span = s == Scaling::kFolded ? kSpan : c.G;
        for (int64_t g0 = 0; g0 < c.G; g0 += span) {
          const int64_t g1 = std::min(c.G, g0 + span);
          decode_rows(w, r0, nw, g0, g1, wbuf, lut, s == Scaling::kFolded || s == Scaling::kWholeK);
          for (int k = 0; 4 * k < nw; ++k) {
            ScratchRows rows{};
            const int nq = std::min(4, nw - 4 * k);
            for (int i = 0; i < 4; ++i) {
              const int j = 4 * k + std::min(i, nq - 1);
              rows.wb[i] = wbuf + j * scratch_row(K), rows.srow[i] = srow[j], rows.fp4s[i] = fp4s[j];
            }
            const int64_t nk = n + 4 * k;
            if (s == Scaling::kBlock) tile_over_x<Scaling::kBlock, 4, 4>(c, rows, nq, x0, x1, nk, g0, g1, &pf);
            else if (s == Scaling::kWholeK) tile_over_x<Scaling::kWholeK, 4, 4>(c, rows, nq, x0, x1, nk, g0, g1, &pf);
            else if (s == Scaling::kFolded) tile_over_x<Scaling::kFolded, 2, 4>(c, rows, nq, x0, x1, nk, g0, g1, &pf);
            else if (s == Scaling::kLane) tile_over_x<Scaling::kLane, 2, 4>(c, rows, nq, x0, x1, nk, g0, g1, &pf);
            else tile_over_x<Scaling::kLaneSpecial, 2, 4>(c, rows, nq, x0, x1, nk, g0, g1, &pf);
          }
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
            tile_over_x<Scaling::kNone, 2, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            break;
          }
          for (int k = 0; 4 * k < nw; ++k) {
            Bf16Rows rows{};
            const int nq = std::min(4, nw - 4 * k);
            for (int i = 0; i < 4; ++i)
              rows.row[i] = reinterpret_cast<const uint16_t*>(w.weight) + (r0 + 4 * k + std::min(i, nq - 1)) * K;
            tile_over_x<Scaling::kNone, 4, 4>(c, rows, nq, x0, x1, n + 4 * k, 0, c.G);
          }
          break;
        }
        case WeightFormat::kFP8:
          if (direct) {
            Fp8Rows rows{};
            for (int i = 0; i < kRowsW; ++i) rows.row[i] = w.weight + (r0 + std::min(i, nw - 1)) * K, rows.srow[i] = srow[i];
            rows.lut = lut;
            rows.ahead = 4 * kRowsW * K;
            if (c.whole_k) {
              rows.fold = &t;
              tile_over_x<Scaling::kWholeK, 2, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            } else {
              tile_over_x<Scaling::kBlock, 2, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            }
          } else {
            scratch_quads(c.whole_k ? Scaling::kWholeK : Scaling::kBlock);
          }
          break;
        case WeightFormat::kFP4: {
          // The rows' scales are contiguous: [nw, K/32].
          const ScaleRange sr = scale_range(w.scale + r0 * (K / 32), nw * (K / 32));
          const bool plain = sr.plain();
          if (direct) {
            Fp4Rows rows{};
            for (int i = 0; i < kRowsW; ++i) rows.row[i] = w.weight + (r0 + std::min(i, nw - 1)) * (K / 2), rows.fp4s[i] = fp4s[i];
            rows.lut = lut;
            rows.ahead = 4 * kRowsW * (K / 2);
            if (plain) tile_over_x<Scaling::kLane, 1, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            else tile_over_x<Scaling::kLaneSpecial, 1, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
          } else {
            scratch_quads(foldable(sr, K, c.x_exp_min, c.x_exp_max) ? Scaling::kFolded
                          : plain                                                ? Scaling::kLane
                                                                                 : Scaling::kLaneSpecial);
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
  const SlotOrder& order = w.format == WeightFormat::kFP8 ? t.order_fp8 : w.format == WeightFormat::kFP4 ? t.order_fp4 : t.order_id;
  Call c{&w, row0, n_out, rows, w.in, w.in / kGroup, x, y, nullptr, nullptr};
  if (w.format == WeightFormat::kFP8 && w.dequantized && n_out > 0) {
    // Decided from the scales of the 128-row blocks this call covers, never from x: a row's
    // result must not depend on the rows computed with it.
    const int64_t kb = (w.in + 127) / 128, b0 = row0 / 128, b1 = (row0 + n_out - 1) / 128 + 1;
    c.whole_k = fp8_foldable(scale_range(w.scale + b0 * kb, (b1 - b0) * kb));
  }
  // x in slot order, reused across calls (no allocation once warm). F32 weights read x as is.
  thread_local std::vector<uint8_t> xprep, exact, exps;
  if (w.format != WeightFormat::kF32) {
    if (xprep.size() < size_t(rows * w.in * 4)) xprep.resize(size_t(rows * w.in * 4));
    if (exact.size() < size_t(rows)) exact.resize(size_t(rows));
    const bool ranges = w.format == WeightFormat::kFP4 && rows > 2;  // for foldable()
    if (ranges && exps.size() < size_t(2 * rows)) exps.resize(size_t(2 * rows));
    uint8_t* xp = xprep.data();
    uint8_t* ex = exact.data();
    uint8_t* er = exps.data();
    parallel_for(pool, rows, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        uint8_t* p = xp + r * w.in * 4;
        ex[r] = prep_row_x(x + r * w.in, w.in, order, quant, reinterpret_cast<uint16_t*>(p), reinterpret_cast<float*>(p));
        if (ranges) exponent_range(x + r * w.in, w.in, er + 2 * r, er + 2 * r + 1);
      }
    }, 4);
    c.xprep = xp;
    c.exact = ex;
    for (int64_t r = 0; r < rows; ++r) c.any_f32 |= ex[r] == 0;
    for (int64_t r = 0; ranges && r < rows; ++r)
      c.x_exp_min = std::min(c.x_exp_min, er[2 * r]), c.x_exp_max = std::max(c.x_exp_max, er[2 * r + 1]);
  }
  parallel_for(pool, n_out, [&](int64_t b, int64_t e) {
    // Per-thread decode scratch: 4 rows of BF16 slots (64-byte aligned).
    thread_local std::vector<Line> scratch;
    const size_t need = size_t(kRowsW * scratch_row(c.K) * 2 / 64);
    if (scratch.size() < need) scratch.resize(need);
    run_range(c, b, e, reinterpret_cast<uint16_t*>(scratch.data()));
  }, 16);
  return true;
}

}  // namespace dsv4::kernels::detail
