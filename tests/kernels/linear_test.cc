// Every compiled SIMD linear kernel against its scalar twin (kernels/reference), on every ISA
// this CPU supports: all four weight formats, BF16-exact (act-quantized) and arbitrary F32
// activations, E4M3 subnormals, odd row counts and row offsets; plus batch and thread-count
// invariance (bit equality), which speculative verification and server batching rely on.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/linear.h"
#include "kernels/quant.h"
#include "kernels/reference/linear_ref.h"

namespace dsv4::kernels {
namespace {

struct Matrix {
  Linear lin;
  std::vector<uint8_t> w, s;
};

Matrix make(WeightFormat f, int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  Matrix m;
  m.lin.format = f;
  m.lin.out = out;
  m.lin.in = in;
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  switch (f) {
    case WeightFormat::kF32:
      m.w.resize(size_t(out * in * 4));
      for (int64_t k = 0; k < out * in; ++k) {
        float v = nd(rng);
        std::memcpy(m.w.data() + 4 * k, &v, 4);
      }
      break;
    case WeightFormat::kBF16:
      m.w.resize(size_t(out * in * 2));
      for (int64_t k = 0; k < out * in; ++k) {
        uint16_t v = f32_to_bf16(nd(rng));
        std::memcpy(m.w.data() + 2 * k, &v, 2);
      }
      break;
    case WeightFormat::kFP8:
      m.w.resize(size_t(out * in));
      for (auto& b : m.w) {
        b = uint8_t(byte(rng));
        if ((b & 0x7f) == 0x7f) b ^= 1;  // no NaN codes (real checkpoints have none)
      }
      for (int i = 0; i < 64; ++i) m.w[size_t(byte(rng)) % m.w.size()] = uint8_t(byte(rng) & 0x87);  // subnormals
      m.s.resize(size_t(((out + 127) / 128) * ((in + 127) / 128)));
      for (auto& b : m.s) b = uint8_t(120 + byte(rng) % 10);
      m.s[1] = 0;  // 2^-127, the one subnormal scale
      break;
    case WeightFormat::kFP4:
      m.w.resize(size_t(out * in / 2));
      for (auto& b : m.w) b = uint8_t(byte(rng));
      m.s.resize(size_t(out * in / 32));
      for (auto& b : m.s) b = uint8_t(120 + byte(rng) % 10);
      // 2^-127 (the subnormal scale) in a few rows: those take the kernels' exact-scale path.
      for (int i = 0; i < 3; ++i) m.s[size_t(byte(rng)) * 97 % m.s.size()] = 0;
      break;
  }
  m.lin.weight = m.w.data();
  m.lin.scale = m.s.empty() ? nullptr : m.s.data();
  return m;
}

// Rows alternate between BF16-exact (FP8-simulated, as reference numerics feeds FP8/FP4
// linears) and arbitrary F32, so both kernel paths and their mixing in one call are covered.
std::vector<float> activations(int64_t rows, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(rows * in));
  for (auto& v : x) v = nd(rng);
  for (int64_t r = 0; r < rows; r += 2) fp8_simulate(x.data() + r * in, in, 128);
  return x;
}

std::vector<Isa> isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(i)) v.push_back(i);
  return v;
}

std::string FormatName(const ::testing::TestParamInfo<WeightFormat>& p) {
  static const char* const names[] = {"F32", "BF16", "FP8", "FP4"};
  return names[int(p.param)];
}

class LinearKernels : public ::testing::TestWithParam<WeightFormat> {
 protected:
  void TearDown() override { set_isa(saved_); }
  Isa saved_ = active_isa();
};

