// Compact KV rows (model/kv_rows.h): rows that reference numerics has QAT-rounded come back
// bit for bit from their FP8 / FP4 storage, and rows that were not rounded are refused.
#include "model/kv_rows.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/quant.h"
#include "model/state.h"

namespace dsv4 {
namespace {

// Rows spanning many magnitudes, with zeros, negative zeros and blocks under the amax floors.
std::vector<float> random_row(std::mt19937& rng, int64_t dim) {
  std::vector<float> r(static_cast<size_t>(dim));
  std::normal_distribution<float> n(0.0f, 1.0f);
  const float mag = std::ldexp(1.0f, std::uniform_int_distribution<int>(-40, 20)(rng));
  for (float& v : r) v = n(rng) * mag;
  r[3] = 0.0f;
  r[5] = -0.0f;
  for (int64_t k = 32; k < 64 && k < dim; ++k) r[size_t(k)] *= 1e-30f;  // a block under both floors
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(KvRows, RowBytes) {
  EXPECT_EQ(KvRows::row_bytes_for(KvFormat::kFp8Nope, 512, 64), 448u + 7u + 64u * 4u);
  EXPECT_EQ(KvRows::row_bytes_for(KvFormat::kFp4, 128, 0), 64u + 4u);
  EXPECT_EQ(KvRows::row_bytes_for(KvFormat::kF32, 512, 0), 2048u);
}

TEST(KvRows, Fp8RowsRoundTripExactly) {
  std::mt19937 rng(7);
  KvRows rows(KvFormat::kFp8Nope, 512, 64);
  std::vector<std::vector<float>> kept;
  for (int i = 0; i < 200; ++i) {
    std::vector<float> r = random_row(rng, 512);
    kernels::fp8_simulate(r.data(), 448, 64);  // what kv_path / the compressor do
    rows.push_back(r.data());
    kept.push_back(r);
  }
  ASSERT_EQ(rows.size(), 200);
  std::vector<float> out(512);
  for (int i = 0; i < 200; ++i) {
    rows.get(i, out.data());
    EXPECT_TRUE(same_bits(out, kept[size_t(i)])) << "row " << i;
  }
  // Overwriting a slot (the window ring) and truncating (rollback) keep the other rows.
  rows.set(10, kept[0].data());
  rows.get(10, out.data());
  EXPECT_TRUE(same_bits(out, kept[0]));
  rows.resize(50);
  ASSERT_EQ(rows.size(), 50);
  rows.get(49, out.data());
  EXPECT_TRUE(same_bits(out, kept[49]));
  rows.resize(52);  // new rows are zeros
  rows.get(51, out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(KvRows, Fp4RowsRoundTripExactly) {
  std::mt19937 rng(11);
  for (int64_t dim : {64, 128}) {
    KvRows rows(KvFormat::kFp4, dim);
    std::vector<float> out(static_cast<size_t>(dim));
    for (int i = 0; i < 200; ++i) {
      std::vector<float> r = random_row(rng, dim);
      kernels::fp4_simulate(r.data(), dim, 32);  // the indexer keys' round trip
      rows.push_back(r.data());
      rows.get(i, out.data());
      EXPECT_TRUE(same_bits(out, r)) << "dim " << dim << " row " << i;
    }
  }
}

TEST(KvRows, F32RowsHoldAnything) {
  std::mt19937 rng(3);
  KvRows rows(KvFormat::kF32, 96);
  std::vector<float> r = random_row(rng, 96), out(96);
  rows.push_back(r.data());
  rows.get(0, out.data());
  EXPECT_TRUE(same_bits(out, r));
}

TEST(KvRowsDeathTest, RowOffTheGridIsRefused) {
  std::mt19937 rng(5);
  std::vector<float> r = random_row(rng, 512);  // not FP8-rounded
  KvRows fp8(KvFormat::kFp8Nope, 512, 64);
  EXPECT_DEATH(fp8.push_back(r.data()), "not on its storage grid");
  KvRows fp4(KvFormat::kFp4, 128);
  EXPECT_DEATH(fp4.push_back(r.data()), "not on its storage grid");
}

TEST(KvRows, ReferenceStateIsSmallerPerToken) {
  ModelConfig c;
  c.n_layers = 4;
  c.head_dim = 512;
  c.rope_head_dim = 64;
  c.index_head_dim = 128;
  c.window_size = 128;
  c.compress_ratios = {0, 0, 4, 128, 0};
  double fixed_ref = 0, fixed_plain = 0;
  const double ref = kv_bytes_per_token(c, Numerics::kReference, &fixed_ref);
  const double plain = kv_bytes_per_token(c, Numerics::kPlain, &fixed_plain);
  EXPECT_DOUBLE_EQ(ref, 711.0 / 4 + 68.0 / 4 + 711.0 / 128);
  EXPECT_DOUBLE_EQ(plain, 2048.0 / 4 + 512.0 / 4 + 2048.0 / 128);
  // Rings, plus the pending F32 rows: ratio 4 (main and indexer) two blocks of 4 rows of 2·d,
  // ratio 128 one block of 128 rows of d, each (A, Z).
  EXPECT_DOUBLE_EQ(fixed_ref, 4 * 128 * 711.0 + 2 * 2 * 4 * 1024 * 4.0 + 2 * 2 * 4 * 256 * 4.0 + 2 * 128 * 512 * 4.0);
}

}  // namespace
}  // namespace dsv4
