// The scalar reference of kernels::linear: one output element at a time, in column order, with
// the official kernels' two-level accumulation (each scale block summed in F32, then scaled).
// It is the DSV4_ISA=scalar target and the twin every SIMD kernel is tested against.
#pragma once

#include <cstdint>

#include "kernels/linear.h"

namespace dsv4::kernels::reference {

// Same contract as kernels::linear_rows, single-threaded.
void linear_rows(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y);

}  // namespace dsv4::kernels::reference