// Every compiled ISA against the scalar twin, with batch and thread-count invariance.
void check_kernels(const Matrix& m, int64_t rows, int64_t row0, int64_t n_out, const std::vector<float>& x) {
  const WeightFormat f = m.lin.format;
  const int64_t in = m.lin.in;
  std::vector<float> ref(size_t(rows * n_out));
  reference::linear_rows(m.lin, row0, n_out, x.data(), rows, ref.data());
  // Tolerance: the F32 rounding of sums in another order, relative to Σ|w·x| of the row.
  std::vector<float> mag(size_t(rows * n_out));
  {
    std::vector<float> wabs(static_cast<size_t>(in)), xa(x.size());
    for (size_t k = 0; k < x.size(); ++k) xa[k] = std::fabs(x[k]);
    for (int64_t i = 0; i < n_out; ++i) {
      dequant_row(m.lin, row0 + i, wabs.data());
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += std::fabs(wabs[size_t(k)]) * xa[size_t(r * in + k)];
        mag[size_t(r * n_out + i)] = float(s);
      }
    }
  }
  ThreadPool pool(3);
  ASSERT_EQ(x.size(), size_t(rows * in));
  for (Isa isa : isas()) {
    set_isa(isa);
    SCOPED_TRACE(std::string(isa_name(isa)));
    std::vector<float> all(size_t(rows * n_out)), threaded(all.size());
    linear_rows(m.lin, row0, n_out, x.data(), rows, all.data(), nullptr);
    linear_rows(m.lin, row0, n_out, x.data(), rows, threaded.data(), &pool);
    for (int64_t r = 0; r + 1 < rows; r += 2) {  // pairs: the 2-row register path
      std::vector<float> two(size_t(2 * n_out));
      linear_rows(m.lin, row0, n_out, x.data() + r * in, 2, two.data(), &pool);
      for (int64_t k = 0; k < 2 * n_out; ++k)
        ASSERT_EQ(std::bit_cast<uint32_t>(two[size_t(k)]), std::bit_cast<uint32_t>(all[size_t(r * n_out + k)]))
            << "pair at row " << r << ", element " << k;
    }
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> one(static_cast<size_t>(n_out));
      linear_rows(m.lin, row0, n_out, x.data() + r * in, 1, one.data(), &pool);
      for (int64_t i = 0; i < n_out; ++i) {
        const size_t k = size_t(r * n_out + i);
        ASSERT_EQ(std::bit_cast<uint32_t>(one[size_t(i)]), std::bit_cast<uint32_t>(all[k])) << "row " << r << " out " << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(threaded[k]), std::bit_cast<uint32_t>(all[k])) << "row " << r << " out " << i;
        ASSERT_NEAR(all[k], ref[k], 1e-5 * mag[k] + 1e-30) << "row " << r << " out " << i;
        if (isa == Isa::kAvx2 && f == WeightFormat::kFP8) {  // that kernel keeps the twin's order
          ASSERT_EQ(std::bit_cast<uint32_t>(all[k]), std::bit_cast<uint32_t>(ref[k])) << "row " << r << " out " << i;
        }
      }
    }
  }
}

// Near the edges of the scales' folding range: body(base, xs) on every ISA for scale bytes drawn
// from base .. base + 4 and activations scaled by 2^xs, each pair traced.
template <class Body>
void at_range_edges(std::initializer_list<int> bases, std::initializer_list<int> shifts, Body body) {
  const Isa saved = active_isa();
  for (Isa isa : isas()) {
    set_isa(isa);
    for (int base : bases)
      for (int xs : shifts) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " scale bytes from " + std::to_string(base) + ", x·2^" +
                     std::to_string(xs));
        body(base, xs);
        if (::testing::Test::HasFatalFailure()) break;
      }
    if (::testing::Test::HasFatalFailure()) break;
  }
  set_isa(saved);
}

// Every scale byte drawn from base .. base + 4 (seeded by base).
void scales_from(Matrix* m, int base) {
  std::mt19937 rng{uint32_t(base)};
  for (auto& b : m->s) b = uint8_t(base + int(rng() % 5));
}

// Each of the `rows` rows of x computed alone has the bits it has in `all` (every row at once).
void expect_rows_alone_as_in(const Linear& w, const std::vector<float>& x, int64_t rows, const std::vector<float>& all) {
  const int64_t out = w.out, in = w.in;
  std::vector<float> one(static_cast<size_t>(out));
  for (int64_t r = 0; r < rows; ++r) {
    linear_rows(w, 0, out, x.data() + r * in, 1, one.data(), nullptr);
    for (int64_t i = 0; i < out; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(one[size_t(i)]), std::bit_cast<uint32_t>(all[size_t(r * out + i)]))
          << "row " << r << " out " << i;
  }
}

TEST_P(LinearKernels, MatchReferenceAndAreBatchInvariant) {
  const int64_t out = 261, in = 512, rows = 7;
  Matrix m = make(GetParam(), out, in, 1234);
  check_kernels(m, rows, 3, 250, activations(rows, in, 99));
}

