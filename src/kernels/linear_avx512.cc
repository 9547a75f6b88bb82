// AVX-512 (+BF16, VBMI) linear kernels.
//
// Weights are decoded, 4 rows at a time (4 interleaved read streams: one stream per core does
// not reach DRAM bandwidth here), into BF16 in per-thread scratch, in a fixed slot order per
// 128-column group that the byte shuffles produce naturally; x is permuted into the same slot
// order once per call. E4M3 and E2M1 values are exact in BF16, so:
//  * BF16 path: when an x row is exactly BF16 (reference numerics: FP8 act-quantized input),
//    vdpbf16ps multiplies exactly and accumulates in F32. (E4M3 subnormals are BF16 normals,
//    so its denormals-are-zero rule never bites; products of these values are F32 normals.)
//  * F32 path: other rows (plain numerics, BF16 weights) widen the BF16 slots to F32 and FMA.
// Per group of 128 columns a vector partial sum starts at zero. FP8, BF16, F32: it is summed
// horizontally, multiplied by the block scale (FP8) and added to a scalar accumulator — the
// reference's two-level structure; keeping lanes apart across groups flipped FP8 rounding ties
// against the official outputs (golden MTP test). FP4 (one scale per 32 = per 128-bit lane):
// the partial is multiplied by per-lane scales into a vector accumulator, lanes summed last. Every
// (x row, weight row) pair sees the same operations in the same order whatever the tile
// shape, so results do not depend on how many rows are computed together.
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
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

