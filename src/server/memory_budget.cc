#include "server/memory_budget.h"

#include <algorithm>
#include <filesystem>

#include "model/state.h"

namespace dsv4::server {

namespace fs = std::filesystem;

SequenceCost::SequenceCost(const ModelConfig& c, Numerics numerics, int64_t prefill_chunk) {
  double rings = 0;
  const double kv = kv_bytes_per_token(c, numerics, &rings);
  // The compressors' pending rows (kv + score, the block being filled and the previous one),
  // counted at their largest and twice for vector growth.
  double pending = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int r = c.compress_ratio(l);
    if (r == 0) continue;
    const double width = double((r == 4 ? 2 : 1) * c.head_dim);
    pending += 2 * 2 * double(r) * width * sizeof(float) * 2;
    if (r == 4) pending += 2 * 2 * double(r) * double(2 * c.index_head_dim) * sizeof(float) * 2;
  }
  const double mtp_ring = c.n_layers > 0 ? rings / c.n_layers : 0;  // the MTP block's own window
  const double outputs = double(c.vocab_size + prefill_chunk * c.hc_mult * c.dim) * sizeof(float);
  fixed_ = rings + mtp_ring + pending + outputs;
  per_token_ = 2 * kv + sizeof(int32_t);
}

size_t SequenceCost::bytes(int64_t tokens) const {
  return size_t(fixed_ + per_token_ * double(std::max<int64_t>(tokens, 0)));
}

size_t default_memory_budget(uint64_t available, uint64_t model_bytes) {
  const uint64_t left = available > model_bytes ? available - model_bytes : 0;
  return size_t(std::max(left / 4 * 3, available / 8));
}

uint64_t checkpoint_bytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") n += e.file_size(ec);
  return n;
}

}  // namespace dsv4::server
