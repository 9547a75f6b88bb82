#include "model/model.h"

#include <algorithm>

#include "core/arena.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/block.h"
#include "model/expert_cache.h"
#include "model/moe.h"
#include "model/profile.h"
#include "model/stream_plan.h"
#include "model/hyper_connection.h"
#include "model/trace.h"

namespace dsv4 {

namespace {
// An expert rank (expert parallelism) keeps its share of the routed experts resident: the plan
// that stream_plan would make is for the whole checkpoint, and the cache knows no share.
StreamPlan partial_plan(size_t expert_cache_bytes, Residency residency) {
  if (expert_cache_bytes > 0)
    throw Error("an expert cache (--expert-cache-gb) cannot be combined with expert parallelism (--expert-parallel)");
  StreamPlan p;
  p.residency = residency;
  return p;
}

// The first of m rows that gets logits under `mode` (m: none).
int64_t first_logits_row(LogitsMode mode, int64_t m) {
  return mode == LogitsMode::kAll ? 0 : mode == LogitsMode::kLast ? std::max<int64_t>(m - 1, 0) : m;
}
}  // namespace

std::unique_ptr<Model> Model::load(const std::string& dir, Numerics numerics, ThreadPool* pool, Residency residency,
                                   size_t expert_cache_bytes, ExpertRange experts) {
  std::unique_ptr<Model> m(new Model());
  m->config_ = load_config(dir);
  m->experts_ = experts;
  const bool partial = experts.begin > 0 || experts.end < m->config_.n_routed_experts;
  StreamPlan plan = partial ? partial_plan(expert_cache_bytes, residency) : plan_residency(dir, residency, expert_cache_bytes);
  TensorDirectory::Keep keep;
  if (partial)
    keep = [experts](const std::string& name) {
      const int e = routed_expert_of(name);
      return e < 0 || experts.holds(e);
    };
  m->dir_ = TensorDirectory::open(dir, plan.residency, keep);
  plan = prepare_streaming(m->dir_.get(), plan);
  m->weights_ = bind_weights(&m->config_, *m->dir_, experts.begin, experts.end);
  m->pool_ = pool ? pool : ThreadPool::shared();
  if (plan.residency == Residency::kStream) m->cache_ = start_streaming(m->config_, m->weights_, *m->dir_, plan);
  tile_routed_experts(&m->weights_, *m->dir_, m->pool_);
  for (int l = 0; l < m->config_.n_layers + m->config_.n_mtp_layers; ++l)
    m->ropes_.push_back(layer_rope_table(m->config_, l));
  m->numerics_ = numerics;
  return m;
}

void Model::set_expert_executor(ExpertExecutor* e) {
  if (e && cache_)
    throw Error("expert parallelism cannot run with routed experts streamed from disk (an expert cache): the "
                "checkpoint does not fit in this process's memory, or --expert-cache-gb was given");
  executor_ = e;
}

// Every hash-routed layer's experts are known from the token ids: their reads start before the
// first block runs (as far as the cache has free slots).
void Model::prefetch_experts(std::span<const int32_t> tokens) const {
  if (!cache_) return;
  ArenaScope scope;  // the expert lists (a decode loop calls this outside any forward)
  for (int l = 0; l < config_.n_layers; ++l) {
    MoeArgs a;
    a.config = &config_, a.weights = &weights_.layers[size_t(l)].ffn, a.hash_routed = config_.is_hash_layer(l);
    a.tokens = tokens.data(), a.n = int64_t(tokens.size()), a.cache = cache_.get(), a.layer = l;
    moe_prefetch_hashed(a);
  }
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
  Segment seg{state, start_pos, 0, n};
  BlockArgs a{&config_, &weights_.layers.at(size_t(layer)), &ropes_[size_t(layer)], numerics_, x, tokens, n, &seg, 1,
              trace, tag.c_str(), pool_, cache_.get(), executor_};
  dsv4::block_forward(a);
}

void Model::forward(SequenceState* state, std::span<const int32_t> tokens, LogitsMode logits, ForwardOutput* out,
                    Trace* trace) const {
  BatchItem item{state, tokens, logits};
  forward_into(std::span<const BatchItem>(&item, 1), out, trace);
}

void Model::forward_batch(std::span<const BatchItem> items, std::vector<ForwardOutput>* outs, Trace* trace) const {
  outs->resize(items.size());
  forward_into(items, outs->data(), trace);
}

void Model::forward_into(std::span<const BatchItem> items, ForwardOutput* outs, Trace* trace) const {
  ArenaScope scope;  // the pass's temporaries; each block has its own inside
  PhaseTimer pass_timer(Phase::kOther);  // what no inner phase claims
  const int64_t stride = config_.hc_mult * config_.dim;
  Scratch<int32_t> tokens;
  Scratch<int64_t> row0;
  for (const BatchItem& it : items) {
    DSV4_CHECK(int64_t(it.state->layers.size()) == config_.n_layers, "sequence state has the wrong layer count");
    row0.push_back(int64_t(tokens.size()));
    tokens.insert(tokens.end(), it.tokens.begin(), it.tokens.end());
  }
  const int64_t n = int64_t(tokens.size());
  Scratch<float> x(size_t(n * stride));
  {
    PhaseTimer timer(Phase::kEmbed);
    embed(tokens, x.data());
  }
  auto trace_rows = [&](const std::string& name) {
    if (!trace) return;
    for (size_t k = 0; k < items.size(); ++k)
      for (size_t i = 0; i < items[k].tokens.size(); ++i)
        trace->f32(name, items[k].state->pos + int64_t(i), x.data() + (row0[k] + int64_t(i)) * stride, stride);
  };
  trace_rows("hidden.embed");
  prefetch_experts(tokens);
  Scratch<Segment> segs(items.size());
  for (int l = 0; l < config_.n_layers; ++l) {
    for (size_t k = 0; k < items.size(); ++k)
      segs[k] = Segment{&items[k].state->layers[size_t(l)], items[k].state->pos, row0[k], int64_t(items[k].tokens.size())};
    const std::string tag = cat("block", l);
    BlockArgs a{&config_, &weights_.layers[size_t(l)], &ropes_[size_t(l)], numerics_, x.data(), tokens.data(), n,
                segs.data(), int(segs.size()), trace, tag.c_str(), pool_, cache_.get(), executor_,
                l + 1 < config_.n_layers ? &weights_.layers[size_t(l) + 1] : nullptr};
    dsv4::block_forward(a);
    trace_rows(cat("hidden.block", l));
  }
  // The head is the largest single matrix: one pass over it for the rows of every sequence.
  const int64_t V = config_.vocab_size;
  Scratch<const float*> streams;
  Scratch<int64_t> first_row(items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    const int64_t m = int64_t(items[k].tokens.size());
    first_row[k] = int64_t(streams.size());
    for (int64_t i = first_logits_row(items[k].logits, m); i < m; ++i) streams.push_back(x.data() + (row0[k] + i) * stride);
  }
  const int64_t head_rows = int64_t(streams.size());
  Scratch<float> logits(size_t(head_rows * V));
  {
    PhaseTimer timer(Phase::kHead);
    const ExpertCache::HeadSpan span = cache_ ? cache_->begin_head() : ExpertCache::HeadSpan{};
    head(weights_.hc_head, weights_.norm, streams, logits.data());
    if (cache_) cache_->end_head(span);
  }
  for (size_t k = 0; k < items.size(); ++k) {
    const int64_t m = int64_t(items[k].tokens.size());
    ForwardOutput& o = outs[k];
    o.hidden.assign(x.begin() + row0[k] * stride, x.begin() + (row0[k] + m) * stride);
    items[k].state->pos += m;
    const int64_t end = k + 1 < items.size() ? first_row[k + 1] : head_rows;
    o.logits.assign(logits.begin() + first_row[k] * V, logits.begin() + end * V);
  }
}

void Model::head_input(const HcHeadWeights& hc, const Vec& norm, const float* x, float* z) const {
  hc_head(config_, hc, x, z);
  kernels::rms_norm(z, norm.data(), config_.dim, config_.norm_eps, z);
}

void Model::head(const HcHeadWeights& hc, const Vec& norm, std::span<const float* const> streams, float* logits) const {
  if (streams.empty()) return;
  const int64_t D = config_.dim, rows = int64_t(streams.size());
  ArenaScope scope;
  PhaseProfile::add_bytes(int64_t(hc.fn.size()) * 4);
  Scratch<float> z(size_t(rows * D));
  for (int64_t r = 0; r < rows; ++r) head_input(hc, norm, streams[size_t(r)], z.data() + r * D);
  kernels::linear(weights_.head, z.data(), rows, logits, pool_);
}

void Model::logits_rows(const HcHeadWeights& hc, const Vec& norm, const float* x, int64_t n, LogitsMode mode,
                        std::vector<float>* logits) const {
  const int64_t stride = config_.hc_mult * config_.dim;
  ArenaScope scope;
  Scratch<const float*> streams;
  for (int64_t i = first_logits_row(mode, n); i < n; ++i) streams.push_back(x + i * stride);
  logits->assign(streams.size() * size_t(config_.vocab_size), 0.0f);
  head(hc, norm, streams, logits->data());
}

void Model::head_logits(const float* x, int64_t n, float* logits) const {
  std::vector<float> out;
  logits_rows(weights_.hc_head, weights_.norm, x, n, LogitsMode::kAll, &out);
  std::copy(out.begin(), out.end(), logits);
}

}  // namespace dsv4
