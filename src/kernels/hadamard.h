// Walsh–Hadamard rotation of the indexer (the reference's `rotate_activation`):
// y = H·x / sqrt(n), Sylvester order H[i][k] = (−1)^popcount(i & k), n a power of two. F32.
#pragma once

#include <cstdint>

namespace dsv4::kernels {

void hadamard_inplace(float* x, int64_t n);

}  // namespace dsv4::kernels
