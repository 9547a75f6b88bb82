// Helpers for the golden tests: locating ../shared/tokenizer, reading JSONL case files and
// loading the shared tokenizer once per test binary.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace dsv4::test {

inline std::filesystem::path shared_tokenizer_dir() {
#ifdef DSV4_SHARED_DIR
  return std::filesystem::path(DSV4_SHARED_DIR) / "tokenizer";
#else
  return {};
#endif
}

inline bool have_shared() { return std::filesystem::exists(shared_tokenizer_dir() / "tokenizer.json"); }

#define DSV4_REQUIRE_SHARED()                                                              \
  do {                                                                                     \
    if (!::dsv4::test::have_shared()) GTEST_SKIP() << "shared tokenizer data not found at " \
                                                   << ::dsv4::test::shared_tokenizer_dir(); \
  } while (0)

// Cases keep key order (chat messages re-serialize tool schemas in input order).
inline std::vector<nlohmann::ordered_json> read_jsonl(const std::string& name) {
  std::vector<nlohmann::ordered_json> out;
  std::ifstream f(shared_tokenizer_dir() / name);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::ordered_json::parse(line));
  return out;
}

inline const Tokenizer& shared_tokenizer() {
  static const Tokenizer tok = Tokenizer::load(shared_tokenizer_dir().string());
  return tok;
}

template <class J>
std::vector<int32_t> ids_of(const J& j) {
  return j.template get<std::vector<int32_t>>();
}

}  // namespace dsv4::test
