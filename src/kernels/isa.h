// Runtime instruction-set selection for the kernels.
//
// Every SIMD kernel exists for each compiled target and has a scalar twin (kernels/reference/).
// The target is chosen once, at first use: the best one the CPU supports, or the one named by
// the environment variable DSV4_ISA=scalar|avx2|avx512 (tests force each in turn; a target the CPU
// lacks falls back to the best one, with a note on stderr). set_isa() overrides it at run time (tests, benchmarks); it
// must not race with running kernels.
#pragma once

#include <string_view>

namespace dsv4::kernels {

enum class Isa { kScalar, kAvx2, kAvx512 };

// kAvx512 means AVX-512 F/BW/VL/VBMI + BF16 (Zen 4/5, Sapphire Rapids); kAvx2 means AVX2 + FMA + F16C.
bool isa_supported(Isa isa);
Isa active_isa();
void set_isa(Isa isa);  // throws Error if unsupported
std::string_view isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512"; throws Error otherwise.
Isa parse_isa(std::string_view name);

}  // namespace dsv4::kernels
