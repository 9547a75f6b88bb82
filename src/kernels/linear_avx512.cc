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
// prefetch into L2 (FP8: the next tile; row-major FP4: four tiles on; one or two read streams
// per core do not reach DRAM bandwidth) and one into L1 512 bytes ahead in each row's stream
// (kNearAhead; BF16 only this one); for
// more rows each weight row is decoded once per block of x rows (≤ 512 KB) into per-thread scratch.
// Per group of 128 columns a vector partial sum starts at zero. FP8, BF16, F32: it is summed
// horizontally (sixteen (x row, weight row) pairs at once, in one fixed pairing tree, its
// in-lane half as soon as four pairs are final), multiplied by the block scale (FP8) and
// accumulated — the reference's two-level structure; keeping lanes apart across groups flipped
// FP8 rounding ties against the official outputs (golden MTP test). FP4 (one scale per 32 = per
// 128-bit lane): the partial is multiplied by per-lane scales into a vector accumulator, lanes
// summed last; with many x rows the scales are folded into the decoded weights instead and the
// partial is added, which gives the same bits (linear_avx512_formats.h, foldable). The one FP8
// matrix the reference dequantizes and multiplies as a plain GEMM (wo_a, Linear::dequantized)
// has no two-level structure to keep: its block scales ride in the decode table and each lane
// sums over all of K (kWholeK; no horizontal sums per group, 15.7 → 12 % of a prefill). Every
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
#include "kernels/linear_avx512_tiles.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

namespace {

constexpr int64_t kRowsX = 256;  // x rows per cache block at most (x block stays in L2)
constexpr int64_t kBlockBytes = 512 << 10;  // prepared x bytes per cache block at most
constexpr int64_t kSpan = 16;    // groups per span of FP4's many-rows path (see tile_over_x)
constexpr int64_t kBf16DirectRows = 12;  // BF16 (the head): x rows up to which the 2×8 register tiles beat 4×4 (3–8: few_rows_by_half)
constexpr int64_t kFewRows = 8;      // x rows up to which FP8 decodes in registers (fp8_few_rows), BF16 too (few_rows_by_half)
constexpr int64_t kFp8RowsMin = 12;  // BF16 x rows from which FP8 takes linear_fp8_rows_avx512 (3-8: few_rows_by_half)
// x rows per chunk of their preparation (a few µs a row): a batch of decode steps or a verify
// forward prepares its rows without a thread-pool region of its own (a wake-up and a barrier
// per product cost more than the work).
constexpr int64_t kPrepGrain = 16;

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
  FoldedFp8Lut folded;
  for (int64_t g = g0; g < g1; ++g)
    for (int i = 0; i < nw; ++i) {  // rows interleaved: nw read streams
      __m512i v[4];
      if (w.format == WeightFormat::kFP8) {
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * K + (g + 4) * kGroup), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * K + (g + 4) * kGroup + 64), _MM_HINT_T0);
        // kWholeK: the row's block scale in the table.
        const __m512i* table = fold ? folded.get(tables(), w.scale[((n0 + i) / 128) * ((K + 127) / 128) + g]) : lut;
        decode_fp8_group(w.weight + (n0 + i) * K + g * kGroup, table, v);
      } else {
        _mm_prefetch(reinterpret_cast<const char*>(w.weight + (n0 + i) * (K / 2) + (g + 4) * (kGroup / 2)), _MM_HINT_T0);
        decode_fp4_group(w.weight + (n0 + i) * (K / 2) + g * (kGroup / 2), lut, v);
        if (fold) fold_fp4_group(v, fp4_fold_addend(w.scale + (n0 + i) * (K / 32) + 4 * g));
      }
      for (int q = 0; q < 4; ++q) _mm512_store_si512(wb + i * scratch_row(K) + g * kGroup + 32 * q, v[q]);
    }
}

