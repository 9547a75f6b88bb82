#include "model/compressor.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "kernels/hadamard.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace dsv4 {

namespace {

// Pools one complete block into entry j (F32), then applies the role's post-processing.
void emit_entry(const CompressArgs& args, CompressorState* st, int64_t j, KvRows* entries) {
  const CompressorWeights& w = *args.weights;
  const int64_t d = w.head_dim, width = st->width;
  const int r = w.ratio;
  Scratch<float> e(static_cast<size_t>(d));
  for (int64_t c = 0; c < d; ++c) {
    // Candidates: the previous block's low half (overlap, when it exists) and this block's
    // high half (overlap) or only channel (no overlap). Softmax over tokens, per channel.
    const int64_t cur_c = w.overlap ? d + c : c;
    float mx = -std::numeric_limits<float>::infinity();
    for (int t = 0; t < r; ++t) mx = std::max(mx, st->cur_score[size_t(t * width + cur_c)]);
    if (w.overlap && st->has_prev)
      for (int t = 0; t < r; ++t) mx = std::max(mx, st->prev_score[size_t(t * width + c)]);
    float den = 0, num = 0;
    for (int t = 0; t < r; ++t) {
      float p = std::exp(st->cur_score[size_t(t * width + cur_c)] - mx);
      den += p;
      num += p * st->cur_kv[size_t(t * width + cur_c)];
    }
    if (w.overlap && st->has_prev)
      for (int t = 0; t < r; ++t) {
        float p = std::exp(st->prev_score[size_t(t * width + c)] - mx);
        den += p;
        num += p * st->prev_kv[size_t(t * width + c)];
      }
    e[size_t(c)] = num / den;
  }
  const ModelConfig& cfg = *args.config;
  kernels::rms_norm(e.data(), w.norm.data(), d, cfg.norm_eps, e.data());
  args.rope->apply(e.data(), d, j * r);  // at the block's first position
  if (args.role == CompressorRole::kMainKv) {
    if (args.numerics == Numerics::kReference) kernels::fp8_simulate(e.data(), d - cfg.rope_head_dim, 64);
  } else {
    kernels::hadamard_inplace(e.data(), d);
    if (args.numerics == Numerics::kReference) kernels::fp4_simulate(e.data(), d, 32);
  }
  entries->push_back(e.data());
  if (w.overlap) {
    st->prev_kv.swap(st->cur_kv);
    st->prev_score.swap(st->cur_score);
    st->has_prev = true;
  }
  st->cur_kv.clear();
  st->cur_score.clear();
}

}  // namespace

CompressorProjections compressor_project(const CompressorWeights& w, const float* a, int64_t n, ThreadPool* pool) {
  // F32 with F32-upcast BF16 weights and no activation quantization, as the reference.
  CompressorProjections p;
  p.kv.resize(size_t(n * w.wkv.out));
  p.score.resize(size_t(n * w.wgate.out));
  kernels::linear(w.wkv, a, n, p.kv.data(), pool);
  kernels::linear(w.wgate, a, n, p.score.data(), pool);
  return p;
}

void compress(const CompressArgs& args, const CompressorProjections& proj, int64_t row0, int64_t n,
              int64_t start_pos, CompressorState* st, KvRows* entries) {
  const CompressorWeights& w = *args.weights;
  const int64_t width = st->width, r = w.ratio;
  DSV4_CHECK(width == w.wkv.out, "compressor state width ", width, " vs weight rows ", w.wkv.out);
  DSV4_CHECK(int64_t(st->cur_kv.size()) == (start_pos % r) * width, "compressor state out of step at pos ",
             start_pos);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = start_pos + i;
    const float* kv = proj.kv.data() + (row0 + i) * width;
    const float* score = proj.score.data() + (row0 + i) * width;
    const float* ape = w.ape.data() + (pos % r) * width;  // Z = Wgate·a + ape[pos mod r]
    st->cur_kv.insert(st->cur_kv.end(), kv, kv + width);
    for (int64_t c = 0; c < width; ++c) st->cur_score.push_back(score[c] + ape[c]);
    if ((pos + 1) % r == 0) emit_entry(args, st, pos / r, entries);
  }
}

}  // namespace dsv4
