// AVX-512 sparse attention (twin: the scalar kernels::sparse_attention_reference).
//
// Three passes per query token, each shaped for the cache: scores for 4 heads × 4 keys at a
// time (one reduce4 per key gives 4 heads' sums), the softmax numerators with a vectorized
// exp, then P·V in blocks of 4 heads × 64 dims so a block's accumulators stay in registers while
// the keys' 256-byte slices stream from L2. Summation order differs from the twin; the values
// agree to F32 rounding (tests/kernels/sparse_attention_test.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/avx512_sums.h"
#include "kernels/sparse_attention.h"
#include "kernels/sparse_attention_isa.h"

namespace dsv4::kernels::detail {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")

namespace {

// e^x for x ≤ 0 (softmax arguments), within 2 ulp of expf: x = n·ln2 + r, |r| ≤ ln2/2,
// degree-7 Taylor polynomial of e^r, scaled by 2^n. Below −87.3 (e^x under F32's normal range)
// the result flushes to 0, as softmax weights that small vanish against the max term's 1.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(~tiny, _mm512_scalef_ps(p, n));
}

// scores[h, i..i+KB) = scale · q_h·kv_i for heads [h0, h0+4): 4×KB sums in registers, each
// step loading KB key and 4 query registers for 4·KB multiply-adds.
template <int KB>
void scores4_block(const SparseAttentionArgs& a, int h0, int64_t i, float* scores) {
  const int64_t D = a.head_dim, N = a.n_kv;
  const float* q[4];
  for (int j = 0; j < 4; ++j) q[j] = a.q + (h0 + j) * D;
  const float* k[KB];
  for (int b = 0; b < KB; ++b) k[b] = a.kv[i + b];
  __m512 acc[KB][4];
  for (int b = 0; b < KB; ++b)
    for (int j = 0; j < 4; ++j) acc[b][j] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 16) {
    __m512 v[KB];
    for (int b = 0; b < KB; ++b) v[b] = _mm512_loadu_ps(k[b] + d);
    for (int j = 0; j < 4; ++j) {
      const __m512 qv = _mm512_loadu_ps(q[j] + d);
      for (int b = 0; b < KB; ++b) acc[b][j] = _mm512_fmadd_ps(qv, v[b], acc[b][j]);
    }
  }
  alignas(64) float lanes[16];
  for (int b = 0; b < KB; ++b) {
    _mm512_store_ps(lanes, reduce4(acc[b][0], acc[b][1], acc[b][2], acc[b][3]));
    for (int j = 0; j < 4; ++j) scores[(h0 + j) * N + i + b] = lanes[4 * j] * a.softmax_scale;
  }
}

// scores[h, i] = scale · q_h·kv_i for heads [h0, h0+4) and keys [i0, i1).
void scores4(const SparseAttentionArgs& a, int h0, int64_t i0, int64_t i1, float* scores) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) scores4_block<4>(a, h0, i, scores);
  for (; i < i1; ++i) scores4_block<1>(a, h0, i, scores);
}

// scores[h, :] ← e^(ℓ − μ_h) in place; returns the denominator including the sink.
float softmax_numerators(float* s, int64_t N, float sink) {
  float mu = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < N; ++i) mu = std::max(mu, s[i]);
  const __m512 m = _mm512_set1_ps(mu);
  __m512 den = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= N; i += 16) {
    const __m512 p = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + i), m));
    _mm512_storeu_ps(s + i, p);
    den = _mm512_add_ps(den, p);
  }
  if (i < N) {
    const __mmask16 k = __mmask16((1u << (N - i)) - 1);
    const __m512 p = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), m)));
    _mm512_mask_storeu_ps(s + i, k, p);
    den = _mm512_add_ps(den, p);
  }
  return hsum512(den) + std::exp(sink - mu);
}