namespace {

constexpr int64_t kGroup = 128;  // columns per group
constexpr int kRowsW = 4;        // weight rows decoded together
constexpr int64_t kRowsX = 64;   // x rows per cache block (x block stays in L2)

// Built in default-target code: nothing here may run before the ISA check.
struct Tables {
  alignas(64) uint8_t fp8_lo[128];  // E4M3 magnitude code → low byte of its BF16
  alignas(64) uint8_t fp8_hi[128];  // → high byte (sign added from the code's bit 7)
  alignas(16) uint8_t fp4_lo[16];   // E2M1 code (with sign) → low / high byte of its BF16
  alignas(16) uint8_t fp4_hi[16];
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
      t.fp4_lo[c] = uint8_t(b & 0xff);
      t.fp4_hi[c] = uint8_t(b >> 8);
    }
    for (int q = 0; q < 4; ++q)
      for (int L = 0; L < 4; ++L)
        for (int j = 0; j < 8; ++j) {
          const int s = 32 * q + 8 * L + j;
          // FP8: registers [lo(bytes 0-63), hi(0-63), lo(64-127), hi(64-127)] of unpack{lo,hi}_epi8.
          t.perm_fp8[s] = int16_t(64 * (q >> 1) + 16 * L + 8 * (q & 1) + j);
          // FP4: [even cols lo, even hi, odd lo, odd hi]; lane L holds columns 32L..32L+31.
          t.perm_fp4[s] = int16_t(32 * L + 16 * (q & 1) + 2 * j + (q >> 1));
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

// Horizontal sum in a fixed order (GCC 12's _mm512_reduce_add_* trips -Wuninitialized at -O3).
inline float hsum512(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

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

// Decodes weight rows n0..n0+nw-1 (all groups) into BF16 slots wb[i][K] and their per-group
// scales sv[i][G] (one __m512 per group: broadcast for FP8, per 128-bit lane for FP4).
void decode_rows(const Linear& w, int64_t n0, int nw, uint16_t* wb, __m512* sv) {
  const Tables& t = tables();
  const int64_t K = w.in, G = K / kGroup;
  if (w.format == WeightFormat::kFP8) {
    const __m512i lo0 = _mm512_load_si512(t.fp8_lo), lo1 = _mm512_load_si512(t.fp8_lo + 64);
    const __m512i hi0 = _mm512_load_si512(t.fp8_hi), hi1 = _mm512_load_si512(t.fp8_hi + 64);
    const __m512i sign = _mm512_set1_epi8(char(0x80));
    const int64_t kblocks = (K + 127) / 128;
    for (int64_t g = 0; g < G; ++g)
      for (int i = 0; i < nw; ++i) {  // rows interleaved: nw read streams
        const uint8_t* p = w.weight + (n0 + i) * K + g * kGroup;
        __m512i* out = reinterpret_cast<__m512i*>(wb + i * K + g * kGroup);
        for (int h = 0; h < 2; ++h) {
          const __m512i v = _mm512_loadu_si512(p + 64 * h);
          const __m512i lo = _mm512_permutex2var_epi8(lo0, v, lo1);
          __m512i hi = _mm512_permutex2var_epi8(hi0, v, hi1);
          hi = _mm512_ternarylogic_epi32(hi, v, sign, 0xF8);  // hi | (v & 0x80)
          _mm512_store_si512(out + 2 * h, _mm512_unpacklo_epi8(lo, hi));
          _mm512_store_si512(out + 2 * h + 1, _mm512_unpackhi_epi8(lo, hi));
        }
        sv[i * G + g] = _mm512_set1_ps(e8m0_to_f32(w.scale[((n0 + i) / 128) * kblocks + g]));
      }
  } else {  // FP4
    const __m512i tl = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t.fp4_lo)));
    const __m512i th = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t.fp4_hi)));
    const __m512i nib = _mm512_set1_epi8(0x0f);
    for (int64_t g = 0; g < G; ++g)
      for (int i = 0; i < nw; ++i) {
        const uint8_t* p = w.weight + (n0 + i) * (K / 2) + g * (kGroup / 2);
        __m512i* out = reinterpret_cast<__m512i*>(wb + i * K + g * kGroup);
        const __m512i v = _mm512_loadu_si512(p);
        const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        const __m512i le = _mm512_shuffle_epi8(tl, lo), he = _mm512_shuffle_epi8(th, lo);
        const __m512i oe = _mm512_shuffle_epi8(tl, hi), oh = _mm512_shuffle_epi8(th, hi);
        _mm512_store_si512(out + 0, _mm512_unpacklo_epi8(le, he));
        _mm512_store_si512(out + 1, _mm512_unpackhi_epi8(le, he));
        _mm512_store_si512(out + 2, _mm512_unpacklo_epi8(oe, oh));
        _mm512_store_si512(out + 3, _mm512_unpackhi_epi8(oe, oh));
        const uint8_t* s = w.scale + (n0 + i) * (K / 32) + g * 4;
        const __m128 s4 = _mm_setr_ps(e8m0_to_f32(s[0]), e8m0_to_f32(s[1]), e8m0_to_f32(s[2]), e8m0_to_f32(s[3]));
        sv[i * G + g] = _mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), _mm512_castps128_ps512(s4));
      }
  }
}

// BF16 path: out[r][i] = Σ_g scale[i][g] · Σ_slots x[r]·w[i] for RT x rows, NW weight rows.
template <int RT, int NW>
inline void tile_bf16(const uint16_t* const* wb, const __m512* const* sv, const uint16_t* const* xr, int64_t G,
                      float* const* out, int64_t ostride, bool lane_scales) {
  __m512 acc[RT][NW];
  float accs[RT][NW] = {};
  for (int r = 0; r < RT; ++r)
    for (int i = 0; i < NW; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 part[RT][NW];
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < NW; ++i) part[r][i] = _mm512_setzero_ps();
    for (int q = 0; q < 4; ++q) {
      const int64_t off = g * kGroup + 32 * q;
      __m512bh xv[RT];
      for (int r = 0; r < RT; ++r) xv[r] = (__m512bh)_mm512_loadu_si512(xr[r] + off);
      for (int i = 0; i < NW; ++i) {
        const __m512bh wv = (__m512bh)_mm512_load_si512(wb[i] + off);
        for (int r = 0; r < RT; ++r) part[r][i] = _mm512_dpbf16_ps(part[r][i], xv[r], wv);
      }
    }
    for (int i = 0; i < NW; ++i) {
      const __m512 s = sv[i][g];
      if (lane_scales) {
        for (int r = 0; r < RT; ++r) acc[r][i] = _mm512_fmadd_ps(part[r][i], s, acc[r][i]);
      } else {
        const float sc = _mm512_cvtss_f32(s);
        for (int r = 0; r < RT; ++r) accs[r][i] += hsum512(part[r][i]) * sc;
      }
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int i = 0; i < NW; ++i) out[r][i * ostride] = lane_scales ? hsum512(acc[r][i]) : accs[r][i];
}