// x rows [x0, x1) of one quad of FP8 weight rows decoded in registers, in tiles of RT.
template <int RT, class Rows>
void fp8_quad_direct(const Call& c, const Rows& rows, int nq, int64_t x0, int64_t x1, int64_t n) {
  constexpr Scaling S = std::is_same_v<Rows, Fp8FoldedRows> ? Scaling::kWholeK : Scaling::kBlock;
  if (x0 < x1) tile_over_x<S, RT, 4>(c, rows, nq, x0, x1, n, 0, c.G);
}

// FP8 for a few x rows (batched decode, verify): each quad of weight rows decoded in registers
// as its tiles use it — 3 x rows at a time (4×4 tiles spill their 32 registers), the 1–2 left
// over in one tile — instead of stored to scratch and read back: for few rows that decode was
// most of the work. The passes after the first read the quad (4 rows × K bytes) from L1.
template <class Rows>
void fp8_few_rows_as(const Call& c, int64_t r0, int nw, int64_t n, int64_t x0, int64_t x1, const uint8_t* const* srow,
                     const __m512i* lut) {
  const Linear& w = *c.w;
  const int64_t K = c.K, x3 = x0 + (x1 - x0) / 3 * 3;
  for (int k = 0; 4 * k < nw; ++k) {
    Rows rows{};
    const int nq = std::min(4, nw - 4 * k);
    for (int i = 0; i < 4; ++i) {
      const int j = 4 * k + std::min(i, nq - 1);
      rows.row[i] = w.weight + (r0 + j) * K, rows.srow[i] = srow[j];
    }
    for (int q = 0; q < 4; ++q) rows.lut[q] = lut[q];
    rows.ahead = 4 * kRowsW * K;
    if constexpr (std::is_same_v<Rows, Fp8FoldedRows>) rows.tables = &tables();
    fp8_quad_direct<3>(c, rows, nq, x0, x3, n + 4 * k);
    if (x1 - x3 == 2) fp8_quad_direct<2>(c, rows, nq, x3, x1, n + 4 * k);
    else fp8_quad_direct<1>(c, rows, nq, x3, x1, n + 4 * k);
  }
}
// kByHalfRowsMin..kFewRows x rows by tile_rows_by_half — FP8 (kBlock, kWholeK) with every row
// BF16-exact, wo_a (kWholeK) with every row F32 (3–8 rows 12–25 % faster than fp8_few_rows_as'
// 3-row tiles), BF16 (its rows are F32) — in passes of at most 4 x rows against 4 weight rows at a
// time (kernels_bench-like loop, 1 thread, in cache: 8 rows as 8 × 2 pairs ran 0–10 % (FP8) and
// 13 % (BF16) slower than as 2 passes of 4 × 4; 3 rows −6 % (FP8, from 3×4 tiles) and −31 %
// (BF16, from 2×8 + 1×8 tiles)); false where it does not apply.
constexpr int64_t kByHalfRowsMin = 3;
constexpr int kByHalfRowsW = 4;  // weight rows per tile
// Points slot i of a tile_rows_by_half weight source at weight row r.
void point_row(Fp8Halves& rows, int i, const Linear& w, int64_t r) {
  rows.row[i] = w.weight + r * w.in, rows.srow[i] = w.scale + (r / 128) * ((w.in + 127) / 128);
}
void point_row(Bf16Halves& rows, int i, const Linear& w, int64_t r) {
  rows.row[i] = reinterpret_cast<const uint16_t*>(w.weight) + r * w.in;
}
// One pass of few_rows_by_half: rt x rows (xr; out[r]: their outputs for the block's first weight
// row) and their running sums.
struct ByHalfPass {
  int rt = 0;
  const uint8_t* xr[8];
  float* out[8];
  __m512 state[16];
};
// Groups [g0, g1) of pass p against weight rows NW·k .. NW·k + nk − 1 of the block (in `rows`).
template <class P, int NW, class Rows>
void pass_groups(const Call& c, const Rows& rows, ByHalfPass& p, int k, int nk, int64_t g0, int64_t g1) {
  const bool spans = g0 > 0 || g1 < c.G;
  auto run = [&](auto rt) {
    constexpr int RT = decltype(rt)::value;
    float* o[RT];
    const typename P::X* x[RT];
    for (int r = 0; r < RT; ++r) o[r] = p.out[r] + NW * k, x[r] = reinterpret_cast<const typename P::X*>(p.xr[r]);
    if (spans) tile_rows_by_half<P, RT, NW, true>(rows, x, g0, g1, c.G, p.state, o, nk);
    else tile_rows_by_half<P, RT, NW, false>(rows, x, g0, g1, c.G, p.state, o, nk);
  };
  if constexpr (NW == 2) run(std::integral_constant<int, 6>{});  // 12 pairs
  else if (p.rt == 2) run(std::integral_constant<int, 2>{});
  else if (p.rt == 3) run(std::integral_constant<int, 3>{});
  else run(std::integral_constant<int, 4>{});
}
// Weight rows r0 .. r0 + nw − 1 for every pass. BF16 weights with F32 x (the head): passes take
// turns group by group, so that the second reads the group's weights from L1 (its 4 weight rows
// and 4 x rows over all of K overflow L1; 8 rows of the head −11–16 % time against pass after
// pass). FP8, whose passes each decode the weights, ran 5–30 % slower in turns.
template <class P, int NW, class Rows>
void by_half(const Call& c, Rows rows, ByHalfPass* passes, int np, int64_t r0, int nw) {
  const bool fp8 = c.w->format == WeightFormat::kFP8;
  // The L2 prefetch's distance in weight rows: FP8, whose passes decode, read 3–8 % faster 8 rows
  // on than 32 (and 15 % slower with none); BF16 read as fast 8, 16 or 32 rows on.
  rows.ahead = fp8 ? kRowsW * c.K : 4 * kRowsW * 2 * c.K;
  const int64_t span = c.w->format == WeightFormat::kBF16 && np > 1 ? 1 : c.G;
  for (int k = 0; NW * k < nw; ++k) {
    const int nk = std::min(NW, nw - NW * k);
    for (int i = 0; i < NW; ++i) point_row(rows, i, *c.w, r0 + NW * k + std::min(i, nk - 1));  // padding: the last again
    for (int64_t g0 = 0; g0 < c.G; g0 += span)
      for (int p = 0; p < np; ++p) pass_groups<P, NW>(c, rows, passes[p], k, nk, g0, std::min(c.G, g0 + span));
  }
}
bool few_rows_by_half(const Call& c, int64_t r0, int nw, int64_t n, int64_t x0, int64_t x1, const __m512i* lut) {
  const int m = int(x1 - x0);
  const bool fp8 = c.w->format == WeightFormat::kFP8;
  if (m < kByHalfRowsMin || m > kFewRows) return false;
  // Every row as the first: FP8 BF16-exact, or all F32 for wo_a (kWholeK); BF16 weights all F32.
  const bool f32 = !c.exact[x0];
  if (f32 ? fp8 && !c.whole_k : !fp8) return false;
  for (int64_t r = x0; r < x1; ++r)
    if (bool(c.exact[r]) == f32) return false;
  // FP8, 6 rows: one pass of 6 × 2 pairs (−11 % against 3 + 3, the decode done once; BF16 ran
  // as fast either way).
  const bool six = fp8 && !f32 && m == 6;
  const int np = six ? 1 : (m + 3) / 4;
  ByHalfPass passes[2];
  for (int p = 0, done = 0; p < np; ++p) {
    ByHalfPass& pass = passes[p];
    pass.rt = (m - done + np - p - 1) / (np - p);  // as even as can be: 7 = 4 + 3
    for (int j = 0; j < pass.rt; ++j) {
      const int64_t r = x0 + done + j;
      pass.xr[j] = c.xprep + r * c.K * 4, pass.out[j] = c.y + r * c.n_out + n;
    }
    done += pass.rt;
  }
  auto bf16_rows = [&](const auto& rows) {  // 6 × 2 pairs or 4 × 4
    if (six) by_half<Bf16Product, 2>(c, rows, passes, np, r0, nw);
    else by_half<Bf16Product, kByHalfRowsW>(c, rows, passes, np, r0, nw);
  };
  if (!fp8) {
    by_half<F32Product, kByHalfRowsW>(c, Bf16Halves{}, passes, np, r0, nw);
  } else if (c.whole_k) {
    Fp8FoldedHalves rows{};
    rows.tables = &tables();
    if (f32) by_half<F32Product, kByHalfRowsW>(c, rows, passes, np, r0, nw);
    else bf16_rows(rows);
  } else {
    Fp8Halves rows{};
    for (int q = 0; q < 4; ++q) rows.lut[q] = lut[q];
    bf16_rows(rows);
  }
  return true;
}

