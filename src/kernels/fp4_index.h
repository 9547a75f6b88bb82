// The indexer's q·k scoring straight from FP4 codes (reference numerics, spec §4.4.5).
//
// Queries and indexer keys are both on the FP4 grid: per block of 32 an E2M1 value a (twice it,
// 2a, is an integer in [−12, 12]) times a power-of-two UE8M0 scale. With E = the smallest block
// exponent of the query head plus that of the key, minus 2, every product q_e·k_e is an integer
// multiple of 2^E, so
//   q·k = 2^E · T,   T = Σ_e (2a_e · 2^(eq_b − min eq)) · (2b_e · 2^(ek_b − min ek))   (an integer).
// When the block exponents of the head and of the key each span at most 3 (kMaxSpread) and E lies
// in [−126, 100], |T| ≤ 128·96·96 < 2^24 per 128 dims: T, every partial sum of the F32 products
// and the result are exact in F32. The F32 path (decode both rows, kernels::dot, any summation
// order, with or without FMA) then returns exactly 2^E·T, bit for bit — the value computed here
// with int8 dot products (AVX-512 VNNI) or in scalar integers (the twin). Keys or queries outside
// those bounds are flagged, and the caller scores them on the F32 path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/arena.h"

namespace dsv4::kernels {

constexpr int kFp4IndexMaxSpread = 3;  // largest block-exponent span folded into the int8 operands

// One token's indexer queries, prepared once for all keys it scores.
struct Fp4IndexQuery {
  int heads = 0;
  int64_t dim = 0;           // a multiple of 128
  Scratch<int8_t> q;         // [heads, dim]: per 128 dims, the 64 even elements then the 64 odd ones,
                             // each 2a · 2^(eq_b − min eq) (|·| ≤ 96)
  Scratch<int32_t> q_sum;    // [heads] Σ of the head's q (the key offset's correction)
  Scratch<int32_t> min_exp;  // [heads] smallest block exponent (unbiased)
  int32_t lo_exp = 0, hi_exp = 0;  // min and max of min_exp over the heads
};

// Prepares q ([heads, dim] F32). False when the row is not exactly on the FP4 grid (per-32 E2M1 ×
// UE8M0), dim is not a multiple of 128, or a head's block exponents span more than kMaxSpread:
// the caller then scores the whole row on the F32 path.
bool fp4_index_prepare(const float* q, int heads, int64_t dim, Fp4IndexQuery* out);

// For keys j < n (packed FP4 rows as KvRows kFp4 stores them: [dim/2] code pairs, [dim/32]
// UE8M0 scales, `row_bytes` apart): dots[h·n + j] = q_h · key_j exactly, and ok[j] = 1; or
// ok[j] = 0 (dots of key j unspecified) when key j is outside the exact bounds.
void fp4_index_dots(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n, float* dots,
                    uint8_t* ok);
// The scalar twin (the same integers T, summed in plain integer arithmetic).
void fp4_index_dots_reference(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n,
                              float* dots, uint8_t* ok);

}  // namespace dsv4::kernels
