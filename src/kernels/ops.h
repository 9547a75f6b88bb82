// Small element-wise and row-wise operations of the forward pass, in F32.
#pragma once

#include <cmath>
#include <cstdint>

namespace dsv4::kernels {

// Σ a[i]·b[i] in 16 interleaved partial sums (lane j takes i ≡ j mod 16), added up pairwise at
// the end: the same order on every ISA, vectorized by the compiler for each (ops.cc).
float dot(const float* a, const float* b, int64_t n);

// out[r] = dot(a + r·n, b, n) for r < rows, bit for bit, four rows at a time (their independent
// sums hide each other's add latency; one row alone waits on it every 16 values).
void dot_rows(const float* a, int64_t rows, const float* b, int64_t n, float* out);

// The indexer's score per candidate j < m from head-major dots d[h·m + j]:
//   score[j] = ((0 + w_0·max(d_0j, 0)) + w_1·max(d_1j, 0)) + …   (heads in order, each product
// rounded, then added: no FMA), the same bits on every ISA and as the plain scalar loop.
void relu_weighted_sum(const float* d, int heads, int64_t m, const float* w, float* score);

// y = w ⊙ x · rsqrt(mean(x²) + eps) over n elements (w may be null: no weight). y may alias x.
inline void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const float ss = dot(x, x, n);
  const float r = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w ? (x[i] * r) * w[i] : x[i] * r;
}

// Expert SwiGLU (spec §4.5): out[i] = silu(min(g[i], L)) · clamp(v[i], −L, L) · weight, no
// clamp when L ≤ 0; silu(x) = x / (1 + e^−x) with ops.cc's e^x (within 2 ulp of expf, the same
// bits on every ISA), vectorized: with the library's scalar expf this loop was 3.5 % of a prefill.
void swiglu(const float* g, const float* v, int64_t n, float limit, float weight, float* out);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with beta 1 and its threshold-20 linear branch.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace dsv4::kernels
