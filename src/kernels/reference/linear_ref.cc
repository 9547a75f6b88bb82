#include "kernels/reference/linear_ref.h"

#include <cstring>

#include "core/dtype.h"

namespace dsv4::kernels::reference {

namespace {

// One output element for each format. The FP8/FP4 paths sum each scale block in F32, then
// apply the weight scale once per block: the official kernels' two-level accumulation.
// Safetensors does not align tensors to their element size (real files have odd offsets), so
// BF16/F32 weights are read with memcpy, which compiles to plain unaligned loads.
float dot_f32(const uint8_t* w, const float* x, int64_t n) {
  float acc = 0;
  for (int64_t k = 0; k < n; ++k) {
    float v;
    std::memcpy(&v, w + 4 * k, 4);
    acc += v * x[k];
  }
  return acc;
}

float dot_bf16(const uint8_t* w, const float* x, int64_t n) {
  float acc = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint16_t v;
    std::memcpy(&v, w + 2 * k, 2);
    acc += bf16_to_f32(v) * x[k];
  }
  return acc;
}

float dot_fp8(const Linear& w, int64_t row, const float* x) {
  const uint8_t* wr = w.weight + row * w.in;
  const int64_t kblocks = (w.in + 127) / 128;
  const uint8_t* srow = w.scale + (row / 128) * kblocks;
  float acc = 0;
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    int64_t k0 = kb * 128, k1 = k0 + 128 < w.in ? k0 + 128 : w.in;
    float part = 0;
    for (int64_t k = k0; k < k1; ++k) part += e4m3_to_f32(wr[k]) * x[k];
    acc += part * e8m0_to_f32(srow[kb]);
  }
  return acc;
}

float dot_fp4(const Linear& w, int64_t row, const float* x) {
  float acc = 0;
  for (int64_t kb = 0; kb < w.in / 32; ++kb) {
    float part = 0;
    for (int64_t j = 0; j < 16; ++j) {
      const int64_t k = kb * 32 + 2 * j;
      part += e2m1_to_f32(w.fp4_code(row, k)) * x[k] + e2m1_to_f32(w.fp4_code(row, k + 1)) * x[k + 1];
    }
    acc += part * e8m0_to_f32(w.scale[w.fp4_scale(row, kb)]);
  }
  return acc;
}

}  // namespace

void linear_rows(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * w.in;
    float* yr = y + r * n_out;
    for (int64_t i = 0; i < n_out; ++i) {
      const int64_t n = row0 + i;
      switch (w.format) {
        case WeightFormat::kF32:
          yr[i] = dot_f32(w.weight + n * w.in * 4, xr, w.in);
          break;
        case WeightFormat::kBF16:
          yr[i] = dot_bf16(w.weight + n * w.in * 2, xr, w.in);
          break;
        case WeightFormat::kFP8: yr[i] = dot_fp8(w, n, xr); break;
        case WeightFormat::kFP4: yr[i] = dot_fp4(w, n, xr); break;
      }
    }
  }
}

}  // namespace dsv4::kernels::reference
