// AVX-512 FP8 (per-128-block scales) for many BF16-exact x rows (prefill): 16 weight rows per
// register, one lane per row, so that a group's horizontal sums become vertical additions.
//
// The row-major kernel (linear_avx512.cc) keeps one register per (x row, weight row) pair whose
// 16 lanes hold the pair's column-pair partials, and sums them across lanes at the end of every
// 128-column group: about 48 shuffles and additions per 16 pairs and group, beside 64 dot
// products. Here the decoded weights of 16 rows are transposed once (per tile and group, for all
// x rows): register (q, j) holds the slot pair (32q + 2j, 32q + 2j + 1) of the 16 rows, and x
// enters as a broadcast pair. Lane ℓ of accumulator j then holds exactly lane j of the row-major
// kernel's partial for (x row, weight row ℓ) — the same dot products in the same order — and the
// row-major kernel's fixed pairing tree (avx512_sums.h: neighbours j, j^1, then j^2, then 128-bit
// lanes L, L^1, then halves) becomes 15 vertical additions in that tree's order. The block scale
// multiply-add follows as there (or, where that is provably the same bits, vscalefps and an
// addition, which leave the dot-product pipe to the products). So every (x row, weight row) gets the same bits as from the
// row-major kernel, and results stay batch invariant (tests/kernels/linear_test.cc).
//
// Memory: x is packed once per call span by span (pack_x), so a tile reads its span's x as one
// sequential stream; 8 tiles share each sweep of a span's x (from L2 after the first); a call
// of span_rows covers a span's 4 groups for 4 x rows with the running sums in registers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/avx512_transpose.h"
#include "kernels/linear_avx512_formats.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

constexpr int kTile = 16;       // weight rows per register (one per lane)
constexpr int64_t kSpan = 4;    // groups decoded at a time: 4 × 4 KB of transposed weights stay in L1
constexpr int kRT = 4;          // x rows per pass: 6 registers each beside a weight register
constexpr int64_t kBlock = 8;   // weight tiles per sweep of x

struct alignas(64) Reg {  // one register's bytes (std::vector<__m512> trips -Wignored-attributes)
  uint32_t v[16];
};

// Groups [g0, g1) of weight rows r0 .. r0+nw−1 (padding lanes repeat the last row), decoded and
// transposed: ws[(g − g0)·64 + 16q + j] lane ℓ = slots 32q + 2j, 32q + 2j + 1 of row ℓ.
void decode_tile(const Linear& w, int64_t r0, int nw, int64_t g0, int64_t g1, const __m512i lut[4], Reg* ws) {
  const int64_t K = w.in;
  alignas(64) uint32_t rowmajor[kTile * 64];  // [ℓ][16q + j]
  for (int64_t g = g0; g < g1; ++g) {
    for (int l = 0; l < kTile; ++l) {
      const uint8_t* p = w.weight + (r0 + std::min(l, nw - 1)) * K + g * kGroup;
      _mm_prefetch(reinterpret_cast<const char*>(p + kSpan * kGroup), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kSpan * kGroup + 64), _MM_HINT_T0);
      __m512i v[4];
      decode_fp8_group(p, lut, v);
      for (int q = 0; q < 4; ++q) _mm512_store_si512(rowmajor + l * 64 + 16 * q, v[q]);
    }
    for (int q = 0; q < 4; ++q) {
      __m512i r[16], o[16];
      for (int l = 0; l < kTile; ++l) r[l] = _mm512_load_si512(rowmajor + l * 64 + 16 * q);
      transpose16x16_epi32(r, o);
      for (int j = 0; j < 16; ++j) _mm512_store_si512(ws + (g - g0) * 64 + 16 * q + j, o[j]);
    }
  }
}

// A span's groups for RT x rows: per group, acc[r] += Σ(group) · scale, in the row-major
// kernel's order (see top). The sums stay in registers across the span. ws: the span's
// transposed weights (decode_tile); x: RT packed rows (pack_x) of sw words each;
// sc[i]: group i's scales (row_scales); st: the RT rows' sums, one after another.
// Scalef (the call's scales_foldable): Σ · 2^(b−127) by vscalefps, then an addition — the same
// bits as the multiply-add, off the dot-product pipe that an FMA takes.
template <int RT, bool Scalef>
__attribute__((noinline)) void span_rows(const Reg* ws, int ng, const uint32_t* x, int64_t sw, const __m512* sc,
                                         Reg* st) {
  __m512 acc[RT];
  for (int r = 0; r < RT; ++r) acc[r] = _mm512_load_ps(reinterpret_cast<const float*>(st + r));
  for (int i = 0; i < ng; ++i) {
    const Reg* wg = ws + 64 * i;
    const uint32_t* xg = x + (kGroup / 2) * i;
    __m512 t01[RT], t23[RT];
#pragma GCC unroll 1
    for (int L = 0; L < 4; ++L) {  // (unrolled, the 16 sums and t01, t23 spill)
      __m512 a[RT][4];
      for (int r = 0; r < RT; ++r)
        for (int k = 0; k < 4; ++k) a[r][k] = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q)  // q outside: a sum's next product is 4·RT products later
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const int m = 16 * q + 4 * L + k;
          const __m512i wq = _mm512_load_si512(wg + m);
          for (int r = 0; r < RT; ++r) a[r][k] = dp_pair(a[r][k], wq, xg + r * sw + m);
        }
      for (int r = 0; r < RT; ++r) {
        const __m512 t = _mm512_add_ps(_mm512_add_ps(a[r][0], a[r][1]), _mm512_add_ps(a[r][2], a[r][3]));
        if (L == 0) t01[r] = t;
        else if (L == 1) t01[r] = _mm512_add_ps(t01[r], t);
        else if (L == 2) t23[r] = t;
        else t23[r] = _mm512_add_ps(t23[r], t);
      }
    }
    for (int r = 0; r < RT; ++r) {
      const __m512 sum = _mm512_add_ps(t01[r], t23[r]);
      acc[r] = Scalef ? _mm512_add_ps(acc[r], _mm512_scalef_ps(sum, sc[i])) : _mm512_fmadd_ps(sum, sc[i], acc[r]);
    }
  }
  for (int r = 0; r < RT; ++r) _mm512_store_ps(reinterpret_cast<float*>(st + r), acc[r]);
}

