// Activation quantization (kernels/quant.h): the SIMD round trip of fp8_simulate gives the same
// bits as the scalar encoder on every ISA, including every rounding midpoint, the subnormal grid,
// signed zeros, blocks under the amax floor and blocks holding a NaN.
#include "kernels/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/isa.h"

namespace dsv4::kernels {
namespace {

// Blocks of `block` values whose first element fixes the scale at 2^k; the others are midpoints
// between neighbouring E4M3 values (ties), values just off them, and random values.
std::vector<float> crafted(int block, std::mt19937& rng) {
  std::vector<float> grid;  // positive E4M3 values in increasing order
  for (int c = 0; c < 0x7f; ++c) grid.push_back(e4m3_to_f32(uint8_t(c)));
  std::vector<float> x;
  std::uniform_int_distribution<int> pick(0, int(grid.size()) - 2), kpick(-30, 20);
  std::normal_distribution<float> nd(0, 1);
  for (int b = 0; b < 400; ++b) {
    const float s = std::ldexp(1.0f, kpick(rng));
    x.push_back((b % 2 ? -448.0f : 448.0f) * s);
    for (int i = 1; i < block; ++i) {
      const int j = pick(rng);
      float v = 0.5f * (grid[size_t(j)] + grid[size_t(j + 1)]);  // exact midpoint (a tie)
      switch (i % 5) {
        case 1: v = std::nextafter(v, 0.0f); break;
        case 2: v = std::nextafter(v, 1e9f); break;
        case 3: v = nd(rng) * grid[size_t(j)]; break;
        default: break;
      }
      if (i % 7 == 0) v = (i % 14 == 0) ? 0.0f : -0.0f;
      x.push_back((rng() & 1 ? -v : v) * s);
    }
  }
  for (int i = 0; i < block; ++i) x.push_back(1e-7f * float(i));  // under the 1e-4 amax floor
  std::vector<float> nan_block(size_t(block), 1.0f);
  nan_block[3] = std::numeric_limits<float>::quiet_NaN();
  x.insert(x.end(), nan_block.begin(), nan_block.end());
  return x;
}

TEST(Quant, Fp8SimulateIsTheSameOnEveryIsa) {
  std::mt19937 rng(17);
  for (int block : {64, 128}) {
    const std::vector<float> x = crafted(block, rng);
    set_isa(Isa::kScalar);
    std::vector<float> want = x;
    fp8_simulate(want.data(), int64_t(want.size()), block);
    for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
      if (!isa_supported(isa)) continue;
      set_isa(isa);
      std::vector<float> got = x;
      fp8_simulate(got.data(), int64_t(got.size()), block);
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
            << isa_name(isa) << " block " << block << " element " << i << ": x " << x[i] << " -> " << got[i]
            << ", scalar " << want[i];
    }
  }
  set_isa(Isa::kScalar);
  set_isa(isa_supported(Isa::kAvx512) ? Isa::kAvx512 : isa_supported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kScalar);
}

}  // namespace
}  // namespace dsv4::kernels
