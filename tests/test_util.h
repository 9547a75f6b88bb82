// Helpers shared by the tests: locating ../shared, reading golden tensors, comparing numbers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "io/safetensors.h"

namespace dsv4::test {

// A fresh, empty directory under the system temp dir (tag and pid in its name: ctest runs each
// test in its own process), removed with everything in it at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() / ("dsv4-test-" + tag + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline std::string shared_dir() { return DSV4_SHARED_DIR; }
inline bool have_shared() { return std::filesystem::exists(shared_dir() + "/golden/README.md"); }

// Skips the current test (it is reported as skipped, never as passed) when ../shared is absent.
#define DSV4_REQUIRE_SHARED()                                                          \
  do {                                                                                 \
    if (!::dsv4::test::have_shared()) GTEST_SKIP() << "../shared not present";         \
  } while (0)

inline std::vector<float> f32s(const TensorView& t) {
  std::vector<float> v(size_t(t.numel()));
  if (t.dtype == DType::F32) std::memcpy(v.data(), t.data, t.nbytes);
  else if (t.dtype == DType::I32) {
    for (size_t i = 0; i < v.size(); ++i) { int32_t x; std::memcpy(&x, t.data + 4 * i, 4); v[i] = float(x); }
  }
  return v;
}
inline std::vector<int32_t> i32s(const TensorView& t) {
  std::vector<int32_t> v(size_t(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}
inline std::vector<uint8_t> u8s(const TensorView& t) { return std::vector<uint8_t>(t.data, t.data + t.nbytes); }

inline double rms(const float* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s / double(n ? n : 1));
}
// max|a−b| / rms(ref)
inline double rel_max_err(const float* got, const float* ref, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(got[i]) - ref[i]));
  return m / rms(ref, n);
}

}  // namespace dsv4::test
