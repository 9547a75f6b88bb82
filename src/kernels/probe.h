// Measured limits of this machine, for `dsv4 bench`: DRAM read bandwidth and the arithmetic
// peaks of the dot-product instructions the linear kernels use, on the active ISA.
#pragma once

#include <cstddef>

namespace dsv4 {
class ThreadPool;
namespace kernels {

// GB/s of reading a fresh `bytes` buffer (≫ last-level cache) with every pool thread, each
// thread reading its slice as 4 interleaved streams (one stream per core does not saturate
// DRAM here). Median of `reps` timed passes after one untimed pass.
double measure_read_bandwidth(ThreadPool* pool, size_t bytes, int reps);

// GFLOP/s of back-to-back independent dot-product instructions on every pool thread, the best
// of several loop shapes (numbers of accumulator chains): with bf16, vdpbf16ps on AVX-512 BF16
// (64 FLOP per instruction), else the F32 arithmetic the active ISA's kernels use — FMA on
// AVX2 / AVX-512 F (2 FLOP per lane), SSE2 mul + add for the scalar build (2 FLOP per lane).
// bf16 = false measures the F32 peak.
double measure_dot_peak(ThreadPool* pool, bool bf16);

// What measure_dot_peak(pool, bf16) measures on the active ISA, e.g. "f32 fma (AVX2)".
const char* dot_peak_kind(bool bf16);

}  // namespace kernels
}  // namespace dsv4
