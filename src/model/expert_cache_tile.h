// The expert cache's FP4 tiling of experts as they arrive from disk: the same bytes as
// kernels::tile_fp4 (tested byte for byte), faster where AVX-512 runs.
//
// Why here: kernels::tile_fp4 rearranges one 32-bit word at a time, which suits a load-time pass
// but cost ~9 ms per 12.76 MB expert when every decoded token reads ~20 of them (measured on a
// real-width flash stack, README "Models larger than memory": 175 ms of a 370 ms step, on the
// 2-core machine whose cores the forward also needs). A 16 × 16 word transpose in registers does
// it in a fraction of that.
#pragma once

#include <cstdint>

namespace dsv4 {

// kernels::tile_fp4(weight, scale, out, in), bit-identical; the fast path needs AVX-512 at run
// time and rows of a multiple of 64 bytes (in % 128 == 0), else it calls kernels::tile_fp4.
void tile_fp4_streamed(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in);

}  // namespace dsv4
