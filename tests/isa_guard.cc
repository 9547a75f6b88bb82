// isa_guard ISA PROGRAM [ARGS...]: runs PROGRAM with the kernels forced to ISA (DSV4_ISA), or
// exits 77 — the tests' SKIP_RETURN_CODE — when this CPU lacks that ISA, so that ctest reports
// the per-ISA variant as skipped instead of passing it on another ISA.
// DSV4_TEST_CPU_LACKS=ISA makes it treat ISA as missing (to test the guard on any CPU).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "kernels/isa.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: isa_guard ISA PROGRAM [ARGS...]\n");
    return 2;
  }
  try {
    const dsv4::kernels::Isa isa = dsv4::kernels::parse_isa(argv[1]);
    const char* lacks = std::getenv("DSV4_TEST_CPU_LACKS");
    if (!dsv4::kernels::isa_supported(isa) || (lacks && std::string(lacks) == argv[1])) {
      std::printf("SKIPPED: this CPU has no %s\n", argv[1]);
      return 77;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "isa_guard: %s\n", e.what());
    return 2;
  }
  setenv("DSV4_ISA", argv[1], 1);
  execv(argv[2], argv + 2);
  std::perror(argv[2]);
  return 127;
}