// FP4 in 16-row tiles (how loading puts routed experts for the AVX-512 kernel): the same values
// as row-major, and every ISA's results against the scalar twin with batch and thread-count
// invariance — BF16-exact and F32 rows, 1 to 12 rows per pass.
TEST(LinearTiledFp4, SameValuesAndKernelsMatchReference) {
  const Isa saved = active_isa();
  const int64_t out = 272, in = 512;
  Matrix m = make(WeightFormat::kFP4, out, in, 555);
  Matrix t = m;
  t.lin.weight = t.w.data(), t.lin.scale = t.s.data();
  ASSERT_TRUE(can_tile_fp4(t.lin));
  tile_fp4(t.w.data(), t.s.data(), out, in);
  t.lin.tiled = true;
  std::vector<float> a(static_cast<size_t>(in)), b(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    dequant_row(m.lin, r, a.data());
    dequant_row(t.lin, r, b.data());
    for (int64_t k = 0; k < in; ++k)
      ASSERT_EQ(std::bit_cast<uint32_t>(a[size_t(k)]), std::bit_cast<uint32_t>(b[size_t(k)])) << r << " " << k;
  }
  for (int64_t rows : {5, 7, 30}) {  // 5: three BF16-exact rows, three tiles side by side
    SCOPED_TRACE("rows " + std::to_string(rows));
    check_kernels(t, rows, 16, 224, activations(rows, in, 31));
    check_kernels(t, rows, 0, out, activations(rows, in, 32));
  }
  set_isa(saved);
}

// The tiled FP4 kernel's BF16 rows take a block's scales with vscalefps and an addition instead
// of the multiply-add when no intermediate can leave F32's normal range (decided per call from
// the scales and the rows' exponents). A row must get the same bits either way, at the edges of
// that range (tiny and huge scales and activations): alone and with the other rows (calls that
// may fold), beside a row holding 2^-120 (a call that may not), and against a twin matrix whose
// tiles never fold — one all-zero block of each tile given the scale byte 0 (2^-127, outside
// the folding range), which adds +0 either way.
TEST(LinearTiledFp4, SameBitsWhetherScalesFoldOrNot) {
  const int64_t out = 32, in = 512, rows = 5, zero_block = 3;
  at_range_edges({2, 6, 40, 127, 200, 248}, {-118, -100, -60, 0, 60, 100}, [&](int base, int xs) {
    Matrix m = make(WeightFormat::kFP4, out, in, 77);
    scales_from(&m, base);
    for (int64_t r = 0; r < out; ++r) std::memset(m.w.data() + r * in / 2 + zero_block * 16, 0, 16);
    Matrix never = m;
    for (int64_t r = 0; r < out; ++r) never.s[size_t(r * (in / 32) + zero_block)] = 0;
    for (Matrix* t : {&m, &never}) {
      t->lin.weight = t->w.data(), t->lin.scale = t->s.data();
      tile_fp4(t->w.data(), t->s.data(), out, in);
      t->lin.tiled = true;
    }
    std::vector<float> x = activations(rows + 1, in, 5);
    fp8_simulate(x.data(), (rows + 1) * in, 128);  // every row BF16-exact
    for (auto& v : x) v = std::ldexp(v, xs);
    x[size_t(rows * in)] = std::ldexp(1.0f, -120);  // the last row: no call with it folds
    std::vector<float> mixed(size_t((rows + 1) * out)), all(size_t(rows * out)), twin(all.size());
    linear_rows(m.lin, 0, out, x.data(), rows + 1, mixed.data(), nullptr);
    linear_rows(m.lin, 0, out, x.data(), rows, all.data(), nullptr);
    linear_rows(never.lin, 0, out, x.data(), rows, twin.data(), nullptr);
    for (size_t k = 0; k < all.size(); ++k) {
      ASSERT_EQ(std::bit_cast<uint32_t>(all[k]), std::bit_cast<uint32_t>(twin[k])) << "row " << k / out << " out " << k % out;
      ASSERT_EQ(std::bit_cast<uint32_t>(all[k]), std::bit_cast<uint32_t>(mixed[k])) << "row " << k / out << " out " << k % out;
    }
    expect_rows_alone_as_in(m.lin, x, rows, all);
  });
}

