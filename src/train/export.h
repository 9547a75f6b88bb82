// Writing trained weights as an official-layout checkpoint (spec §2, golden README §2): FP8 E4M3
// matrices with 128×128 UE8M0 block scales, FP4 E2M1 routed experts (pairs in I8, 1×32 scales),
// BF16 embeddings / norms / compressor / router weights, F32 hyper-connections, sinks, ape and
// biases, I64 tid2eid; config.json and model.safetensors.index.json beside one shard. `dsv4
// run` loads the directory unchanged. No torch types: values arrive as F32 rows.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"

namespace dsv4::train {

struct ExportTensors {
  std::map<std::string, std::vector<float>> values;  // logical (dequantized) tensors by checkpoint name
  std::map<std::string, std::vector<int64_t>> ids;   // tid2eid tables
};

// Quantizes each tensor to its checkpoint dtype (expected_tensors(c)) and writes the directory.
// Throws Error on a missing or wrongly sized tensor or an I/O failure.
void write_checkpoint(const ModelConfig& c, const ExportTensors& t, const std::string& dir);

}  // namespace dsv4::train
