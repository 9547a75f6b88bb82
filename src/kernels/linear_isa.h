// Internal: the per-ISA bodies of kernels::linear_rows (linear.cc dispatches among them).
//
// Each returns false when it does not handle the shape (`in` not a multiple of its column
// group), and the caller falls back to the scalar reference. Each computes every output row
// with one fixed sequence of operations whatever `rows` is and however the rows are split over
// threads, so results are batch invariant within one ISA.
#pragma once

#include <cstdint>

#include "kernels/linear.h"

namespace dsv4::kernels::detail {

bool linear_rows_avx512(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                        ThreadPool* pool);
// FP4 in 16-row tiles (Linear::tiled): row0 and n_out multiples of 16.
bool linear_rows_fp4_tiled_avx512(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows,
                                  float* y, ThreadPool* pool);
bool linear_rows_avx2(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                      ThreadPool* pool);

}  // namespace dsv4::kernels::detail
