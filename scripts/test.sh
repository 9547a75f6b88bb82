#!/usr/bin/env bash
# Builds dsv4 twice — release (warnings are errors) and AddressSanitizer + UBSan — and runs
# the whole test suite in both. Golden tests read ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${DSV4_JOBS:-$(nproc)}"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_WERROR=ON -DDSV4_MPI=ON -DDSV4_TRAIN=ON >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build -j"$jobs" --output-on-failure --timeout 900

# -g1: line tables are all a sanitizer report uses (file:line in its stack), and compile
# ~30 % faster than -g's full debug information.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" -DDSV4_SANITIZE=ON -DDSV4_BUILD_BENCH=OFF -DDSV4_MPI=ON -DDSV4_TRAIN=ON >/dev/null
cmake --build build-asan -j"$jobs"
# Under the sanitizers: every unit and golden test; the slow end-to-end client suites and the
# per-ISA repeats already ran above.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -j"$jobs" --output-on-failure --timeout 1800 -L "unit|golden" -LE "e2e|isa"
