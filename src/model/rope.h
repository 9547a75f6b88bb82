// Rotary position embedding of DeepSeek-V4 (spec §4.4.1).
//
// Each layer has one table: compress layers (ratio ≠ 0) use compress_rope_theta WITH YaRN
// frequency interpolation; window layers (ratio 0, also the MTP block) use rope_theta without.
// There is no YaRN magnitude scaling. Rotation is interleaved (pairs 2i, 2i+1) over the LAST
// rope_head_dim dims of a vector. Angles are F32 products f32(pos)·inv_freq, as in the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv4 {

struct RopeTable {
  std::vector<float> inv_freq;  // [rope_head_dim / 2]
  int64_t rope_head_dim = 0;

  // Rotates the last rope_head_dim elements of x[0:n] to position `pos` (inverse: −angle).
  void apply(float* x, int64_t n, int64_t pos, bool inverse = false) const;
  void cos_sin(int64_t pos, float* cos_out, float* sin_out) const;  // [rope_head_dim/2] each
};

// yarn = false: plain 1/base^(2i/d). yarn = true: interpolated with config's rope_scaling.
RopeTable make_rope_table(const ModelConfig& c, double base, bool yarn);
// The table of layer `layer_id` (main layers and MTP alike).
RopeTable layer_rope_table(const ModelConfig& c, int layer_id);

}  // namespace dsv4
