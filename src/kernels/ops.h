// Small element-wise and row-wise operations of the forward pass, in F32.
#pragma once

#include <cmath>
#include <cstdint>

namespace dsv4::kernels {

// y = w ⊙ x · rsqrt(mean(x²) + eps) over n elements (w may be null: no weight). y may alias x.
inline void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w ? (x[i] * r) * w[i] : x[i] * r;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with beta 1 and its threshold-20 linear branch.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace dsv4::kernels
