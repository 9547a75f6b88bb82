// Internal: the shared key check and the per-ISA body of kernels::fp4_index_dots (false: shape or
// CPU not handled; the caller runs the scalar twin).
#pragma once

#include "kernels/fp4_index.h"

namespace dsv4::kernels::detail {

// The key's smallest block exponent and each block's exponent above it; false when the key is
// outside the exact bounds for `q` (fp4_index.h).
bool fp4_key_shifts(const Fp4IndexQuery& q, const uint8_t* scales, int32_t* min_exp, uint8_t* shifts);
int32_t twice_e2m1(uint8_t code);  // 2 × the E2M1 value: an integer in [−12, 12]

bool fp4_index_dots_avx512(const Fp4IndexQuery& q, const uint8_t* keys, size_t row_bytes, int64_t n, float* dots,
                           uint8_t* ok);

}  // namespace dsv4::kernels::detail
