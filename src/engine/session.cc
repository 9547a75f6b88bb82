#include "engine/session.h"

#include "core/error.h"

namespace dsv4 {

Session::Session(const Model& model, SessionOptions options)
    : model_(model), options_(options), state_(model.new_sequence()), mtp_(model.new_mtp_state()) {
  max_context_ = options.max_context > 0 ? options.max_context : model.config().max_position_embeddings;
  if (options_.prefill_chunk <= 0) options_.prefill_chunk = 256;
}

void Session::check_room(int64_t n) const {
  if (position() + n > max_context_)
    throw Error(cat("context overflow: ", position(), " tokens + ", n, " new exceed the context limit of ",
                    max_context_, " tokens"));
}

void Session::reset() {
  tokens_.clear();
  state_ = model_.new_sequence();
  mtp_ = model_.new_mtp_state();
  out_ = {};
  unpaired_hidden_.clear();
}

void Session::keep_hidden() {
  if (options_.keep_mtp) unpaired_hidden_.insert(unpaired_hidden_.end(), out_.hidden.begin(), out_.hidden.end());
}

std::span<const float> Session::append(std::span<const int32_t> tokens, const PrefillProgressFn& progress) {
  check_room(int64_t(tokens.size()));
  const int64_t n = int64_t(tokens.size());
  for (int64_t s = 0; s < n; s += options_.prefill_chunk) {
    const int64_t len = std::min(options_.prefill_chunk, n - s);
    model_.forward(&state_, tokens.subspan(size_t(s), size_t(len)), LogitsMode::kLast, &out_);
    tokens_.insert(tokens_.end(), tokens.begin() + s, tokens.begin() + s + len);
    keep_hidden();
    if (progress) progress(s + len, n);
  }
  return last_logits();
}

const std::vector<float>& Session::verify(std::span<const int32_t> tokens) {
  check_room(int64_t(tokens.size()));
  checkpoint_ = checkpoint(state_, int64_t(tokens.size()));
  verify_tokens_.assign(tokens.begin(), tokens.end());
  model_.forward(&state_, tokens, LogitsMode::kAll, &out_);
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  keep_hidden();
  return out_.logits;
}

void Session::rollback_verify(int64_t keep) {
  DSV4_CHECK(keep >= 0 && keep <= int64_t(verify_tokens_.size()), "rollback_verify keep out of range");
  if (keep == int64_t(verify_tokens_.size())) return;
  const int64_t drop = int64_t(verify_tokens_.size()) - keep;
  const size_t stride = size_t(model_.config().hc_mult * model_.config().dim);
  if (options_.keep_mtp) unpaired_hidden_.resize(unpaired_hidden_.size() - size_t(drop) * stride);
  rollback(&state_, checkpoint_);
  tokens_.resize(tokens_.size() - verify_tokens_.size());
  std::vector<int32_t> kept(verify_tokens_.begin(), verify_tokens_.begin() + keep);
  verify_tokens_.clear();
  // Re-running the kept tokens rebuilds exactly the state single-token decode would have.
  if (!kept.empty()) {
    model_.forward(&state_, kept, LogitsMode::kLast, &out_);
    tokens_.insert(tokens_.end(), kept.begin(), kept.end());
  }
}

size_t Session::memory_bytes() const {
  auto cap = [](const auto& v) { return v.capacity() * sizeof(v[0]); };
  size_t n = state_.bytes() + mtp_.layer.bytes() + cap(tokens_) + cap(out_.hidden) + cap(out_.logits) +
             cap(mtp_out_.hidden) + cap(mtp_out_.logits) + cap(unpaired_hidden_) + cap(verify_tokens_);
  for (const SequenceCheckpoint::Layer& l : checkpoint_.layers) n += cap(l.ring_rows);
  return n;
}

void Session::release_outputs() {
  out_ = {};
  mtp_out_ = {};
}

std::span<const float> Session::last_logits() const {
  const int64_t V = model_.config().vocab_size;
  if (out_.logits.empty()) return {};
  return std::span<const float>(out_.logits).subspan(out_.logits.size() - size_t(V));
}

std::span<const float> Session::mtp_draft(int32_t next) {
  DSV4_CHECK(options_.keep_mtp, "mtp_draft needs SessionOptions::keep_mtp");
  const int64_t first = mtp_.pos, n = position() - first;
  DSV4_CHECK(n >= 1, "mtp_draft with no new position");
  // Row i pairs the streams at position first+i with the token at first+i+1.
  std::vector<int32_t> next_tokens(tokens_.begin() + first + 1, tokens_.end());
  next_tokens.push_back(next);
  model_.mtp_forward(&mtp_, unpaired_hidden_.data(), next_tokens, LogitsMode::kLast, &mtp_out_);
  unpaired_hidden_.clear();
  return mtp_out_.logits;
}

}  // namespace dsv4
