// The tensor inventory a config implies (spec §2): every tensor name, its dtype and shape.
// Loading checks a checkpoint against it before any compute; `dsv4 inspect` summarises it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace dsv4 {

// What a tensor is for, for the parameter/byte summary of `dsv4 inspect`.
enum class TensorKind { kEmbedHead, kAttention, kCompressor, kIndexer, kRoutedExpert, kSharedExpert,
                        kRouter, kHyperConnection, kNorm, kMtpProjection };
const char* tensor_kind_name(TensorKind k);

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  TensorKind kind;
  int64_t numel() const;
  int64_t nbytes() const;
};

std::vector<TensorSpec> expected_tensors(const ModelConfig& c);

// Throws Error on a missing, unexpected, wrongly typed or wrongly shaped tensor.
void check_inventory(const ModelConfig& c, const TensorDirectory& dir);

// Determines the routed-expert storage from the checkpoint when config.json has no
// expert_dtype (the HF Pro config lacks it; the experts are I8 there).
void detect_expert_format(ModelConfig* c, const TensorDirectory& dir);

}  // namespace dsv4