// F32 path over BF16 slots (decoded FP8/FP4, or BF16 weights in place: sv null = unscaled).
template <int RT, int NW>
inline void tile_f32(const uint16_t* const* wb, const __m512* const* sv, const float* const* xr, int64_t G,
                     float* const* out, int64_t ostride, bool lane_scales) {
  const __m512i himask = _mm512_set1_epi32(int(0xffff0000u));
  __m512 acc[RT][NW];
  float accs[RT][NW] = {};
  for (int r = 0; r < RT; ++r)
    for (int i = 0; i < NW; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 part[RT][NW];
    for (int r = 0; r < RT; ++r)
      for (int i = 0; i < NW; ++i) part[r][i] = _mm512_setzero_ps();
    for (int q = 0; q < 4; ++q) {
      const int64_t off = g * kGroup + 32 * q;
      for (int i = 0; i < NW; ++i) {
        const __m512i wv = _mm512_loadu_si512(wb[i] + off);
        const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(wv, 16));
        const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(wv, himask));
        for (int r = 0; r < RT; ++r) {
          part[r][i] = _mm512_fmadd_ps(we, _mm512_loadu_ps(xr[r] + off), part[r][i]);
          part[r][i] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xr[r] + off + 16), part[r][i]);
        }
      }
    }
    for (int i = 0; i < NW; ++i)
      for (int r = 0; r < RT; ++r) {
        if (lane_scales) {
          acc[r][i] = _mm512_fmadd_ps(part[r][i], sv[i][g], acc[r][i]);
        } else if (sv) {
          accs[r][i] += hsum512(part[r][i]) * _mm512_cvtss_f32(sv[i][g]);
        } else {
          accs[r][i] += hsum512(part[r][i]);
        }
      }
  }
  for (int r = 0; r < RT; ++r)
    for (int i = 0; i < NW; ++i) out[r][i * ostride] = lane_scales ? hsum512(acc[r][i]) : accs[r][i];
}

// F32 weights, natural column order.
void dot_rows_f32w(const float* w, const float* x, int64_t K, float* out) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc);
  *out = hsum512(acc);
}

template <int RT>
void tile_dispatch(bool bf16, int nw, const uint16_t* const* wb, const __m512* const* sv, const void* const* xr,
                   int64_t G, float* const* out, int64_t ostride, bool lane_scales) {
  if (bf16) {
    auto x = reinterpret_cast<const uint16_t* const*>(xr);
    switch (nw) {
      case 4: tile_bf16<RT, 4>(wb, sv, x, G, out, ostride, lane_scales); break;
      case 3: tile_bf16<RT, 3>(wb, sv, x, G, out, ostride, lane_scales); break;
      case 2: tile_bf16<RT, 2>(wb, sv, x, G, out, ostride, lane_scales); break;
      default: tile_bf16<RT, 1>(wb, sv, x, G, out, ostride, lane_scales); break;
    }
  } else {
    auto x = reinterpret_cast<const float* const*>(xr);
    switch (nw) {
      case 4: tile_f32<RT, 4>(wb, sv, x, G, out, ostride, lane_scales); break;
      case 3: tile_f32<RT, 3>(wb, sv, x, G, out, ostride, lane_scales); break;
      case 2: tile_f32<RT, 2>(wb, sv, x, G, out, ostride, lane_scales); break;
      default: tile_f32<RT, 1>(wb, sv, x, G, out, ostride, lane_scales); break;
    }
  }
}

