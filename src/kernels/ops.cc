#include "kernels/ops.h"

#include <algorithm>
#include <cstring>

namespace dsv4::kernels {

// One clone per ISA, picked at load time (GCC function multi-versioning). The F32 semantics
// are fixed by the source (16 independent sums, then a pairwise tree) and this file is built
// without FMA contraction (CMakeLists.txt), so every clone returns the same bits. (Contracted,
// the indexer's q·k sums moved the golden plain indexer scores past 1e-4·rms on the forced
// scalar/AVX2 runs.)
__attribute__((target_clones("avx512f", "avx2,fma", "default"))) float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void relu_weighted_sum(const float* d, int heads,
                                                                                        int64_t m, const float* w,
                                                                                        float* score) {
  for (int64_t j = 0; j < m; ++j) score[j] = 0;
  for (int h = 0; h < heads; ++h) {
    const float wh = w[h];
    const float* dh = d + h * m;
    for (int64_t j = 0; j < m; ++j) score[j] += wh * std::max(dh[j], 0.0f);
  }
}

__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void dot_rows(const float* a, int64_t rows,
                                                                               const float* b, int64_t n, float* out) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* a0 = a + r * n;
    float acc[4][16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 16; ++j) acc[k][j] += a0[k * n + i + j] * b[i + j];
    for (int j = 0; i < n; ++i, ++j)
      for (int k = 0; k < 4; ++k) acc[k][j] += a0[k * n + i] * b[i];
    for (int k = 0; k < 4; ++k) {
      for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) acc[k][j] += acc[k][j + w];
      out[r + k] = acc[k][0];
    }
  }
  for (; r < rows; ++r) out[r] = dot(a + r * n, b, n);
}

namespace {

// e^x for x in [−87, 88]: x = n·ln2 + r (ln2 in two parts, so r is exact), e^r by the Cephes
// expf polynomial, 2^n built in the exponent bits. Plain IEEE operations only, so the compiler
// vectorizes it and every clone gets the same bits.
inline float exp_clamped(float x) {
  x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void swiglu(const float* g, const float* v, int64_t n,
                                                                             float limit, float weight, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i], vi = v[i];
    if (limit > 0) {
      vi = vi < -limit ? -limit : vi > limit ? limit : vi;
      gi = gi < limit ? gi : limit;
    }
    // Below −87, silu(g) = g·e^g is under 1e-35 (F32 subnormal or zero): taken as 0.
    const float silu = gi < -87.0f ? 0.0f : gi / (1.0f + exp_clamped(-gi));
    out[i] = silu * vi * weight;
  }
}

}  // namespace dsv4::kernels
