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
// FP8 with per-block scales, every x row exactly BF16 and prepared in the FP8 slot order
// (linear_avx512.cc: row r at xprep + r·x_stride): output rows [0, n_out) relative to row0, the
// same bits as the row-major kernel. For many x rows (prefill).
void linear_fp8_rows_avx512(const Linear& w, int64_t row0, int64_t n_out, const uint8_t* xprep, int64_t x_stride,
                            int64_t rows, float* y, ThreadPool* pool);
bool linear_rows_avx2(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                      ThreadPool* pool);

}  // namespace dsv4::kernels::detail
