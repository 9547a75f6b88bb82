// Where the numerics mode touches the model: the input of every FP8/FP4 linear.
#pragma once

#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "kernels/quant.h"
#include "model/config.h"

namespace dsv4 {

// The input of an FP8/FP4 linear: each row act_quant-ed in 128-blocks (reference numerics)
// or unchanged (plain). x: [rows, cols].
inline Scratch<float> gemm_input(const float* x, int64_t rows, int64_t cols, Numerics numerics) {
  Scratch<float> v(x, x + rows * cols);
  if (numerics == Numerics::kReference)
    for (int64_t r = 0; r < rows; ++r) kernels::fp8_simulate(v.data() + r * cols, cols, 128);
  return v;
}

}  // namespace dsv4
