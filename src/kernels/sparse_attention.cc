#include "kernels/sparse_attention.h"

#include <cmath>
#include <limits>

#include "kernels/isa.h"
#include "kernels/sparse_attention_isa.h"

namespace dsv4::kernels {

void sparse_attention(const SparseAttentionArgs& a) {
  if (active_isa() == Isa::kAvx512 && detail::sparse_attention_avx512(a)) return;
  sparse_attention_reference(a);
}

void sparse_attention_reference(const SparseAttentionArgs& a) {
  for (int h = 0; h < a.n_heads; ++h) {
    const float* q = a.q + h * a.head_dim;
    float* o = a.out + h * a.head_dim;
    float mu = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < a.n_kv; ++i) {
      float s = 0;
      for (int64_t d = 0; d < a.head_dim; ++d) s += q[d] * a.kv[i][d];
      a.scratch[i] = s * a.softmax_scale;
      mu = std::max(mu, a.scratch[i]);
    }
    for (int64_t d = 0; d < a.head_dim; ++d) o[d] = 0;
    if (a.n_kv == 0) continue;  // only the sink: zero value, zero output
    float den = 0;
    for (int64_t i = 0; i < a.n_kv; ++i) {
      float p = std::exp(a.scratch[i] - mu);
      den += p;
      for (int64_t d = 0; d < a.head_dim; ++d) o[d] += p * a.kv[i][d];
    }
    den += std::exp(a.sink[h] - mu);
    for (int64_t d = 0; d < a.head_dim; ++d) o[d] /= den;
  }
}

}  // namespace dsv4::kernels
