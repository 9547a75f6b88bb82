// Errors and invariant checks, the two ways dsv4 reports a problem.
//
// * `Error` is thrown wherever input from outside reaches the code: files, config.json,
//   safetensors headers, tokenizer files, CLI flags, HTTP payloads. Its message names what was
//   being done and with which file / tensor / field, so the user can act on it.
// * `DSV4_CHECK` guards internal invariants (always on, also in release builds): a failure is a
//   bug in dsv4, so it prints file:line and aborts instead of unwinding through kernels.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values into one string ("tensor ", name, " has ", n, " dims").
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

}  // namespace dsv4

#define DSV4_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) ::dsv4::detail::check_failed(__FILE__, __LINE__, #cond, ::dsv4::cat(__VA_ARGS__)); \
  } while (0)
