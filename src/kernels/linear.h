// y = x·Wᵀ over weights in their stored formats; the kernels dequantize on the fly.
//
// Formats (spec §3.4): FP8 E4M3 with one UE8M0 scale per 128×128 block (out, in); FP4 E2M1
// packed in pairs (low nibble = even column) with one UE8M0 scale per 1×32 block along `in`;
// BF16; F32. Activations are F32. Activation quantization (the reference's act_quant before
// FP8/FP4 GEMMs) is the caller's decision (numerics mode), applied to `x` before the call.
#pragma once

#include <cstdint>

namespace dsv4 {
class ThreadPool;

enum class WeightFormat : uint8_t { kF32, kBF16, kFP8, kFP4 };

// A weight matrix [out, in] as stored, plus its block scales (null for F32/BF16).
struct Linear {
  WeightFormat format = WeightFormat::kF32;
  int64_t out = 0;                 // rows of W
  int64_t in = 0;                  // columns of W (logical; FP4 stores in/2 bytes per row)
  const uint8_t* weight = nullptr; // [out, in] elements of `format`
  const uint8_t* scale = nullptr;  // FP8: [ceil(out/128), ceil(in/128)]; FP4: [out, in/32] UE8M0
  // FP8 that the reference dequantizes before use (wo_a, spec §3.4): its product is one sum over
  // all of K, not the per-128-block sums of an FP8 GEMM, so kernels may fold the block scales
  // into the weights and keep their vector lanes apart across blocks.
  bool dequantized = false;
  // FP4 in 16-row tiles (tile_fp4) instead of row-major; see there.
  bool tiled = false;

  // FP4: the E2M1 code of W[n, k], and where the scale of W[n, 32b .. 32b+31] is.
  uint8_t fp4_code(int64_t n, int64_t k) const {
    if (!tiled) {
      const uint8_t byte = weight[n * (in / 2) + k / 2];
      return k % 2 ? byte >> 4 : byte & 15;
    }
    const int64_t word = ((n / 16) * (in / 8) + k / 8) * 16 + n % 16;  // 4 bytes: 8 columns
    const int nibble = k % 2 ? 4 + (k % 8) / 2 : (k % 8) / 2;
    const uint8_t byte = weight[word * 4 + nibble / 2];
    return nibble % 2 ? byte >> 4 : byte & 15;
  }
  int64_t fp4_scale(int64_t n, int64_t b) const {
    return tiled ? ((n / 16) * (in / 32) + b) * 16 + n % 16 : n * (in / 32) + b;
  }

  bool empty() const { return weight == nullptr; }
};

namespace kernels {

// y[r, 0:out] = Σ_k x[r, k] · W[out, k] for r < rows; x: [rows, in] F32, y: [rows, out] F32.
// Each output row's value is independent of `rows` (batch invariance). `pool` may be null.
void linear(const Linear& w, const float* x, int64_t rows, float* y, ThreadPool* pool);

// The same restricted to weight rows [row0, row0 + n_out): y is [rows, n_out]. Used by the
// grouped output projection, whose groups need not align with 128-row scale blocks.
void linear_rows(const Linear& w, int64_t row0, int64_t n_out, const float* x, int64_t rows, float* y,
                 ThreadPool* pool);

// The same product summed strictly in column order (the scalar reference's order), threaded over
// output rows. For small products whose outputs are compared against each other — router
// logits — where a last-bit difference can flip a near-tie of an expert choice against the
// official outputs.
void linear_sequential(const Linear& w, const float* x, int64_t rows, float* y, ThreadPool* pool);

// FP4 weights in 16-row tiles, the layout the AVX-512 kernel reads one register per column
// pair from (one lane per row, no horizontal sums): per tile of 16 rows and per 8 columns, 64
// bytes — row ℓ's four bytes in 32-bit word ℓ, columns 2q and 2q+1 in nibbles q and q+4, so a
// 16-bit shift by 4q and one table lookup per word give pair q. Scales: per tile and 32-column
// block, the 16 rows' bytes together. Rearranges `weight` and `scale` of a row-major FP4 matrix
// in place; the caller then sets Linear::tiled. Needs can_tile_fp4. Runs the active ISA's tiler
// (AVX-512: fp4_tile_avx512.cc, the same bytes as the scalar twin, 2-3x as fast).
bool can_tile_fp4(const Linear& w);
void tile_fp4(uint8_t* weight, uint8_t* scale, int64_t out, int64_t in);

// Bytes of weight rows [0, n_out) as stored, scales included (n_out < 0: all rows).
int64_t weight_bytes(const Linear& w, int64_t n_out = -1);

// Dequantized row `r` of W as F32 (embedding lookups, tests): out has `in` elements.
void dequant_row(const Linear& w, int64_t r, float* out);

}  // namespace kernels
}  // namespace dsv4
