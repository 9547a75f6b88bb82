// Option validators whose messages read well on one line: "--reps: must be an integer >= 1
// (got '0')" rather than CLI11's "Value 0 not in range 0.000000 to 1797…".
#pragma once

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace dsv4::cli {

// An integer (decimal, no trailing characters) of at least `lo`.
inline CLI::Validator integer_at_least(long long lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno == ERANGE || v < lo)
          return "must be an integer >= " + std::to_string(lo) + " (got '" + s + "')";
        return {};
      },
      ">=" + std::to_string(lo));
}

// An integer (decimal, no trailing characters) in [lo, hi].
inline CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
          return "must be an integer in " + range + " (got '" + s + "')";
        return {};
      },
      range);
}

inline std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A number in [lo, hi].
inline CLI::Validator number_in(double lo, double hi) {
  const std::string range = "[" + number_text(lo) + ", " + number_text(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0' || !(v >= lo && v <= hi))
          return "must be a number in " + range + " (got '" + s + "')";
        return {};
      },
      range);
}

}  // namespace dsv4::cli
