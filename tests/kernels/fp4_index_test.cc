// The indexer's integer FP4 scoring (kernels/fp4_index.h) against the F32 path it replaces:
// decode both FP4 rows to F32 and take kernels::dot. Within the exact bounds every dot must be
// the same float bit for bit (signs of zero aside, which relu maps to the same score), from the
// AVX-512 VNNI body and from the scalar twin; outside them the key or query must be flagged.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/fp4_index.h"
#include "kernels/isa.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace dsv4::kernels {
namespace {

constexpr int kHeads = 64;
constexpr int64_t kDim = 128, kRowBytes = kDim / 2 + kDim / 32;

// A row on the FP4 grid whose 32-blocks have scales 2^(base + [0, spread]) (each block's first
// value sets its amax).
std::vector<float> fp4_row(std::mt19937& rng, int64_t dim, int base, int spread) {
  std::uniform_real_distribution<float> nd(-5.9f, 5.9f);
  std::uniform_int_distribution<int> ex(0, spread);
  std::vector<float> r(static_cast<size_t>(dim));
  for (int64_t b = 0; b < dim / 32; ++b) {
    const float m = std::ldexp(1.0f, base + ex(rng));
    for (int64_t k = b * 32; k < (b + 1) * 32; ++k) r[size_t(k)] = nd(rng) * m;
    r[size_t(b * 32)] = (b % 2 ? -5.9f : 5.9f) * m;
  }
  fp4_simulate(r.data(), dim, 32);
  return r;
}

// Packed as KvRows kFp4 stores it: code pairs (low nibble first), then the UE8M0 scales.
void pack(const std::vector<float>& r, uint8_t* dst) {
  std::vector<uint8_t> codes(r.size());
  fp4_quantize(r.data(), int64_t(r.size()), 32, codes.data(), dst + r.size() / 2);
  for (size_t k = 0; k < r.size(); k += 2) dst[k / 2] = uint8_t(codes[k] | (codes[k + 1] << 4));
}

std::vector<float> unpack(const uint8_t* src, int64_t dim) {
  std::vector<float> r(static_cast<size_t>(dim));
  for (int64_t k = 0; k < dim; ++k) r[size_t(k)] = fp4_packed_at(src, size_t(k)) * e8m0_to_f32(src[dim / 2 + k / 32]);
  return r;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f + 0.0f); }  // +0.0f: −0 → +0

struct Case {
  int q_base, q_spread, k_base, k_spread;
};

class Fp4Index : public ::testing::TestWithParam<Case> {};

TEST_P(Fp4Index, SameBitsAsF32Path) {
  const Case cs = GetParam();
  std::mt19937 rng(7);
  const int64_t n = 301;  // not a multiple of 16 keys
  std::vector<float> q;
  for (int h = 0; h < kHeads; ++h) {
    std::vector<float> r = fp4_row(rng, kDim, cs.q_base, cs.q_spread);
    q.insert(q.end(), r.begin(), r.end());
  }
  std::vector<uint8_t> keys(size_t(n * kRowBytes));
  for (int64_t j = 0; j < n; ++j) pack(fp4_row(rng, kDim, cs.k_base + int(j % 7) - 3, cs.k_spread), keys.data() + j * kRowBytes);

  ArenaScope scope;
  Fp4IndexQuery prepared;
  ASSERT_TRUE(fp4_index_prepare(q.data(), kHeads, kDim, &prepared));
  std::vector<float> twin(size_t(n * kHeads)), simd(size_t(n * kHeads));
  std::vector<uint8_t> ok_twin(static_cast<size_t>(n)), ok_simd(static_cast<size_t>(n));
  fp4_index_dots_reference(prepared, keys.data(), kRowBytes, n, twin.data(), ok_twin.data());
  const Isa saved = active_isa();
  set_isa(isa_supported(Isa::kAvx512) ? Isa::kAvx512 : Isa::kScalar);
  fp4_index_dots(prepared, keys.data(), kRowBytes, n, simd.data(), ok_simd.data());
  set_isa(saved);

  int64_t exact = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* scales = keys.data() + j * kRowBytes + kDim / 2;
    const int spread = *std::max_element(scales, scales + kDim / 32) - *std::min_element(scales, scales + kDim / 32);
    ASSERT_EQ(ok_twin[size_t(j)], ok_simd[size_t(j)]) << "key " << j;
    if (spread > kFp4IndexMaxSpread) {
      EXPECT_FALSE(ok_twin[size_t(j)]) << "key " << j << " spans " << spread;
    }
    if (!ok_twin[size_t(j)]) continue;
    ++exact;
    const std::vector<float> key = unpack(keys.data() + j * kRowBytes, kDim);
    for (int h = 0; h < kHeads; ++h) {
      const float f32 = dot(q.data() + h * kDim, key.data(), kDim);
      const size_t at = size_t(h * n + j);
      ASSERT_EQ(bits(twin[at]), bits(f32)) << "key " << j << " head " << h << ": " << twin[at] << " vs " << f32;
      ASSERT_EQ(bits(simd[at]), bits(f32)) << "key " << j << " head " << h << ": " << simd[at] << " vs " << f32;
    }
  }
  if (cs.k_spread <= kFp4IndexMaxSpread && cs.q_base > -100) {
    EXPECT_EQ(exact, n);
  } else {
    EXPECT_LT(exact, n);
  }
}

