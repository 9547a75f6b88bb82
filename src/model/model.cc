#include "model/model.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/block.h"
#include "model/hyper_connection.h"
#include "model/trace.h"

namespace dsv4 {

std::unique_ptr<Model> Model::load(const std::string& dir, Numerics numerics) {
  std::unique_ptr<Model> m(new Model());
  m->config_ = load_config(dir);
  m->dir_ = TensorDirectory::open(dir);
  m->weights_ = bind_weights(&m->config_, *m->dir_);
  for (int l = 0; l < m->config_.n_layers + m->config_.n_mtp_layers; ++l)
    m->ropes_.push_back(layer_rope_table(m->config_, l));
  m->numerics_ = numerics;
  return m;
}

void Model::embed(std::span<const int32_t> tokens, float* x) const {
  const int64_t D = config_.dim, hc = config_.hc_mult;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
      throw Error(cat("token id ", tokens[i], " outside the vocabulary [0, ", config_.vocab_size, ")"));
    float* row = x + int64_t(i) * hc * D;
    kernels::dequant_row(weights_.embed, tokens[i], row);
    for (int64_t s = 1; s < hc; ++s) std::copy(row, row + D, row + s * D);
  }
}

void Model::block_forward(int layer, LayerState* state, int64_t start_pos, float* x, const int32_t* tokens,
                          int64_t n, Trace* trace) const {
  const std::string tag = cat("block", layer);
  BlockArgs a{&config_, &weights_.layers.at(size_t(layer)), &ropes_[size_t(layer)], numerics_, x, tokens, n,
              start_pos, trace, tag.c_str()};
  dsv4::block_forward(a, state);
}

void Model::forward(SequenceState* state, std::span<const int32_t> tokens, LogitsMode logits, ForwardOutput* out,
                    Trace* trace) const {
  const int64_t n = int64_t(tokens.size()), stride = config_.hc_mult * config_.dim;
  DSV4_CHECK(int64_t(state->layers.size()) == config_.n_layers, "sequence state has the wrong layer count");
  out->hidden.assign(size_t(n * stride), 0.0f);
  embed(tokens, out->hidden.data());
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace->f32("hidden.embed", state->pos + i, out->hidden.data() + i * stride, stride);
  for (int l = 0; l < config_.n_layers; ++l) {
    block_forward(l, &state->layers[size_t(l)], state->pos, out->hidden.data(), tokens.data(), n, trace);
    if (trace)
      for (int64_t i = 0; i < n; ++i)
        trace->f32(cat("hidden.block", l), state->pos + i, out->hidden.data() + i * stride, stride);
  }
  state->pos += n;
  logits_rows(weights_.hc_head, weights_.norm, out->hidden.data(), n, logits, &out->logits);
}

void Model::logits_rows(const HcHeadWeights& hc, const Vec& norm, const float* x, int64_t n, LogitsMode mode,
                        std::vector<float>* logits) const {
  const int64_t D = config_.dim, stride = config_.hc_mult * D, V = config_.vocab_size;
  const int64_t first = mode == LogitsMode::kAll ? 0 : n - 1;
  const int64_t rows = mode == LogitsMode::kNone || n == 0 ? 0 : n - first;
  logits->assign(size_t(rows * V), 0.0f);
  std::vector<float> z(static_cast<size_t>(D));
  for (int64_t r = 0; r < rows; ++r) {
    hc_head(config_, hc, x + (first + r) * stride, z.data());
    kernels::rms_norm(z.data(), norm.data(), D, config_.norm_eps, z.data());
    kernels::linear(weights_.head, z.data(), 1, logits->data() + r * V, nullptr);
  }
}

void Model::head_logits(const float* x, int64_t n, float* logits) const {
  std::vector<float> out;
  logits_rows(weights_.hc_head, weights_.norm, x, n, LogitsMode::kAll, &out);
  std::copy(out.begin(), out.end(), logits);
}

}  // namespace dsv4
