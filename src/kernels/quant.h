// Activation quantization exactly as the official kernels do it (spec §3.5–§3.6).
//
// * FP8 (`act_quant`): per block of `block` elements, amax = max(max|x|, 1e-4),
//   s = 2^ceil(log2(amax·(1/448))), q = e4m3_RNE(clamp(x/s, ±448)).
// * FP4 (`fp4_act_quant`): amax floor 6·2^-126, s = 2^ceil(log2(amax·(1/6))),
//   q = e2m1_RNE(clamp(x/s, ±6)).
// The "simulate" forms write q·s back in place (exact in F32): the input quantization of
// FP8/FP4 GEMMs and the reference's QAT round trips of KV and indexer vectors.
#pragma once

#include <cstdint>

namespace dsv4::kernels {

// x: n elements (n % block == 0). Codes [n] and UE8M0 scales [n/block] out.
void fp8_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales);
void fp4_quantize(const float* x, int64_t n, int block, uint8_t* codes, uint8_t* scales);

// In place: x ← q·s.
void fp8_simulate(float* x, int64_t n, int block);
void fp4_simulate(float* x, int64_t n, int block);

// The power-of-two scales alone (tests against numerics.safetensors).
float fp8_scale_for(float amax);
float fp4_scale_for(float amax);

}  // namespace dsv4::kernels
