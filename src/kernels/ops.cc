#include "kernels/ops.h"

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

}  // namespace dsv4::kernels