INSTANTIATE_TEST_SUITE_P(Scales, Fp4Index,
                         ::testing::Values(Case{0, 0, 0, 0}, Case{0, 3, -2, 3}, Case{5, 2, -8, 3},
                                           Case{-3, 1, 2, 6},      // wide keys: some flagged
                                           Case{-115, 0, -10, 1},  // 2^E near the normal limit: flagged
                                           Case{20, 3, 20, 3}));

TEST(Fp4IndexPrepare, RefusesRowsOffTheGridOrTooWide) {
  std::mt19937 rng(3);
  std::vector<float> q;
  for (int h = 0; h < 16; ++h) {
    std::vector<float> r = fp4_row(rng, kDim, 0, 2);
    q.insert(q.end(), r.begin(), r.end());
  }
  ArenaScope scope;
  Fp4IndexQuery p;
  EXPECT_TRUE(fp4_index_prepare(q.data(), 16, kDim, &p));
  EXPECT_FALSE(fp4_index_prepare(q.data(), 16, 64, &p));  // not a multiple of 128 dims
  std::vector<float> off = q;
  off[5] = std::nextafter(off[5], 100.0f);
  EXPECT_FALSE(fp4_index_prepare(off.data(), 16, kDim, &p));
  std::vector<float> wide = fp4_row(rng, kDim, 0, 0);
  for (int64_t k = 96; k < 128; ++k) wide[size_t(k)] *= 256.0f;  // one block 2^8 above the others
  EXPECT_FALSE(fp4_index_prepare(wide.data(), 1, kDim, &p));
}

// The indexer's per-candidate sum over heads (vectorized over candidates) against the loop it
// replaced: per candidate, s += w_h · max(d, 0) for h in order, bit for bit.
TEST(ReluWeightedSum, SameBitsAsPerCandidateLoop) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  const int heads = 64;
  const int64_t m = 203;
  std::vector<float> d(size_t(heads * m)), w(static_cast<size_t>(heads)), got(static_cast<size_t>(m));
  for (auto& v : d) v = nd(rng) * 100.0f;
  for (auto& v : w) v = nd(rng);
  d[3] = -0.0f, d[size_t(m + 3)] = 0.0f;
  relu_weighted_sum(d.data(), heads, m, w.data(), got.data());
  for (int64_t j = 0; j < m; ++j) {
    float s = 0;
    for (int h = 0; h < heads; ++h) {
      const float p = w[size_t(h)] * std::max(d[size_t(h * m + j)], 0.0f);
      s = s + p;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(got[size_t(j)]), std::bit_cast<uint32_t>(s)) << "candidate " << j;
  }
}

}  // namespace
}  // namespace dsv4::kernels
