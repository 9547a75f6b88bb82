// AVX-512 linear for FP4 weights in 16-row tiles (Linear::tiled, kernels::tile_fp4): one
// register per column pair holds that pair of 16 weight rows (one lane per row, the two columns
// in the 16-bit halves that vdpbf16ps pairs), so x enters as a broadcast pair and every lane
// sums its own row — no horizontal sums, and a register decoded once serves every x row of the
// tile. Per 32-column block (one UE8M0 scale per row, 16 bytes) each lane's partial starts at
// zero, is multiplied by its row's scale and added to the row's sum: the reference fp4_gemm's
// two-level accumulation (spec §3.7) — as one multiply-add, or where that is provably the same
// bits, as vscalefps and an addition, which leave the dot-product pipe to the products. Each
// (x row, weight row) goes through these operations in this order whatever the number of x rows,
// so results are batch invariant.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/linear_avx512_formats.h"
#include "kernels/linear_isa.h"

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,fma,avx2,bmi,bmi2")

namespace {

constexpr int kTile = 16;     // weight rows per tile (one per lane)
constexpr int kMaxBf16 = 12;  // x rows per pass: 2 sums each beside the decode registers
constexpr int kMaxF32 = 6;    // F32 x rows take two FMAs and two widened registers per pair
// Tiles side by side for few x rows per pass (see tile_rows): four up to kQuadRows rows, three
// for kTripleRows, two up to kPairRows (1 row in cache: −16 % time with two, −35 % with four;
// 3 rows −4–11 % with three against two; more rows have chains enough, and two tiles of 5–6
// rows ran 6–18 % slower, out of registers; eight tiles gained 1 row nothing).
constexpr int kQuadRows = 2, kTripleRows = 3, kPairRows = 4;
// Software prefetch distance into L2: one read stream per thread does not reach DRAM bandwidth
// on its own (the hardware prefetcher keeps too few lines in flight). 1–2 rows read fastest at
// 2 KB (1 KB and 4 KB ahead: 4–7 % slower); more rows do not care.
constexpr int64_t kAhead = 2048;

// Column pair q of a 64-byte chunk (16 rows × 8 columns, tile_fp4's layout) as BF16 pairs: the
// pair's nibbles sit at bits 4q of each 16-bit half, and vpermw reads a word's low 5 bits from
// a table that repeats its 16 codes (bit 4 does not matter).
inline __m512i decode_pair(__m512i chunk, int q, __m512i lut) {
  return _mm512_permutexvar_epi16(q == 0 ? chunk : _mm512_srli_epi16(chunk, unsigned(4 * q)), lut);
}

// How a block's partial sums meet their rows' scales (tot += part · 2^(b−127)):
enum class Scales {
  kAny,    // the multiply-add, scales decoded for every byte (0: 2^-127, 255: NaN)
  kPlain,  // every byte in 1..254 (checked per tile pair): b << 23 is the F32 2^(b−127)
  // foldable() holds for the call (linear_avx512_formats.h): every nonzero part and part · s is
  // a normal F32, so vscalefps (part · 2^(b−127)) is exact and the addition that follows rounds
  // as the multiply-add does — but neither takes the dot-product pipe, which the FMA does
  kScalef,
};

// The 16 rows' scales of one 32-column block: 2^(b−127), or for kScalef b − 127.
template <Scales S>
inline __m512 block_scales(const uint8_t* s) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  if constexpr (S == Scales::kScalef) return _mm512_cvtepi32_ps(_mm512_sub_epi32(b, _mm512_set1_epi32(127)));
  if constexpr (S == Scales::kPlain) return _mm512_castsi512_ps(_mm512_slli_epi32(b, 23));
  return e8m0_lanes(b);
}

// tot + part · the block's scales (block_scales).
template <Scales S>
inline __m512 add_scaled(__m512 tot, __m512 part, __m512 sc) {
  if constexpr (S == Scales::kScalef) return _mm512_add_ps(tot, _mm512_scalef_ps(part, sc));
  return _mm512_fmadd_ps(part, sc, tot);
}

// How x meets column pair k (k even) of a tile, for RT x rows. BF16 rows (act-quantized): xi
// holds the rows' pairs interleaved, [K/2][RT] 32-bit pairs, so that a pair's RT broadcasts read
// one cache line.
struct Bf16Pairs {
  using X = const uint32_t*;
  template <int RT>
  static void step(__m512* part, __m512i wq, X xi, int64_t k) {
    const uint32_t* xp = xi + (k / 2) * RT;
    for (int r = 0; r < RT; ++r) part[r] = dp_pair(part[r], wq, xp + r);
  }
  // step on zero sums (a block's first pair): the zeroing idiom needs no execution unit.
  template <int RT>
  static void first(__m512* part, __m512i wq, X xi, int64_t k) {
    const uint32_t* xp = xi + (k / 2) * RT;
    for (int r = 0; r < RT; ++r) {
      __m512 acc;
      asm("vpxord %0, %0, %0\n\tvdpbf16ps %2%{1to16%}, %1, %0" : "=&v"(acc) : "v"(wq), "m"(*reinterpret_cast<const int32_t*>(xp + r)));
      part[r] = acc;
    }
  }
};
// F32 rows as given: the pair's two columns widened and multiplied in turn.
struct F32Pairs {
  using X = const float* const*;
  template <int RT>
  static void step(__m512* part, __m512i wq, X xf, int64_t k) {
    const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(wq, 16));
    const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(wq, _mm512_set1_epi32(int(0xffff0000u))));
    for (int r = 0; r < RT; ++r) {
      part[r] = _mm512_fmadd_ps(we, _mm512_set1_ps(xf[r][k]), part[r]);
      part[r] = _mm512_fmadd_ps(wo, _mm512_set1_ps(xf[r][k + 1]), part[r]);
    }
  }
  template <int RT>
  static void first(__m512* part, __m512i wq, X xf, int64_t k) {
    for (int r = 0; r < RT; ++r) part[r] = _mm512_setzero_ps();
    step<RT>(part, wq, xf, k);
  }
};