void fp8_few_rows(const Call& c, int64_t r0, int nw, int64_t n, int64_t x0, int64_t x1, const uint8_t* const* srow,
                  const __m512i* lut) {
  if (few_rows_by_half(c, r0, nw, n, x0, x1, lut)) return;
  if (c.whole_k) fp8_few_rows_as<Fp8FoldedRows>(c, r0, nw, n, x0, x1, srow, lut);
  else fp8_few_rows_as<Fp8Rows>(c, r0, nw, n, x0, x1, srow, lut);
}

// Output rows [b, e) (relative to row0) for every x row. wbuf: [kRowsW, scratch_row(K)] BF16 scratch.
void run_range(const Call& c, int64_t b, int64_t e, uint16_t* wbuf) {
  const Linear& w = *c.w;
  const Tables& t = tables();
  __m512i lut[4];
  if (w.format == WeightFormat::kFP8) {
    fp8_lut(t, lut);
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
          if (few_rows_by_half(c, r0, nw, n, x0, x1, nullptr)) break;
          if (c.rows <= kBf16DirectRows) {  // all rows' read streams at once
            Bf16Rows rows{};
            for (int i = 0; i < kRowsW; ++i)
              rows.row[i] = reinterpret_cast<const uint16_t*>(w.weight) + (r0 + std::min(i, nw - 1)) * K;
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
            auto fill = [&](Fp8Rows& rows) {
              for (int i = 0; i < kRowsW; ++i) rows.row[i] = w.weight + (r0 + std::min(i, nw - 1)) * K, rows.srow[i] = srow[i];
              for (int k = 0; k < 4; ++k) rows.lut[k] = lut[k];
              rows.ahead = kRowsW * K;  // the next tile (four tiles on: 5–13 % slower)
            };
            if (c.whole_k) {
              Fp8FoldedRows rows{};
              fill(rows);
              rows.tables = &t;
              tile_over_x<Scaling::kWholeK, 2, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            } else {
              Fp8Rows rows{};
              fill(rows);
              tile_over_x<Scaling::kBlock, 2, kRowsW>(c, rows, nw, x0, x1, n, 0, c.G);
            }
          } else if (c.rows <= kFewRows) {
            fp8_few_rows(c, r0, nw, n, x0, x1, srow, lut);
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
  if (w.tiled) return linear_rows_fp4_tiled_avx512(w, row0, n_out, x, rows, y, pool);
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
    }, kPrepGrain);
    c.xprep = xp;
    c.exact = ex;
    for (int64_t r = 0; r < rows; ++r) c.any_f32 |= ex[r] == 0;
    for (int64_t r = 0; ranges && r < rows; ++r)
      c.x_exp_min = std::min(c.x_exp_min, er[2 * r]), c.x_exp_max = std::max(c.x_exp_max, er[2 * r + 1]);
  }
  if (w.format == WeightFormat::kFP8 && !c.whole_k && !c.any_f32 && rows >= kFp8RowsMin) {
    linear_fp8_rows_avx512(w, row0, n_out, c.xprep, w.in * 4, rows, y, pool);
    return true;
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
