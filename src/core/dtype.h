// The number formats of DeepSeek-V4 checkpoints and activations (spec §3), bit-exactly.
//
// Decoders are exact. Encoders round to nearest, ties to even, and saturate, which is what the
// official CUDA kernels do (`__nv_fp8_e4m3(float)`, the e2m1 conversion); the kernels clamp
// before converting, so saturation never changes a reference result.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4 {

// Element types as they appear in safetensors headers.
enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, F8_E8M0, I8, U8, I32, I64 };

// Bytes per element (I8 holding packed FP4 pairs counts as 1: it is a byte tensor on disk).
size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; returns false for anything we do not read.
bool parse_dtype(std::string_view s, DType* out);

// ---- BF16 -------------------------------------------------------------------------------
inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- F16 (IEEE half; only read, for completeness of the loader) ---------------------------
float f16_to_f32(uint16_t h);

// ---- FP8 E4M3fn: bias 7, no infinities, 0x7F/0xFF = NaN, max 448 --------------------------
extern const float kE4m3Table[256];
inline float e4m3_to_f32(uint8_t b) { return kE4m3Table[b]; }
uint8_t f32_to_e4m3(float f);  // RNE, saturating to ±448; NaN → 0x7F
constexpr float kE4m3Max = 448.0f;

// ---- FP4 E2M1: codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6; bit 3 = sign -------------------------
extern const float kE2m1Table[16];
inline float e2m1_to_f32(uint8_t code) { return kE2m1Table[code & 15]; }
uint8_t f32_to_e2m1(float f);  // RNE, saturating to ±6
constexpr float kE2m1Max = 6.0f;
// Packed pairs: element 2j is the low nibble of byte j, element 2j+1 the high nibble.
inline float fp4_packed_at(const uint8_t* bytes, size_t k) {
  return e2m1_to_f32(uint8_t(bytes[k >> 1] >> ((k & 1) * 4)));
}

// ---- UE8M0: 2^(b-127); b = 0 is 2^-127 (a subnormal, not zero); 255 = NaN -------------------
inline float e8m0_to_f32(uint8_t b) {
  if (b == 0) return std::bit_cast<float>(0x00400000u);
  if (b == 255) return std::bit_cast<float>(0x7fc00000u);
  return std::bit_cast<float>(uint32_t(b) << 23);
}

// 2^ceil(log2(y)) for y > 0 from the F32 bits of y: exponent, plus one if any mantissa bit is
// set ("fast_round_scale" in the official kernels; exact, no libm). Normal y only, which the
// amax floors of act_quant guarantee.
inline float pow2_ceil(float y) {
  uint32_t u = std::bit_cast<uint32_t>(y);
  int32_t e = int32_t((u >> 23) & 0xff) - 127 + ((u & 0x7fffff) != 0 ? 1 : 0);
  return std::bit_cast<float>(uint32_t(e + 127) << 23);
}
// The same scale as a UE8M0 byte.
inline uint8_t pow2_ceil_e8m0(float y) {
  uint32_t u = std::bit_cast<uint32_t>(y);
  return uint8_t(((u >> 23) & 0xff) + ((u & 0x7fffff) != 0 ? 1 : 0));
}

}  // namespace dsv4