// y[t][r][0:16] for RT x rows and NT tiles. A block's 16 products per lane form one dependent
// chain (their order is the sum's order), so one tile and one x row would wait on the
// dot-product latency: NT tiles side by side give NT chains — and NT read streams.
// Tile t's read stream goes on in tile t + NT (the tiles lie in order): its prefetches past the
// tile's end land there, as a lone tile's land in the next.
template <class P, int RT, int NT, Scales S>
__attribute__((noinline)) void tile_rows(const uint8_t* const* w, const uint8_t* const* s, int64_t K, typename P::X x,
                                         float* const* y, __m512i lut) {
  const int64_t tile_bytes = K / 2 * kTile;
  __m512 tot[NT][RT];
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < RT; ++r) tot[t][r] = _mm512_setzero_ps();
  for (int64_t kb = 0; kb < K / 32; ++kb) {
    __m512 part[NT][RT];
    const int64_t next = kb * 256 + kAhead < tile_bytes ? kAhead : kAhead + (NT - 1) * tile_bytes;
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
      for (int t = 0; t < NT; ++t) {
        const uint8_t* wb = w[t] + kb * 256 + 64 * c;
        _mm_prefetch(reinterpret_cast<const char*>(wb + next), _MM_HINT_T1);
        const __m512i chunk = _mm512_loadu_si512(wb);
        for (int q = 0; q < 4; ++q) {
          const __m512i wq = decode_pair(chunk, q, lut);
          const int64_t k = kb * 32 + 8 * c + 2 * q;
          if (c == 0 && q == 0) P::template first<RT>(part[t], wq, x, k);
          else P::template step<RT>(part[t], wq, x, k);
        }
      }
    for (int t = 0; t < NT; ++t) {
      const __m512 sc = block_scales<S>(s[t] + kb * 16);
      for (int r = 0; r < RT; ++r) tot[t][r] = add_scaled<S>(tot[t][r], part[t][r], sc);
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int r = 0; r < RT; ++r) _mm512_storeu_ps(y[t * RT + r], tot[t][r]);
}

// tile_rows for nt tiles: 4 only for RT ≤ kQuadRows, 3 only for RT = kTripleRows, 2 only for
// RT ≤ kPairRows (the caller's choice, tiles_side_by_side), with scales S.
template <class P, int RT, Scales S>
void tiles_rows_s(int nt, const uint8_t* const* w, const uint8_t* const* s, int64_t K, typename P::X x, float* const* y,
                  __m512i lut) {
  if constexpr (RT <= kQuadRows) {
    if (nt == 4) return tile_rows<P, RT, 4, S>(w, s, K, x, y, lut);
  }
  if constexpr (RT == kTripleRows) {
    if (nt == 3) return tile_rows<P, RT, 3, S>(w, s, K, x, y, lut);
  }
  if constexpr (RT <= kPairRows) {
    if (nt == 2) return tile_rows<P, RT, 2, S>(w, s, K, x, y, lut);
  }
  tile_rows<P, RT, 1, S>(w, s, K, x, y, lut);
}
template <class P, int RT>
void tiles_rows(int nt, Scales sc, const uint8_t* const* w, const uint8_t* const* s, int64_t K, typename P::X x,
                float* const* y, __m512i lut) {
  if constexpr (std::is_same_v<P, Bf16Pairs>) {  // (F32 rows never take kScalef)
    if (sc == Scales::kScalef) return tiles_rows_s<P, RT, Scales::kScalef>(nt, w, s, K, x, y, lut);
  }
  if (sc == Scales::kPlain) return tiles_rows_s<P, RT, Scales::kPlain>(nt, w, s, K, x, y, lut);
  tiles_rows_s<P, RT, Scales::kAny>(nt, w, s, K, x, y, lut);
}

// How many tiles go side by side for passes of `rows` x rows with `left` tiles to go.
int tiles_side_by_side(size_t rows, int64_t left) {
  if (rows <= size_t(kQuadRows) && left >= 4) return 4;
  if (rows == size_t(kTripleRows) && left >= 3) return 3;
  if (rows <= size_t(kPairRows) && left >= 2) return 2;
  return 1;
}

