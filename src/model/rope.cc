#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

RopeTable make_rope_table(const ModelConfig& c, double base, bool yarn) {
  RopeTable t;
  const int64_t dim = c.rope_head_dim;
  t.rope_head_dim = dim;
  t.inv_freq.resize(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    // As the reference: 1 / base ** (f32(2i) / dim), each step in F32 (angles at large positions
    // are sensitive to the last bit of the frequency).
    float expo = float(2 * i) / float(dim);
    t.inv_freq[size_t(i)] = 1.0f / std::pow(float(base), expo);
  }
  if (yarn && c.original_seq_len > 0) {
    // Dims rotating fewer than beta_slow times over the original context are interpolated by
    // `factor`; dims rotating more than beta_fast times are kept; a linear ramp in between.
    auto correction_dim = [&](double rotations) {
      return double(dim) * std::log(double(c.original_seq_len) / (rotations * 2 * M_PI)) / (2 * std::log(base));
    };
    double lo = std::max(std::floor(correction_dim(c.beta_fast)), 0.0);
    double hi = std::min(std::ceil(correction_dim(c.beta_slow)), double(dim - 1));
    if (lo == hi) hi += 0.001;
    for (int64_t i = 0; i < dim / 2; ++i) {
      float ramp = std::clamp((float(i) - float(lo)) / (float(hi) - float(lo)), 0.0f, 1.0f);
      float f = t.inv_freq[size_t(i)];
      t.inv_freq[size_t(i)] = f / float(c.rope_factor) * ramp + f * (1.0f - ramp);
    }
  }
  return t;
}

RopeTable layer_rope_table(const ModelConfig& c, int layer_id) {
  return c.compress_ratio(layer_id) != 0 ? make_rope_table(c, c.compress_rope_theta, true)
                                         : make_rope_table(c, c.rope_theta, false);
}

void RopeTable::cos_sin(int64_t pos, float* cos_out, float* sin_out) const {
  const float p = float(pos);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    float angle = p * inv_freq[i];
    cos_out[i] = std::cos(angle);
    sin_out[i] = std::sin(angle);
  }
}

void RopeTable::apply(float* x, int64_t n, int64_t pos, bool inverse) const {
  float* r = x + (n - rope_head_dim);
  const float p = float(pos);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    float angle = p * inv_freq[i];
    float c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
    float a = r[2 * i], b = r[2 * i + 1];
    r[2 * i] = a * c - b * s;
    r[2 * i + 1] = a * s + b * c;
  }
}

}  // namespace dsv4
