// kernels::linear: dispatch to the active ISA's kernel (kernels/isa.h), parallel over output
// rows; the scalar reference (kernels/reference/linear_ref.cc) is the fallback and twin.
#include "kernels/linear.h"

#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"
#include "kernels/fp4_tile_isa.h"
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
  PhaseProfile::add_bytes(weight_bytes(w, n_out));
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
  if (rows <= 0) return;
  PhaseProfile::add_bytes(weight_bytes(w));
  reference_rows(w, 0, w.out, x, rows, y, pool);
}

int64_t weight_bytes(const Linear& w, int64_t n_out) {
  if (w.empty()) return 0;
  const int64_t n = n_out < 0 ? w.out : n_out;
  switch (w.format) {
    case WeightFormat::kF32: return n * w.in * 4;
    case WeightFormat::kBF16: return n * w.in * 2;
    case WeightFormat::kFP8: return n * w.in + ((n + 127) / 128) * ((w.in + 127) / 128);
    case WeightFormat::kFP4: return n * w.in / 2 + n * w.in / 32;
  }
  return 0;
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
      for (int64_t k = 0; k < w.in; ++k) out[k] = e2m1_to_f32(w.fp4_code(r, k)) * e8m0_to_f32(w.scale[w.fp4_scale(r, k / 32)]);
      break;
  }
}

bool can_tile_fp4(const Linear& w) {
  return w.format == WeightFormat::kFP4 && !w.tiled && w.out % 16 == 0 && w.in % 32 == 0 && w.out > 0;
}

namespace {

// The scalar twin of the AVX-512 tiler (fp4_tile_avx512.cc): a tile's rows copied aside, then
// each 32-bit word (8 columns of a row) put in place with its nibbles reordered.
void tile_fp4_scalar(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in) {
  const int64_t P = in / 2, B = in / 32;  // bytes of a row: weights, scales
  std::vector<uint8_t> t(size_t(16 * P));
  for (int64_t blk = 0; blk < out / 16; ++blk) {
    uint8_t* wt = weight + blk * 16 * P;
    std::memcpy(t.data(), wt, t.size());
    for (int64_t c = 0; c < P / 4; ++c)  // 8 columns of 16 rows: the output in order
      for (int64_t l = 0; l < 16; ++l) {
        uint32_t b;  // bytes b0..b3 = columns (0,1) … (6,7)
        std::memcpy(&b, t.data() + l * P + 4 * c, 4);
        auto pack = [](uint32_t v) {  // nibbles at bits 0, 8, 16, 24 → bits 0, 4, 8, 12
          v = (v | v >> 4) & 0x00ff00ffu;
          return (v | v >> 8) & 0xffffu;
        };
        const uint32_t word = pack(b & 0x0f0f0f0fu) | pack(b >> 4 & 0x0f0f0f0fu) << 16;
        std::memcpy(wt + (c * 16 + l) * 4, &word, 4);
      }
    uint8_t* st = scale + blk * 16 * B;
    std::memcpy(t.data(), st, size_t(16 * B));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = 0; l < 16; ++l) st[b * 16 + l] = t[size_t(l * B + b)];
  }
}

}  // namespace

void tile_fp4(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in) {
  if (active_isa() == Isa::kAvx512) return detail::tile_fp4_avx512(weight, scale, out, in);
  tile_fp4_scalar(weight, scale, out, in);
}

}  // namespace dsv4::kernels