// Whether every value of x[0:K] is exactly BF16 (act-quantized rows are).
bool bf16_exact(const float* x, int64_t K) {
  __mmask16 bad = 0;
  for (int64_t k = 0; k < K; k += 16)
    bad |= _mm512_test_epi32_mask(_mm512_castps_si512(_mm512_loadu_ps(x + k)), _mm512_set1_epi32(0xffff));
  return bad == 0;
}

}  // namespace

bool linear_rows_fp4_tiled_avx512(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows,
                                  float* y, ThreadPool* pool) {
  const int64_t K = w.in;
  if (row0 % kTile != 0 || n_out % kTile != 0 || K % 32 != 0) return false;
  // Exactly-BF16 rows (act-quantized) take the dot-product path in groups, each group's column
  // pairs interleaved; the others the F32 path as given. Buffers are kept per thread, so a warm
  // decode step allocates nothing.
  thread_local std::vector<int64_t> bf16_rows, f32_rows;
  thread_local std::vector<uint32_t> xi;
  bf16_rows.clear(), f32_rows.clear();
  for (int64_t r = 0; r < rows; ++r) (bf16_exact(x + r * K, K) ? bf16_rows : f32_rows).push_back(r);
  uint8_t x_lo = 255, x_hi = 0;  // exponent fields of the BF16 rows' nonzero values (for foldable)
  for (int64_t r : bf16_rows) {
    uint8_t lo, hi;
    exponent_range(x + r * K, K, &lo, &hi);
    x_lo = std::min(x_lo, lo), x_hi = std::max(x_hi, hi);
  }
  // Groups as even as kMaxBf16 allows (15 rows: 8 + 7, not 12 + 3: a register decoded for few
  // rows is mostly decode).
  const size_t nb = bf16_rows.size(), groups = (nb + kMaxBf16 - 1) / kMaxBf16, per = groups ? (nb + groups - 1) / groups : 1;
  if (xi.size() < nb * size_t(K / 2)) xi.resize(nb * size_t(K / 2));
  uint32_t* xip = xi.data();
  for (size_t i = 0; i < nb; i += per) {
    const int n = int(std::min(per, nb - i));
    uint32_t* g = xip + i * size_t(K / 2);
    for (int j = 0; j < n; ++j) {
      const float* xr = x + bf16_rows[i + j] * K;
      for (int64_t p = 0; p < K / 2; ++p) {
        uint32_t lo, hi;
        std::memcpy(&lo, xr + 2 * p, 4), std::memcpy(&hi, xr + 2 * p + 1, 4);
        g[p * n + j] = lo >> 16 | (hi & 0xffff0000u);
      }
    }
  }
  // The workers see their own thread_locals: they get the caller's through these.
  const int64_t* brow = bf16_rows.data();
  const int64_t* frow = f32_rows.data();
  const size_t nf = f32_rows.size();
  parallel_for(pool, n_out / kTile, [&](int64_t b, int64_t e) {
    const __m512i lut = _mm512_load_si512(tables().fp4);
    for (int64_t t = b; t < e;) {
      const int nt = tiles_side_by_side(per, e - t);
      const uint8_t* wt[4];
      const uint8_t* st[4];
      for (int j = 0; j < nt; ++j) {
        const int64_t tile = row0 / kTile + t + j;
        wt[j] = w.weight + tile * (K / 2) * kTile, st[j] = w.scale + tile * (K / 32) * kTile;
      }
      const ScaleRange range = scale_range(st[0], nt * (K / 32) * kTile);  // the tiles' scales are contiguous
      const Scales plain = range.plain() ? Scales::kPlain : Scales::kAny;
      const Scales bf16_scales = foldable(range, K, x_lo, x_hi) ? Scales::kScalef : plain;
      for (size_t i = 0; i < nb; i += per) {
        const int n = int(std::min(per, nb - i));
        float* yr[4 * kMaxBf16];
        for (int j = 0; j < nt; ++j)
          for (int r = 0; r < n; ++r) yr[j * n + r] = y + brow[i + r] * n_out + (t + j) * kTile;
        with_rows<kMaxBf16>(n, [&](auto rt) {
          tiles_rows<Bf16Pairs, decltype(rt)::value>(nt, bf16_scales, wt, st, K, xip + i * size_t(K / 2), yr, lut);
        });
      }
      for (int j = 0; j < nt; ++j)
        for (size_t i = 0; i < nf; i += kMaxF32) {
          const int n = int(std::min<size_t>(kMaxF32, nf - i));
          const float* xr[kMaxF32];
          float* yr[kMaxF32];
          for (int r = 0; r < n; ++r) xr[r] = x + frow[i + r] * K, yr[r] = y + frow[i + r] * n_out + (t + j) * kTile;
          with_rows<kMaxF32>(n, [&](auto rt) { tiles_rows<F32Pairs, decltype(rt)::value>(1, plain, wt + j, st + j, K, xr, yr, lut); });
        }
      t += nt;
    }
  });
  return true;
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