// The smallest and largest exponent field among n BF16 values' nonzero ones (255, 0 when none).
void bf16_exponent_range(const uint8_t* x, int64_t n, uint8_t* lo, uint8_t* hi) {
  __m512i mn = _mm512_set1_epi16(255), mx = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 32) {
    const __m512i v = _mm512_loadu_si512(x + 2 * i);
    const __mmask32 nz = _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7fff));
    const __m512i e = _mm512_and_si512(_mm512_srli_epi16(v, 7), _mm512_set1_epi16(0xff));
    mn = _mm512_mask_min_epu16(mn, nz, mn, e), mx = _mm512_mask_max_epu16(mx, nz, mx, e);
  }
  alignas(64) uint16_t a[32], b[32];
  _mm512_store_si512(a, mn), _mm512_store_si512(b, mx);
  *lo = 255, *hi = 0;
  for (int k = 0; k < 32; ++k) *lo = uint8_t(std::min<int>(*lo, a[k])), *hi = uint8_t(std::max<int>(*hi, b[k]));
}

// Whether every group sum Σ of the call times its scale 2^(b−127) is exactly an F32 (so that
// vscalefps and an addition give the multiply-add's bits), from the call's scale bytes [b_lo,
// b_hi] and the exponent fields [e_lo, e_hi] of x's nonzero values. An x value is a multiple of
// 2^(e_lo − 150), an E4M3 value of 2^-9, so every product — and every rounded or flushed partial
// sum of them, whatever the order — is a multiple of 2^(e_lo − 159): a nonzero Σ · 2^(b−127) is
// a normal F32 when e_lo − 159 + b_lo − 127 ≥ −126. |Σ| ≤ 128 · 448 · |x| < 2^(e_hi − 110), so
// it stays under 2^127 when e_hi − 110 + b_hi − 127 ≤ 127. Scale bytes 0 and 255 and x's
// infinities and NaNs (field 255) keep the multiply-add.
bool scales_foldable(ScaleRange b, uint8_t e_lo, uint8_t e_hi) {
  if (e_lo == 255) return false;  // no nonzero x
  return b.lo >= 1 && b.hi <= 254 && e_hi <= 254 && int(e_lo) + b.lo >= 160 && int(e_hi) + b.hi <= 364;
}

// x rearranged span by span ([span][row][the span's slot pairs]), once per call for all
// threads (rows [r0, r1) here): each tile then reads its span's x as one sequential stream that
// the hardware prefetcher follows, instead of rows x_stride apart (16 KB for K = 4096) that
// also fall into the same L1 sets. exps[2r], exps[2r + 1]: row r's exponent range.
void pack_x(const uint8_t* xprep, int64_t x_stride, int64_t rows, int64_t G, int64_t r0, int64_t r1, uint32_t* xs,
            uint8_t* exps) {
  for (int64_t r = r0; r < r1; ++r) bf16_exponent_range(xprep + r * x_stride, G * kGroup, exps + 2 * r, exps + 2 * r + 1);
  for (int64_t g0 = 0; g0 < G; g0 += kSpan) {
    const int64_t words = (std::min(G, g0 + kSpan) - g0) * (kGroup / 2);
    uint32_t* out = xs + rows * g0 * (kGroup / 2);
    for (int64_t r = r0; r < r1; ++r) {
      const uint32_t* src = reinterpret_cast<const uint32_t*>(xprep + r * x_stride) + g0 * (kGroup / 2);
      for (int64_t i = 0; i < words; i += 16) _mm512_store_si512(out + r * words + i, _mm512_loadu_si512(src + i));
    }
  }
}

