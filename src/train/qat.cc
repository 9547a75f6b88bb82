#include "train/qat.h"

#include <cmath>

namespace dsv4::train {

namespace {

// x in the forward, the gradient of the identity in the backward.
torch::Tensor straight_through(const torch::Tensor& x, const torch::Tensor& rounded) {
  return x + (rounded - x).detach();
}

// Power-of-two scale ≥ amax / limit (exact powers of two are kept), computed in F32 as the
// reference does.
torch::Tensor pow2_scale(const torch::Tensor& amax, double limit, double floor) {
  const torch::Tensor a = amax.to(torch::kFloat).clamp_min(float(floor)) * float(1.0 / limit);
  // Exponent bits, not log2 (which rounds near powers of two): a = m·2^e with m in [0.5, 1).
  auto [m, e] = torch::frexp(a);
  const torch::Tensor up = e.to(torch::kFloat) - (m == 0.5).to(torch::kFloat);
  return torch::exp2(up).to(amax.scalar_type());
}

// floor(log2 |a|) from the exponent bits, for a > 0.
torch::Tensor floor_log2(const torch::Tensor& a) {
  auto [m, e] = torch::frexp(a);
  return e.to(a.scalar_type()) - 1;
}

// Round-to-nearest-even onto a float grid with `mantissa` bits and smallest normal exponent
// `min_exp` (subnormals below), saturating at `max`.
torch::Tensor round_grid(const torch::Tensor& v, int mantissa, int min_exp, double max) {
  const torch::Tensor a = v.abs().clamp_max(max);
  const torch::Tensor e = floor_log2(a.clamp_min(1e-30)).clamp_min(min_exp);
  const torch::Tensor step = torch::exp2(e - mantissa);
  return (torch::round(a / step) * step).clamp_max(max) * torch::sign(v);
}

torch::Tensor block_sim(const torch::Tensor& x, int64_t block, bool fp4) {
  const auto sizes = x.sizes().vec();
  std::vector<int64_t> blocked(sizes.begin(), sizes.end() - 1);
  blocked.push_back(sizes.back() / block);
  blocked.push_back(block);
  const torch::Tensor xb = x.detach().reshape(blocked);
  const torch::Tensor amax = std::get<0>(xb.abs().max(-1, true));
  const torch::Tensor s = fp4 ? pow2_scale(amax, 6.0, 6.0 * std::ldexp(1.0, -126)) : pow2_scale(amax, 448.0, 1e-4);
  const torch::Tensor q = (fp4 ? round_e2m1(xb / s) : round_e4m3(xb / s)) * s;
  return straight_through(x, q.reshape(sizes));
}

}  // namespace

torch::Tensor round_e4m3(const torch::Tensor& v) { return round_grid(v, 3, -6, 448.0); }
torch::Tensor round_e2m1(const torch::Tensor& v) { return round_grid(v, 1, 0, 6.0); }

torch::Tensor fp8_sim(const torch::Tensor& x, int64_t block) { return block_sim(x, block, false); }
torch::Tensor fp4_sim(const torch::Tensor& x, int64_t block) { return block_sim(x, block, true); }

torch::Tensor fp8_weight_sim(const torch::Tensor& w) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t R = (rows + 127) / 128 * 128, C = (cols + 127) / 128 * 128;
  // Pad to whole blocks with zeros (they never raise a block's amax), then [rb, 128, cb, 128].
  const torch::Tensor p = torch::constant_pad_nd(w.detach(), {0, C - cols, 0, R - rows});
  const torch::Tensor b = p.view({R / 128, 128, C / 128, 128});
  const torch::Tensor amax = b.abs().amax({1, 3}, true);
  const torch::Tensor s = pow2_scale(amax, 448.0, 1e-30);
  const torch::Tensor q = (round_e4m3(b / s) * s).view({R, C}).narrow(0, 0, rows).narrow(1, 0, cols);
  return straight_through(w, q);
}

torch::Tensor fp4_weight_sim(const torch::Tensor& w) {
  const torch::Tensor b = w.detach().view({w.size(0), w.size(1) / 32, 32});
  const torch::Tensor amax = std::get<0>(b.abs().max(-1, true));
  const torch::Tensor s = pow2_scale(amax, 6.0, 6.0 * std::ldexp(1.0, -126));
  return straight_through(w, (round_e2m1(b / s) * s).view(w.sizes()));
}

}  // namespace dsv4::train
