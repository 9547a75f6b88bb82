#include "kernels/isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace dsv4::kernels {

namespace {
Isa best_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bf16"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

std::atomic<int>& current() {
  static std::atomic<int> isa([] {
    const char* e = std::getenv("DSV4_ISA");
    Isa want = e && *e ? parse_isa(e) : best_isa();
    if (!isa_supported(want)) {
      // CTest registers a variant per ISA; on a CPU without one, that variant runs the best ISA.
      std::fprintf(stderr, "dsv4: DSV4_ISA=%s is not supported by this CPU; using %s\n", e,
                   std::string(isa_name(best_isa())).c_str());
      want = best_isa();
    }
    return int(want);
  }());
  return isa;
}
}  // namespace

bool isa_supported(Isa isa) {
  static const Isa best = best_isa();
  if (isa == Isa::kScalar) return true;
#if defined(__x86_64__)
  if (isa == Isa::kAvx2) return best != Isa::kScalar;
  return best == Isa::kAvx512;
#else
  return false;
#endif
}

Isa active_isa() { return Isa(current().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  if (!isa_supported(isa)) throw Error(cat("ISA ", isa_name(isa), " is not supported by this CPU"));
  current().store(int(isa), std::memory_order_relaxed);
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

Isa parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  throw Error(cat("unknown ISA '", std::string(name), "' (scalar, avx2, avx512)"));
}

}  // namespace dsv4::kernels
