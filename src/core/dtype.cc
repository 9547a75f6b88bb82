#include "core/dtype.h"

#include <cmath>

namespace dsv4 {

namespace {
constexpr float e4m3_value(int b) {
  int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  float mag = 0;
  if (e == 15 && m == 7) return __builtin_nanf("");
  if (e == 0) {
    mag = float(m) / 8.0f / 64.0f;  // subnormal: m/8 · 2^-6
  } else {
    mag = (1.0f + float(m) / 8.0f);
    for (int i = 7; i < e; ++i) mag *= 2.0f;
    for (int i = e; i < 7; ++i) mag /= 2.0f;
  }
  return s ? -mag : mag;
}
}  // namespace

const float kE4m3Table[256] = {
#define R(b) e4m3_value(b)
#define R8(b) R(b), R(b + 1), R(b + 2), R(b + 3), R(b + 4), R(b + 5), R(b + 6), R(b + 7)
#define R64(b) R8(b), R8(b + 8), R8(b + 16), R8(b + 24), R8(b + 32), R8(b + 40), R8(b + 48), R8(b + 56)
    R64(0), R64(64), R64(128), R64(192)
#undef R64
#undef R8
#undef R
};

const float kE2m1Table[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

uint8_t f32_to_e4m3(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint8_t sign = uint8_t((u >> 24) & 0x80);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7f;                  // NaN
  if (a >= 0x43e00000u) return sign | 0x7e;           // ≥ 448 (incl. inf): saturate
  if (a < 0x3c800000u) {                              // < 2^-6: subnormal grid of 2^-9
    // Exact: value·2^9 rounded to nearest even integer m in [0, 8]; 8 becomes 2^-6 (e=1, m=0).
    float v = std::bit_cast<float>(a) * 512.0f;
    float r = std::nearbyint(v);  // default rounding mode: nearest even
    return sign | uint8_t(int(r));
  }
  // Normal: keep 3 mantissa bits of the F32, RNE on the 20 dropped bits.
  uint32_t e = (a >> 23) - 127 + 7;  // 1..15
  uint32_t mant = a & 0x7fffff;
  uint32_t q = (e << 3) | (mant >> 20);
  uint32_t rest = mant & 0xfffff;
  if (rest > 0x80000u || (rest == 0x80000u && (q & 1))) ++q;
  if (q > 0x7e) q = 0x7e;  // a round-up into 0x7f (NaN) saturates to 448
  return sign | uint8_t(q);
}

uint8_t f32_to_e2m1(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint8_t sign = uint8_t((u >> 28) & 0x8);
  float a = std::fabs(f);
  if (std::isnan(f)) return 0x7;  // no NaN in E2M1: saturate (never reached by the kernels)
  // Midpoints between grid values; at a tie pick the even code (codes 0,2,4,6 have even
  // mantissa bit: 0, 1, 2, 4).
  static constexpr float grid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  uint8_t code = 7;
  for (uint8_t c = 0; c < 7; ++c) {
    float mid = 0.5f * (grid[c] + grid[c + 1]);
    if (a < mid || (a == mid && (c & 1) == 0)) {
      code = c;
      break;
    }
  }
  return sign | code;
}

float f16_to_f32(uint16_t h) {
  uint32_t s = uint32_t(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3ff;
  if (e == 31) return std::bit_cast<float>(s | 0x7f800000u | (m << 13));
  if (e == 0) {
    float v = std::ldexp(float(m), -24);
    return s ? -v : v;
  }
  return std::bit_cast<float>(s | ((e - 15 + 127) << 23) | (m << 13));
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::F8_E4M3: case DType::F8_E8M0: case DType::I8: case DType::U8: return 1;
    case DType::I64: return 8;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E8M0: return "F8_E8M0";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

bool parse_dtype(std::string_view s, DType* out) {
  static constexpr DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E8M0,
                                  DType::I8, DType::U8, DType::I32, DType::I64};
  for (DType t : all)
    if (dtype_name(t) == s) { *out = t; return true; }
  return false;
}

}  // namespace dsv4
