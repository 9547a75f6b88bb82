// Internal: the per-ISA bodies of kernels::tile_fp4 (kernels/linear.h). The scalar one in
// linear.cc is their twin: every body gives the same bytes.
#pragma once

#include <cstdint>

namespace dsv4::kernels::detail {

// tile_fp4 with AVX-512 (F, BW, VBMI): a byte-exact twin of the scalar rearrangement.
void tile_fp4_avx512(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in);

}  // namespace dsv4::kernels::detail
