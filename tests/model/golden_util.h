// Shared pieces of the golden model tests: case discovery, a recording Trace, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/trace.h"
#include "tests/test_util.h"

namespace dsv4::test {

// Where a golden test keeps the weights: DSV4_TEST_RESIDENCY=copy (a ctest variant) copies them,
// which on AVX-512 also puts the routed experts in 16-row tiles (tile_routed_experts), so the
// same comparisons cover that layout and its kernel.
inline Residency test_residency() {
  const char* e = std::getenv("DSV4_TEST_RESIDENCY");
  return e && std::string(e) == "copy" ? Residency::kCopy : Residency::kMap;
}

// Every directory under ../shared/golden with a config.json is a case.
inline std::vector<std::string> golden_cases() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(shared_dir() + "/golden", ec))
    if (std::filesystem::exists(e.path() / "config.json")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  if (out.empty()) out.push_back("none");  // keeps the parameterized suite instantiated; the test skips
  return out;
}

class RecordingTrace : public Trace {
 public:
  std::map<std::string, std::map<int64_t, std::vector<float>>> f;
  std::map<std::string, std::map<int64_t, std::vector<int32_t>>> i;
  void f32(const std::string& name, int64_t pos, const float* d, int64_t n) override {
    f[name][pos].assign(d, d + n);
  }
  void i32(const std::string& name, int64_t pos, const int32_t* d, int64_t n) override {
    i[name][pos].assign(d, d + n);
  }
  void clear() { f.clear(), i.clear(); }
};

// Statistics of comparing rows: worst relative error and how many rows exceed a tolerance.
struct RowStats {
  double worst = 0;
  int rows_over = 0;
  int64_t worst_row = -1;
};

// Compares `got` rows against the expected tensor's rows; `rms` normalises by the whole
// expected tensor (the README's max|a−b| / rms(ref)).
inline RowStats compare_rows(const std::vector<std::vector<float>>& got, const std::vector<float>& ref, int64_t width,
                             double tol) {
  RowStats s;
  const double r = rms(ref.data(), ref.size());
  for (size_t row = 0; row < got.size(); ++row) {
    double m = 0;
    for (int64_t k = 0; k < width; ++k)
      m = std::max(m, std::fabs(double(got[row][size_t(k)]) - ref[row * size_t(width) + size_t(k)]));
    m /= r;
    if (m > s.worst) s.worst = m, s.worst_row = int64_t(row);
    if (m > tol) ++s.rows_over;
  }
  return s;
}

inline std::set<int32_t> valid_set(const int32_t* p, int64_t n) {
  std::set<int32_t> s;
  for (int64_t k = 0; k < n; ++k)
    if (p[k] >= 0) s.insert(p[k]);
  return s;
}

}  // namespace dsv4::test
