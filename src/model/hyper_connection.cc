#include "model/hyper_connection.h"

#include "core/arena.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"

namespace dsv4 {

using kernels::sigmoid;

namespace {
// m = (fn · x) · ρ with ρ = rsqrt(mean(x²) + eps) over the flattened streams (spec §4.3); `m`
// holds the products fn · x on entry when `have_products`.
void mix_logits(const float* fn, int64_t m_rows, const float* x, int64_t n, float eps, float* m,
                bool have_products = false) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float rho = 1.0f / std::sqrt(ss / float(n) + eps);
  if (!have_products) kernels::dot_rows(fn, m_rows, x, n, m);
  for (int64_t r = 0; r < m_rows; ++r) m[r] *= rho;
}
}  // namespace

void hc_mix_products(const ModelConfig& c, const HcWeights& w, const float* x, int64_t r0, int64_t r1, float* m) {
  const int64_t n = c.hc_mult * c.dim;
  kernels::dot_rows(w.fn.data() + r0 * n, r1 - r0, x, n, m + r0);
}

void sinkhorn(float* c, int hc, int iters, float eps) {
  for (int j = 0; j < hc; ++j) {  // row softmax, then + eps
    float* row = c + j * hc;
    float mx = *std::max_element(row, row + hc), sum = 0;
    for (int k = 0; k < hc; ++k) sum += (row[k] = std::exp(row[k] - mx));
    for (int k = 0; k < hc; ++k) row[k] = row[k] / sum + eps;
  }
  auto normalize_columns = [&] {
    for (int k = 0; k < hc; ++k) {
      float s = 0;
      for (int j = 0; j < hc; ++j) s += c[j * hc + k];
      for (int j = 0; j < hc; ++j) c[j * hc + k] /= s + eps;
    }
  };
  normalize_columns();
  for (int it = 1; it < iters; ++it) {
    for (int j = 0; j < hc; ++j) {
      float s = 0;
      for (int k = 0; k < hc; ++k) s += c[j * hc + k];
      for (int k = 0; k < hc; ++k) c[j * hc + k] /= s + eps;
    }
    normalize_columns();
  }
}

void hc_pre(const ModelConfig& c, const HcWeights& w, const float* x, float* u, HcMix* mix, const float* products) {
  const int hc = c.hc_mult;
  const int64_t D = c.dim;
  float m[2 * HcMix::kMaxHc + HcMix::kMaxHc * HcMix::kMaxHc];
  if (products) std::copy(products, products + c.hc_mix_dim(), m);
  mix_logits(w.fn.data(), c.hc_mix_dim(), x, hc * D, c.norm_eps, m, products != nullptr);
  float pre[HcMix::kMaxHc];
  for (int j = 0; j < hc; ++j) {
    pre[j] = sigmoid(m[j] * w.scale[0] + w.base[size_t(j)]) + c.hc_eps;
    mix->post[j] = 2.0f * sigmoid(m[hc + j] * w.scale[1] + w.base[size_t(hc + j)]);
  }
  for (int i = 0; i < hc * hc; ++i) mix->comb[i] = m[2 * hc + i] * w.scale[2] + w.base[size_t(2 * hc + i)];
  sinkhorn(mix->comb, hc, c.hc_sinkhorn_iters, c.hc_eps);
  // Stream by stream, so the compiler vectorizes over d; each u[d] still adds in j order.
  for (int64_t d = 0; d < D; ++d) u[d] = 0.0f;
  for (int j = 0; j < hc; ++j)
    for (int64_t d = 0; d < D; ++d) u[d] += pre[j] * x[j * D + d];
}

void hc_post(const ModelConfig& c, const HcMix& mix, const float* f, float* x) {
  const int hc = c.hc_mult;
  const int64_t D = c.dim;
  ArenaScope scope;
  Scratch<float> out(size_t(hc * D));
  for (int k = 0; k < hc; ++k) {  // vectorized over d, each value's terms in the same order
    float* o = out.data() + k * D;
    for (int64_t d = 0; d < D; ++d) o[d] = mix.post[k] * f[d];
    for (int j = 0; j < hc; ++j) {
      const float cjk = mix.comb[j * hc + k];
      for (int64_t d = 0; d < D; ++d) o[d] += cjk * x[j * D + d];
    }
  }
  std::copy(out.begin(), out.end(), x);
}

void hc_head(const ModelConfig& c, const HcHeadWeights& w, const float* x, float* u) {
  const int hc = c.hc_mult;
  const int64_t D = c.dim;
  float m[16], pre[16];
  mix_logits(w.fn.data(), hc, x, hc * D, c.norm_eps, m);
  for (int j = 0; j < hc; ++j) pre[j] = sigmoid(m[j] * w.scale[0] + w.base[size_t(j)]) + c.hc_eps;
  // Stream by stream, so the compiler vectorizes over d; each u[d] still adds in j order.
  for (int64_t d = 0; d < D; ++d) u[d] = 0.0f;
  for (int j = 0; j < hc; ++j)
    for (int64_t d = 0; d < D; ++d) u[d] += pre[j] * x[j * D + d];
}

}  // namespace dsv4
