// Optional recording of named intermediates per position, for golden tests and debugging.
// Names follow the golden files: "hidden.block{i}", "attn_out.block{i}", "indexer.block{i}.topk",
// "moe.mtp.experts", ... (without the ".prefill"/".decode" suffix: positions tell them apart).
// The model calls it only when a Trace is attached; the default is none.
#pragma once

#include <cstdint>
#include <string>

#include "core/error.h"

namespace dsv4 {

class Trace {
 public:
  virtual ~Trace() = default;
  virtual void f32(const std::string& name, int64_t pos, const float* data, int64_t n) = 0;
  virtual void i32(const std::string& name, int64_t pos, const int32_t* data, int64_t n) = 0;
};

}  // namespace dsv4