// out[h0..h0+4) dims [d0, d0 + 16·ND) = Σ_i p[h, i]·kv_i / den[h]. ND is a compile-time count so
// that the 4×ND accumulators live in registers (a runtime count put them in memory, copied with
// memcpy on every key: half the kernel's time).
// Keys [i0, i1) of them: the sums continue from `out` unless i0 = 0 (the same chain of FMAs as
// one pass over all keys), and are divided by den once i1 = n_kv.
template <int ND>
void weighted_sum4_block(const SparseAttentionArgs& a, int h0, int64_t d0, int64_t i0, int64_t i1, const float* p,
                         const float* den) {
  const int64_t D = a.head_dim, N = a.n_kv;
  __m512 acc[4][ND];
  for (int j = 0; j < 4; ++j)
    for (int t = 0; t < ND; ++t)
      acc[j][t] = i0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(a.out + (h0 + j) * D + d0 + 16 * t);
  for (int64_t i = i0; i < i1; ++i) {
    const float* k = a.kv[i] + d0;
    __m512 v[ND];
    for (int t = 0; t < ND; ++t) v[t] = _mm512_loadu_ps(k + 16 * t);
    for (int j = 0; j < 4; ++j) {
      const __m512 pj = _mm512_set1_ps(p[(h0 + j) * N + i]);
      for (int t = 0; t < ND; ++t) acc[j][t] = _mm512_fmadd_ps(pj, v[t], acc[j][t]);
    }
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 inv = _mm512_set1_ps(1.0f / den[j]);
    for (int t = 0; t < ND; ++t)
      _mm512_storeu_ps(a.out + (h0 + j) * D + d0 + 16 * t, i1 == N ? _mm512_mul_ps(acc[j][t], inv) : acc[j][t]);
  }
}

// out[h0..h0+4) = Σ_i p[h, i]·kv_i / den[h], 64 dims at a time.
void weighted_sum4(const SparseAttentionArgs& a, int h0, int64_t i0, int64_t i1, const float* p, const float* den) {
  const int64_t D = a.head_dim;
  int64_t d0 = 0;
  for (; d0 + 64 <= D; d0 += 64) weighted_sum4_block<4>(a, h0, d0, i0, i1, p, den);
  switch ((D - d0) / 16) {
    case 3: weighted_sum4_block<3>(a, h0, d0, i0, i1, p, den); break;
    case 2: weighted_sum4_block<2>(a, h0, d0, i0, i1, p, den); break;
    case 1: weighted_sum4_block<1>(a, h0, d0, i0, i1, p, den); break;
    default: break;
  }
}

}  // namespace

bool sparse_attention_avx512(const SparseAttentionArgs& a) {
  constexpr int kMaxHeads = 256;
  if (a.head_dim % 16 != 0 || a.n_heads % 4 != 0 || a.n_heads > kMaxHeads) return false;
  if (a.n_kv == 0) {  // only the sink: zero value, zero output
    for (int64_t k = 0; k < a.n_heads * a.head_dim; ++k) a.out[k] = 0;
    return true;
  }
  // Keys in tiles that stay in L2 while every head group reads them (a 1M-token context's
  // ratio-128 layer attends 8K keys, 17 MB: one pass per group of 4 heads went to DRAM 32 times
  // a step). Per (head, key) the arithmetic is the untiled pass's, so are the bits.
  constexpr int64_t kTile = 256;
  float den[kMaxHeads];
  for (int64_t i0 = 0; i0 < a.n_kv; i0 += kTile)
    for (int h0 = 0; h0 < a.n_heads; h0 += 4) scores4(a, h0, i0, std::min(a.n_kv, i0 + kTile), a.scratch);
  for (int h = 0; h < a.n_heads; ++h) den[h] = softmax_numerators(a.scratch + h * a.n_kv, a.n_kv, a.sink[h]);
  for (int64_t i0 = 0; i0 < a.n_kv; i0 += kTile)
    for (int h0 = 0; h0 < a.n_heads; h0 += 4)
      weighted_sum4(a, h0, i0, std::min(a.n_kv, i0 + kTile), a.scratch, den + h0);
  return true;
}

#pragma GCC pop_options

}  // namespace dsv4::kernels::detail