// Lane ℓ: the block scale of weight row r0 + min(ℓ, nw − 1), group g: 2^(b−127), or b − 127
// for span_rows' Scalef.
__m512 row_scales(const Linear& w, int64_t r0, int nw, int64_t g, bool scalef) {
  const int64_t kb = (w.in + 127) / 128;
  const int64_t b0 = r0 / 128, b1 = (r0 + nw - 1) / 128;
  alignas(64) int32_t b[kTile];
  for (int l = 0; l < kTile; ++l) b[l] = w.scale[(b0 == b1 ? b0 : (r0 + std::min(l, nw - 1)) / 128) * kb + g];
  const __m512i v = _mm512_load_si512(b);
  return scalef ? _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(127))) : e8m0_lanes(v);
}

// Output rows [b, e) relative to row0 from the packed x.
void rows_range(const Linear& w, int64_t row0, int64_t b, int64_t e, const uint32_t* xpacked, int64_t rows, float* y,
                int64_t n_out, bool scalef) {
  const int64_t K = w.in, G = K / kGroup;
  __m512i lut[4];
  fp8_lut(tables(), lut);
  // kBlock tiles share each span's sweep of x: from L3 for the first tile, from L2 for the others.
  const int64_t tiles = (e - b + kTile - 1) / kTile;
  thread_local std::vector<Reg> state;  // [kBlock][rows]: each tile's sums per x row, between groups
  thread_local std::vector<Reg> ws;     // [kSpan · 64]
  if (state.size() < size_t(kBlock * rows)) state.resize(size_t(kBlock * rows));
  if (ws.size() < size_t(kSpan * 64)) ws.resize(size_t(kSpan * 64));
  for (int64_t t0 = 0; t0 < tiles; t0 += kBlock) {
    const int nt = int(std::min<int64_t>(kBlock, tiles - t0));
    std::fill(state.begin(), state.begin() + nt * rows, Reg{});
    for (int64_t g0 = 0; g0 < G; g0 += kSpan) {
      const int64_t g1 = std::min(G, g0 + kSpan), span_words = (g1 - g0) * (kGroup / 2);
      const uint32_t* xs = xpacked + rows * g0 * (kGroup / 2);
      for (int t = 0; t < nt; ++t) {
        const int64_t n = b + (t0 + t) * kTile;
        const int nw = int(std::min<int64_t>(kTile, e - n));
        const int64_t r0 = row0 + n;
        Reg* st = state.data() + t * rows;
        decode_tile(w, r0, nw, g0, g1, lut, ws.data());
        alignas(64) __m512 sc[kSpan];
        for (int64_t g = g0; g < g1; ++g) sc[g - g0] = row_scales(w, r0, nw, g, scalef);
        const int ng = int(g1 - g0);
        for (int64_t x0 = 0; x0 < rows; x0 += kRT) {
          const uint32_t* x = xs + x0 * span_words;
          const int n = int(std::min<int64_t>(kRT, rows - x0));  // a leftover x row's sums: the same operations
          if (scalef) with_rows<kRT>(n, [&](auto rt) { span_rows<decltype(rt)::value, true>(ws.data(), ng, x, span_words, sc, st + x0); });
          else with_rows<kRT>(n, [&](auto rt) { span_rows<decltype(rt)::value, false>(ws.data(), ng, x, span_words, sc, st + x0); });
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r)  // the block's tiles are one run of each y row
      for (int t = 0; t < nt; ++t) {
        const int64_t n = b + (t0 + t) * kTile;
        const __mmask16 keep = __mmask16((1u << std::min<int64_t>(kTile, e - n)) - 1);
        const float* st = reinterpret_cast<const float*>(&state[size_t(t * rows + r)]);
        _mm512_mask_storeu_ps(y + r * n_out + n, keep, _mm512_load_ps(st));
      }
  }
}

}  // namespace

void linear_fp8_rows_avx512(const Linear& w, int64_t row0, int64_t n_out, const uint8_t* xprep, int64_t x_stride,
                            int64_t rows, float* y, ThreadPool* pool) {
  const int64_t G = w.in / kGroup;
  thread_local std::vector<Reg> xbuf;  // the caller's: x packed for every thread of the call
  thread_local std::vector<uint8_t> exps;  // each x row's exponent range
  if (xbuf.size() < size_t(rows * G * 4)) xbuf.resize(size_t(rows * G * 4));
  if (exps.size() < size_t(2 * rows)) exps.resize(size_t(2 * rows));
  uint32_t* xs = xbuf.data()->v;
  uint8_t* ex = exps.data();
  parallel_for(pool, rows, [&](int64_t b, int64_t e) { pack_x(xprep, x_stride, rows, G, b, e, xs, ex); }, 16);
  // Decided per call from all its rows and the scales of the 128-row blocks it covers.
  uint8_t e_lo = 255, e_hi = 0;
  for (int64_t r = 0; r < rows; ++r) e_lo = std::min(e_lo, ex[2 * r]), e_hi = std::max(e_hi, ex[2 * r + 1]);
  const int64_t kb = (w.in + 127) / 128, b0 = row0 / 128, b1 = (row0 + n_out - 1) / 128 + 1;
  const bool scalef = n_out > 0 && scales_foldable(scale_range(w.scale + b0 * kb, (b1 - b0) * kb), e_lo, e_hi);
  parallel_for(pool, n_out, [&](int64_t b, int64_t e) { rows_range(w, row0, b, e, xs, rows, y, n_out, scalef); }, 16);
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
