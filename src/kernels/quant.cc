#include "kernels/quant.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace dsv4::kernels {

namespace {
// Both are F32 constants multiplied (not divisions), as in the official kernels.
constexpr float kInv448 = 1.0f / 448.0f;
constexpr float kInv6 = 1.0f / 6.0f;
const float kFp4AmaxFloor = 6.0f * std::bit_cast<float>(0x00800000u);  // 6·2^-126

float block_amax(const float* x, int block) {
  float m = 0;
  for (int i = 0; i < block; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}
}  // namespace

float fp8_scale_for(float amax) { return pow2_ceil(std::max(amax, 1e-4f) * kInv448); }
float fp4_scale_for(float amax) { return pow2_ceil(std::max(amax, kFp4AmaxFloor) * kInv6); }

void fp8_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales) {
  DSV4_CHECK(n % block == 0, "fp8_quantize: ", n, " not a multiple of ", block);
  for (int64_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    float s = fp8_scale_for(block_amax(xb, block));
    scales[b] = uint8_t(std::bit_cast<uint32_t>(s) >> 23);
    for (int i = 0; i < block; ++i)
      codes[b * block + i] = f32_to_e4m3(std::clamp(xb[i] / s, -kE4m3Max, kE4m3Max));
  }
}

void fp4_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales) {
  DSV4_CHECK(n % block == 0, "fp4_quantize: ", n, " not a multiple of ", block);
  for (int64_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    float s = fp4_scale_for(block_amax(xb, block));
    scales[b] = uint8_t(std::bit_cast<uint32_t>(s) >> 23);
    for (int i = 0; i < block; ++i)
      codes[b * block + i] = f32_to_e2m1(std::clamp(xb[i] / s, -kE2m1Max, kE2m1Max));
  }
}

void fp8_simulate(float* x, int64_t n, int block) {
  DSV4_CHECK(n % block == 0, "fp8_simulate: ", n, " not a multiple of ", block);
  for (int64_t b = 0; b < n / block; ++b) {
    float* xb = x + b * block;
    float s = fp8_scale_for(block_amax(xb, block));
    for (int i = 0; i < block; ++i) xb[i] = e4m3_to_f32(f32_to_e4m3(std::clamp(xb[i] / s, -kE4m3Max, kE4m3Max))) * s;
  }
}

void fp4_simulate(float* x, int64_t n, int block) {
  DSV4_CHECK(n % block == 0, "fp4_simulate: ", n, " not a multiple of ", block);
  for (int64_t b = 0; b < n / block; ++b) {
    float* xb = x + b * block;
    float s = fp4_scale_for(block_amax(xb, block));
    for (int i = 0; i < block; ++i) xb[i] = e2m1_to_f32(f32_to_e2m1(std::clamp(xb[i] / s, -kE2m1Max, kE2m1Max))) * s;
  }
}

}  // namespace dsv4::kernels
