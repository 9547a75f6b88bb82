#include "kernels/hadamard.h"

#include <cmath>

#include "core/error.h"

namespace dsv4::kernels {

void hadamard_inplace(float* x, int64_t n) {
  DSV4_CHECK(n > 0 && (n & (n - 1)) == 0, "Hadamard size ", n, " is not a power of two");
  // Fast butterfly: log2(n) passes of (a+b, a-b) give the Sylvester-ordered transform.
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float scale = 1.0f / std::sqrt(float(n));
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

}  // namespace dsv4::kernels
