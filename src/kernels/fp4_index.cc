#include "kernels/fp4_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "kernels/fp4_index_isa.h"
#include "kernels/isa.h"
#include "kernels/quant.h"

namespace dsv4::kernels {

namespace detail {

bool fp4_key_shifts(const Fp4IndexQuery& q, const uint8_t* scales, int32_t* min_exp, uint8_t* shifts) {
  const int64_t blocks = q.dim / 32;
  int lo = 255, hi = 0;
  for (int64_t b = 0; b < blocks; ++b) lo = std::min<int>(lo, scales[b]), hi = std::max<int>(hi, scales[b]);
  if (hi == 255 || hi - lo > kFp4IndexMaxSpread) return false;  // a NaN scale, or too wide a span
  *min_exp = lo - 127;
  // Every head's 2^E must be a normal float, and 2^E·T finite with room to spare.
  if (q.lo_exp + *min_exp - 2 < -126 || q.hi_exp + *min_exp - 2 > 100) return false;
  for (int64_t b = 0; b < blocks; ++b) shifts[b] = uint8_t(scales[b] - lo);
  return true;
}

int32_t twice_e2m1(uint8_t code) {
  static constexpr int8_t kTwice[8] = {0, 1, 2, 3, 4, 6, 8, 12};
  const int32_t v = kTwice[code & 7];
  return code & 8 ? -v : v;
}

}  // namespace detail

bool fp4_index_prepare(const float* q, int heads, int64_t dim, Fp4IndexQuery* out) {
  if (heads <= 0 || dim <= 0 || dim % 128 != 0) return false;
  out->heads = heads;
  out->dim = dim;
  out->q.resize(size_t(heads * dim));
  out->q_sum.resize(size_t(heads));
  out->min_exp.resize(size_t(heads));
  ArenaScope scope;
  Scratch<uint8_t> codes(static_cast<size_t>(dim)), scales(static_cast<size_t>(dim / 32));
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + h * dim;
    fp4_quantize(qh, dim, 32, codes.data(), scales.data());
    for (int64_t e = 0; e < dim; ++e) {  // only a row exactly on the grid is these codes
      const float back = e2m1_to_f32(codes[size_t(e)]) * e8m0_to_f32(scales[size_t(e / 32)]);
      if (std::memcmp(&back, qh + e, 4) != 0) return false;
    }
    const int lo = *std::min_element(scales.begin(), scales.end());
    const int hi = *std::max_element(scales.begin(), scales.end());
    if (hi == 255 || hi - lo > kFp4IndexMaxSpread) return false;
    int32_t sum = 0;
    int8_t* dst = out->q.data() + h * dim;
    for (int64_t e = 0; e < dim; ++e) {
      const int32_t v = detail::twice_e2m1(codes[size_t(e)]) << (scales[size_t(e / 32)] - lo);
      const int64_t chunk = e / 128, k = e % 128;
      dst[chunk * 128 + (k % 2) * 64 + k / 2] = int8_t(v);  // evens, then odds, per 128 dims
      sum += v;
    }
    out->q_sum[size_t(h)] = sum;
    out->min_exp[size_t(h)] = lo - 127;
  }
  out->lo_exp = *std::min_element(out->min_exp.begin(), out->min_exp.end());
  out->hi_exp = *std::max_element(out->min_exp.begin(), out->min_exp.end());
  return true;
}

void fp4_index_dots_reference(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n,
                              float* dots, uint8_t* ok) {
  ArenaScope scope;
  Scratch<uint8_t> shifts(static_cast<size_t>(q.dim / 32));
  Scratch<int32_t> k(static_cast<size_t>(q.dim));  // the key's integers, in q's element order
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = keys + size_t(j) * row_bytes;
    int32_t min_exp = 0;
    ok[j] = detail::fp4_key_shifts(q, row + q.dim / 2, &min_exp, shifts.data());
    if (!ok[j]) continue;
    for (int64_t e = 0; e < q.dim; ++e) {
      const uint8_t code = uint8_t(row[e / 2] >> ((e & 1) * 4));
      const int64_t chunk = e / 128, kk = e % 128;
      k[size_t(chunk * 128 + (kk % 2) * 64 + kk / 2)] = detail::twice_e2m1(code) << shifts[size_t(e / 32)];
    }
    for (int h = 0; h < q.heads; ++h) {
      const int8_t* qh = q.q.data() + h * q.dim;
      int32_t t = 0;
      for (int64_t e = 0; e < q.dim; ++e) t += int32_t(qh[e]) * k[size_t(e)];
      dots[h * n + j] = std::ldexp(float(t), q.min_exp[size_t(h)] + min_exp - 2);
    }
  }
}

void fp4_index_dots(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n, float* dots,
                    uint8_t* ok) {
  if (active_isa() == Isa::kAvx512 && detail::fp4_index_dots_avx512(q, keys, row_bytes, n, dots, ok)) return;
  fp4_index_dots_reference(q, keys, row_bytes, n, dots, ok);
}

}  // namespace dsv4::kernels
