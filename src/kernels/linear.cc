// kernels::linear: dispatch to the active ISA's kernel (kernels/isa.h), parallel over output
// rows; the scalar reference (kernels/reference/linear_ref.cc) is the fallback and twin.
#include "kernels/linear.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/linear_isa.h"
#include "kernels/reference/linear_ref.h"

namespace dsv4::kernels {

namespace {

// The scalar reference split over output rows: each thread writes y[r, b:e) for every row r.
void reference_rows(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                    ThreadPool* pool) {
  if (rows == 1) {
    parallel_for(pool, n_out, [&](int64_t b, int64_t e) { reference::linear_rows(w, row0 + b, e - b, x, 1, y + b); }, 16);
    return;
  }
  parallel_for(pool, rows, [&](int64_t b, int64_t e) {
    reference::linear_rows(w, row0, n_out, x + b * w.in, e - b, y + b * n_out);
  });
}

}  // namespace

void linear_rows(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                 ThreadPool* pool) {
  DSV4_CHECK(!w.empty(), "linear with no weight");
  DSV4_CHECK(row0 >= 0 && row0 + n_out <= w.out, "linear rows out of range");
  if (rows <= 0 || n_out <= 0) return;
  switch (active_isa()) {
    case Isa::kAvx512:
      if (detail::linear_rows_avx512(w, row0, n_out, x, rows, y, pool)) return;
      break;
    case Isa::kAvx2:
      if (detail::linear_rows_avx2(w, row0, n_out, x, rows, y, pool)) return;
      break;
    case Isa::kScalar: break;
  }
  reference_rows(w, row0, n_out, x, rows, y, pool);
}

void linear(const Linear& w, const float* x, int64_t rows, float* y, ThreadPool* pool) {
  linear_rows(w, 0, w.out, x, rows, y, pool);
}

void linear_sequential(const Linear& w, const float* x, int64_t rows, float* y, ThreadPool* pool) {
  DSV4_CHECK(!w.empty(), "linear with no weight");
  if (rows > 0) reference_rows(w, 0, w.out, x, rows, y, pool);
}

void dequant_row(const Linear& w, int64_t r, float* out) {
  switch (w.format) {
    case WeightFormat::kF32:
      std::memcpy(out, w.weight + r * w.in * 4, size_t(w.in) * 4);
      break;
    case WeightFormat::kBF16: {
      const uint8_t* p = w.weight + r * w.in * 2;
      for (int64_t k = 0; k < w.in; ++k) out[k] = bf16_to_f32(uint16_t(p[2 * k] | (p[2 * k + 1] << 8)));
      break;
    }
    case WeightFormat::kFP8: {
      const int64_t kblocks = (w.in + 127) / 128;
      for (int64_t k = 0; k < w.in; ++k)
        out[k] = e4m3_to_f32(w.weight[r * w.in + k]) * e8m0_to_f32(w.scale[(r / 128) * kblocks + k / 128]);
      break;
    }
    case WeightFormat::kFP4:
      for (int64_t k = 0; k < w.in; ++k)
        out[k] = fp4_packed_at(w.weight + r * (w.in / 2), size_t(k)) * e8m0_to_f32(w.scale[r * (w.in / 32) + k / 32]);
      break;
  }
}

}  // namespace dsv4::kernels