// The AVX-512 tiler against the scalar one, byte for byte, over random bytes (weights and
// scales): rows 16 to 256; rows of one or several 64-byte steps and of partial ones (P % 64 =
// 16, 32, 48); scale rows with and without a tail past 16 columns (B % 16 ≠ 0); expert widths.
TEST(TileFp4, SimdMatchesScalarByteForByte) {
  const Isa saved = active_isa();
  struct Shape {
    int64_t out, in;
  };
  const Shape shapes[] = {{16, 32}, {32, 96}, {48, 224}, {16, 544}, {64, 128}, {256, 512}, {32, 2080},
                          {128, 2048}, {64, 4096}, {16, 7168}};
  if (!isa_supported(Isa::kAvx512)) GTEST_SKIP() << "no AVX-512 on this CPU: only the scalar tiler exists";
  std::mt19937 rng(77);
  for (const Shape& sh : shapes) {
    SCOPED_TRACE(std::to_string(sh.out) + " x " + std::to_string(sh.in));
    std::vector<uint8_t> w(size_t(sh.out * sh.in / 2)), s(size_t(sh.out * sh.in / 32));
    for (auto& b : w) b = uint8_t(rng());
    for (auto& b : s) b = uint8_t(rng());
    std::vector<uint8_t> w_ref = w, s_ref = s;
    set_isa(Isa::kScalar);
    tile_fp4(w_ref.data(), s_ref.data(), sh.out, sh.in);
    set_isa(Isa::kAvx512);
    tile_fp4(w.data(), s.data(), sh.out, sh.in);
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(int(w[i]), int(w_ref[i])) << "weight byte " << i;
    for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(int(s[i]), int(s_ref[i])) << "scale byte " << i;
  }
  set_isa(saved);
}

// FP8 that the reference dequantizes before use (wo_a): with every block scale in the folding
// range (kernels may sum over all of K, scales in the weights), and with one outside it; 7 rows
// half of them F32 (the tile paths), 4, 6 and 8 BF16-exact rows (the few-rows kernel in one
// pass of 4 × 4 or 6 × 2 pairs, and in two), and 3–8 rows all F32 (as wo_a gets them: the
// few-rows kernel with F32 products).
TEST(LinearDequantizedFp8, MatchesReferenceAndIsBatchInvariant) {
  const Isa saved = active_isa();
  const int64_t out = 384, in = 512;
  for (bool foldable : {true, false}) {
    SCOPED_TRACE(foldable ? "foldable scales" : "a subnormal scale");
    Matrix m = make(WeightFormat::kFP8, out, in, 4321);
    m.lin.dequantized = true;
    if (foldable) m.s[1] = 125;
    for (int64_t rows : {7, 4, 6, 8}) {
      SCOPED_TRACE("rows " + std::to_string(rows));
      std::vector<float> x = activations(rows, in, 98);
      if (rows != 7)
        for (int64_t r = 1; r < rows; r += 2) fp8_simulate(x.data() + r * in, in, 128);
      check_kernels(m, rows, 0, out, x);
      check_kernels(m, rows, 131, 200, x);  // blocks cut by the row range
    }
    for (int64_t rows = 3; rows <= 8; ++rows) {
      SCOPED_TRACE("F32 rows " + std::to_string(rows));
      std::mt19937 rng{uint32_t(rows)};
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(size_t(rows * in));
      for (auto& v : x) v = nd(rng);
      check_kernels(m, rows, 0, out, x);
      check_kernels(m, rows, 131, 200, x);
    }
  }
  set_isa(saved);
}

// FP8 with many x rows, all BF16-exact (act-quantized, as in a prefill): the kernel that keeps
// 16 weight rows per register must give every pair the bits of the one- and two-row paths —
// weight tiles cut by 128-row scale blocks and by the row range, a subnormal block scale,
// leftover x rows after the 4-row passes.
TEST(LinearFp8ManyRows, SameBitsAsFewRows) {
  const Isa saved = active_isa();
  const int64_t out = 400, in = 640;
  Matrix m = make(WeightFormat::kFP8, out, in, 2468);
  for (int64_t rows : {16, 23}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    std::vector<float> x = activations(rows, in, 77);
    for (int64_t r = 1; r < rows; r += 2) fp8_simulate(x.data() + r * in, in, 128);
    check_kernels(m, rows, 0, out, x);
    check_kernels(m, rows, 3, 381, x);
  }
  set_isa(saved);
}