struct Call {
  const Linear* w;
  int64_t row0, n_out, rows, K, G;
  const float* x;
  float* y;
  const uint8_t* xprep;  // [rows, K·4 bytes]: BF16 or F32 slots
  const uint8_t* exact;  // [rows]
};

// Output rows [b, e) (relative to row0) for every x row. wb: [4, K] BF16, sv: [4, G].
void run_range(const Call& c, int64_t b, int64_t e, uint16_t* wbuf, __m512* svbuf) {
  const Linear& w = *c.w;
  const bool quant = w.format == WeightFormat::kFP8 || w.format == WeightFormat::kFP4;
  const bool fp4 = w.format == WeightFormat::kFP4;
  for (int64_t x0 = 0; x0 < c.rows; x0 += kRowsX) {
    const int64_t x1 = std::min(c.rows, x0 + kRowsX);
    for (int64_t n = b; n < e; n += kRowsW) {
      const int nw = int(std::min<int64_t>(kRowsW, e - n));
      const uint16_t* wb[kRowsW];
      const __m512* sv[kRowsW];
      if (w.format == WeightFormat::kF32) {
        for (int64_t r = x0; r < x1; ++r)
          for (int i = 0; i < nw; ++i)
            dot_rows_f32w(reinterpret_cast<const float*>(w.weight) + (c.row0 + n + i) * c.K, c.x + r * c.K, c.K,
                          c.y + r * c.n_out + n + i);
        continue;
      }
      if (quant) {
        decode_rows(w, c.row0 + n, nw, wbuf, svbuf);
        for (int i = 0; i < nw; ++i) wb[i] = wbuf + i * c.K, sv[i] = svbuf + i * c.G;
      } else {
        for (int i = 0; i < nw; ++i)
          wb[i] = reinterpret_cast<const uint16_t*>(w.weight) + (c.row0 + n + i) * c.K, sv[i] = nullptr;
      }
      // Rows of each path in pairs; a lone row uses the one-row tile (same per-row sequence).
      for (int pass = 0; pass < 2; ++pass) {
        const bool bf16 = pass == 0;
        int64_t pend = -1;
        for (int64_t r = x0; r < x1; ++r) {
          if (bool(c.exact[r]) != bf16) continue;
          if (pend < 0) {
            pend = r;
            continue;
          }
          const void* xr[2] = {c.xprep + pend * c.K * 4, c.xprep + r * c.K * 4};
          float* out[2] = {c.y + pend * c.n_out + n, c.y + r * c.n_out + n};
          tile_dispatch<2>(bf16, nw, wb, quant ? sv : nullptr, xr, c.G, out, 1, fp4);
          pend = -1;
        }
        if (pend >= 0) {
          const void* xr[1] = {c.xprep + pend * c.K * 4};
          float* out[1] = {c.y + pend * c.n_out + n};
          tile_dispatch<1>(bf16, nw, wb, quant ? sv : nullptr, xr, c.G, out, 1, fp4);
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
    // Per-thread decode scratch: 4 rows of BF16 slots plus their group scales (64-byte aligned).
    thread_local std::vector<Line> scratch;
    const size_t need = size_t(kRowsW * c.K * 2 / 64 + kRowsW * c.G);
    if (scratch.size() < need) scratch.resize(need);
    run_range(c, b, e, reinterpret_cast<uint16_t*>(scratch.data()),
              reinterpret_cast<__m512*>(scratch.data() + kRowsW * c.K * 2 / 64));
  }, 16);
  return true;
}

}  // namespace dsv4::kernels::detail