// The FP8 ≥ 12-row kernel applies a group's block scale with vscalefps and an addition instead
// of the multiply-add when every scaled group sum is exactly an F32 (decided per call from the
// scales and x's exponents). Near the edges of that condition — tiny and huge scales and
// activations, rows in two 128-row scale blocks — every row must get the bits of the one-row
// kernel, which always multiplies and adds.
TEST(LinearFp8ManyRows, SameBitsWhetherScalesFoldOrNot) {
  const int64_t out = 160, in = 512, rows = 13;
  at_range_edges({1, 6, 40, 127, 200, 250}, {-110, -90, -60, 0, 60, 100}, [&](int base, int xs) {
    Matrix m = make(WeightFormat::kFP8, out, in, 99);
    scales_from(&m, base);
    std::vector<float> x = activations(rows, in, 8);
    fp8_simulate(x.data(), rows * in, 128);  // every row BF16-exact: the many-row kernel
    for (auto& v : x) v = std::ldexp(v, xs);
    std::vector<float> all(size_t(rows * out));
    linear_rows(m.lin, 0, out, x.data(), rows, all.data(), nullptr);
    expect_rows_alone_as_in(m.lin, x, rows, all);
  });
}

// FP8 with 3–9 x rows, all BF16-exact (several sequences' decode steps, a verify forward): the
// kernel that decodes each weight pair once for every x row (4–8 rows) must give each pair the
// bits of the one- and two-row paths — odd row counts (a padding row), weight pairs that straddle
// a 128-row scale block, a lone last weight row, a subnormal block scale; 3 and 9 rows, the paths
// on either side.
TEST(LinearFp8FewRows, SameBitsAsOneRow) {
  const Isa saved = active_isa();
  const int64_t out = 261, in = 512;
  Matrix m = make(WeightFormat::kFP8, out, in, 1357);
  for (int64_t rows = 3; rows <= 9; ++rows) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    std::vector<float> x = activations(rows, in, 55 + uint32_t(rows));
    for (int64_t r = 1; r < rows; r += 2) fp8_simulate(x.data() + r * in, in, 128);
    check_kernels(m, rows, 3, 250, x);
    check_kernels(m, rows, 0, out, x);
  }
  set_isa(saved);
}

// BF16 (the head) with 3–9 x rows (F32, as the head gets them: a verify forward, several
// sequences' decode steps): the kernel that loads each weight half-group once for every x row
// (4–8 rows) must give each pair the bits of the one- and two-row paths — odd row counts (a
// padding row), a lone last weight row; 3 and 9 rows, the paths on either side.
TEST(LinearBf16FewRows, SameBitsAsOneRow) {
  const Isa saved = active_isa();
  const int64_t out = 261, in = 512;
  Matrix m = make(WeightFormat::kBF16, out, in, 2469);
  for (int64_t rows = 3; rows <= 9; ++rows) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    const std::vector<float> x = activations(rows, in, 66 + uint32_t(rows));
    check_kernels(m, rows, 3, 250, x);
    check_kernels(m, rows, 0, out, x);
  }
  set_isa(saved);
}

// BF16 (the head) past the rows that take the 2×8 register tiles: the 4×4 tiles give the same bits.
TEST(LinearBf16ManyRows, SameBitsAsFewRows) {
  const Isa saved = active_isa();
  const int64_t out = 261, in = 512, rows = 17;
  check_kernels(make(WeightFormat::kBF16, out, in, 135), rows, 3, 250, activations(rows, in, 79));
  set_isa(saved);
}

INSTANTIATE_TEST_SUITE_P(Formats, LinearKernels,
                         ::testing::Values(WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kFP8, WeightFormat::kFP4),
                         FormatName);

// FP4 with many x rows folds the block scales into the weights when no intermediate can leave
// F32's normal range (the dot-product instruction flushes subnormals); one or two rows keep the
// multiply. Near that edge — tiny scales, tiny activations, huge ones — every row must still
// have the same bits whichever way it was computed.
TEST(LinearFp4Fold, BatchInvariantAtTheEdgesOfTheNormalRange) {
  const int64_t out = 64, in = 512, rows = 7;
  at_range_edges({2, 6, 40, 127, 200, 248}, {-118, -100, -60, 0, 60, 100}, [&](int base, int xs) {
    Matrix m = make(WeightFormat::kFP4, out, in, 77);
    scales_from(&m, base);
    std::vector<float> x = activations(rows, in, 5);
    for (auto& v : x) v = std::ldexp(v, xs);
    std::vector<float> all(size_t(rows * out));
    linear_rows(m.lin, 0, out, x.data(), rows, all.data(), nullptr);
    expect_rows_alone_as_in(m.lin, x, rows, all);
  });
}

TEST(ThreadPool, CoversRangeOnceInGrainChunks) {
  ThreadPool pool(4);
  for (int64_t n : {1, 5, 16, 17, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      EXPECT_EQ(b % 4, 0);
      for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
    }, 4);
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

}  // namespace
}  // namespace dsv4::kernels
